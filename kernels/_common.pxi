# What every family of the glue shares: imports, the thread count, dtype
# helpers, the one BLAS wrapper and the one matrix-product router.

cimport numpy as cnp
from cython.parallel cimport parallel, prange, threadid
from libc.math cimport sqrt
from libc.stdlib cimport calloc, free, malloc
from libc.string cimport memcpy, memset
from scipy.linalg.cython_blas cimport dgemm, sgemm

from fnn cimport *

import numpy as np

cdef extern from *:
    """
    #include <time.h>
    #ifdef _OPENMP
    #include <omp.h>
    #define FNN_HAS_OPENMP 1
    static int fnn_omp_max_threads(void) { return omp_get_max_threads(); }
    #else
    #define FNN_HAS_OPENMP 0
    static int fnn_omp_max_threads(void) { return 1; }
    #endif
    static double fnn_clock(void) {
        struct timespec ts; clock_gettime(CLOCK_MONOTONIC, &ts);
        return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
    }
    """
    int FNN_HAS_OPENMP
    int fnn_omp_max_threads() nogil
    double fnn_clock() nogil   # seconds, monotonic

cnp.import_array()
fnn_init()

# ---- threads: set for the whole module by fastnn.set_num_threads ----

# The loops read _num_threads: the count set by fastnn.set_num_threads, lowered to
# _thread_cap while other programs keep the cores busy (fastnn._contention). It is
# one int, written whole, and every loop either reads it once into a local that sizes
# its scratch or hands its blocks out dynamically, so a change between two reads in
# one call only changes how many threads share the blocks.
cdef int _num_threads = 1
cdef int _configured_threads = 1
cdef int _thread_cap = 0  # 0: no cap

# fastnn._config.MAX_THREADS_REQUEST: set_num_threads caps far below it; this
# stops a direct caller, since an OpenMP region of that many threads aborts.
cdef int _MAX_THREADS = 32768


cdef void _update_team() noexcept:
    global _num_threads
    _num_threads = _thread_cap if 0 < _thread_cap < _configured_threads else _configured_threads


def _set_num_threads(int n):
    """Set the number of OpenMP threads of the parallel loops."""
    global _configured_threads
    if n < 1 or n > _MAX_THREADS:
        raise ValueError(f"number of threads must be between 1 and {_MAX_THREADS}, got {n}")
    _configured_threads = n
    _update_team()


def _get_num_threads():
    """The number of OpenMP threads of the parallel loops, as set (before any cap)."""
    return _configured_threads


def _set_thread_cap(int n):
    """Run the loops on at most n threads while the cores are shared (0: no cap)."""
    global _thread_cap
    if n < 0 or n > _MAX_THREADS:
        raise ValueError(f"thread cap must be between 0 and {_MAX_THREADS}, got {n}")
    _thread_cap = n
    _update_team()


def _get_team_threads():
    """The threads the parallel loops use now: the count set, lowered to the cap."""
    return _num_threads


cdef inline bint _parallel(fnn_idx n, bint cheap) noexcept nogil:
    """Whether a loop over n elements runs on the team (cheap: a memory-bound loop)."""
    return _num_threads > 1 and n >= (fnn_tune.parallel_min_elements_cheap if cheap
                                      else fnn_tune.parallel_min_elements)


cdef inline int _threads_for(double work) noexcept nogil:
    """Threads for a convolution or pooling loop of `work` element operations."""
    return _num_threads if work >= fnn_tune.conv_parallel_min_work else 1


# ---- arrays ----

cdef inline bint _f32(object a):
    return cnp.PyArray_TYPE(<cnp.ndarray>a) == cnp.NPY_FLOAT32


cdef inline void *_data(object a):
    """Data pointer of a validated ndarray, NULL for None."""
    return NULL if a is None else cnp.PyArray_DATA(<cnp.ndarray>a)


cdef int _fill(void **p, tuple arrays) except -1:
    """p[i] = the data pointer of arrays[i] (NULL for None): the pointer table of a def wrapper."""
    cdef Py_ssize_t i
    for i in range(len(arrays)):
        p[i] = _data(arrays[i])
    return 0


# ---- BLAS (scipy.linalg.cython_blas: the BLAS scipy ships; threadpoolctl limits it) ----

cdef void blas_gemm(bint trans_a, bint trans_b, fnn_idx m, fnn_idx n, fnn_idx k, real alpha, const real *a,
                    fnn_idx lda, const real *b, fnn_idx ldb, real beta, real *c, fnn_idx ldc) noexcept nogil:
    """Row-major C (m, n) = alpha op(A) op(B) + beta C; lda, ldb, ldc: row strides as stored.

    BLAS is column-major: a row-major matrix is its transpose seen
    column-major, so this computes Cᵀ = op(B)ᵀ op(A)ᵀ, the operands swapped
    and the flags kept. Every size fits BLAS's int: fastnn.ops bounds the
    dimensions by 2^31 - 1. Never call it inside a parallel region (BLAS
    runs its own threads).
    """
    cdef char ta = b'T' if trans_a else b'N'
    cdef char tb = b'T' if trans_b else b'N'
    cdef int im = <int>m, in_ = <int>n, ik = <int>k, ia = <int>lda, ib = <int>ldb, ic = <int>ldc
    cdef fnn_idx i, j
    if m <= 0 or n <= 0:
        return
    if k <= 0:  # an empty inner dimension: op(A) op(B) is zero (and BLAS rejects ld = 0)
        for i in range(m):
            for j in range(n):
                c[i * ldc + j] = 0 if beta == 0 else beta * c[i * ldc + j]
        return
    if real is float:
        sgemm(&tb, &ta, &in_, &im, &ik, &alpha, <float*>b, &ib, <float*>a, &ia, &beta, c, &ic)
    else:
        dgemm(&tb, &ta, &in_, &im, &ik, &alpha, <double*>b, &ib, <double*>a, &ia, &beta, c, &ic)


# ---- every matrix product of the compiled backend goes through here ----

cdef inline int gemm_run(fnn_idx m, fnn_idx n, fnn_idx k, const real *a, fnn_idx rsa, fnn_idx csa, const real *b,
                         fnn_idx rsb, fnn_idx csb, real *c, fnn_idx ldc, const real *bias, int act,
                         bint accumulate) noexcept nogil:
    """C = act(op(A) op(B) + bias), or C += op(A) op(B), on the route fnn_gemm_route picks.

    op(A)(i, p) = a[i*rsa + p*csa], op(B)(p, j) = b[p*rsb + j*csb]. The
    small kernel and the packed GEMM take any strides; BLAS needs a unit
    stride per operand (it gets the own GEMM otherwise). Returns -1 when out
    of memory. The own kernels use the module's thread count.
    """
    return gemm_run_on(m, n, k, a, rsa, csa, b, rsb, csb, c, ldc, bias, act, accumulate, _num_threads)


cdef int gemm_run_on(fnn_idx m, fnn_idx n, fnn_idx k, const real *a, fnn_idx rsa, fnn_idx csa, const real *b,
                     fnn_idx rsb, fnn_idx csb, real *c, fnn_idx ldc, const real *bias, int act,
                     bint accumulate, int nthreads) noexcept nogil:
    """gemm_run with the own kernels on a team of nthreads (1: serial, for a caller that
    already runs on one thread of a team; BLAS keeps its own threads)."""
    cdef int route, rc
    cdef fnn_idx i
    if m <= 0 or n <= 0:
        return 0
    route = fnn_gemm_route(m, n, k, real is double)
    if route == FNN_ROUTE_BLAS and not ((rsa == 1 or csa == 1) and (rsb == 1 or csb == 1)):
        route = FNN_ROUTE_PACKED
    if route == FNN_ROUTE_PACKED and accumulate:
        route = FNN_ROUTE_SMALL   # the packed GEMM overwrites C
    fnn_route_taken(route)
    if route == FNN_ROUTE_SMALL:
        return gemm_small_team(m, n, k, a, rsa, csa, b, rsb, csb, c, ldc, accumulate, bias, act, nthreads)
    if route == FNN_ROUTE_PACKED:
        rc = gemm_packed(m, n, k, a, rsa, csa, b, rsb, csb, c, ldc, bias, act, nthreads)
        if rc == 0:
            return 0
        # out of memory for the packing buffers: BLAS needs none
    blas_gemm[real](csa != 1, csb != 1, m, n, k, <real>1, a, rsa if csa == 1 else csa, b,
                    rsb if csb == 1 else csb, <real>(1 if accumulate else 0), c, ldc)
    if not accumulate and (bias != NULL or act != FNN_ACT_IDENTITY):
        for i in range(m):
            act_fwd(act, c + i * ldc, bias, c + i * ldc, n, 0.0)
    return 0
