# cython: boundscheck=False, wraparound=False, cdivision=True
"""Build facts of the compiled extension (OpenMP or not, SIMD level)."""

include "_threads.pxi"

cdef extern from *:
    """
    #ifdef _OPENMP
    #include <omp.h>
    #define FASTNN_HAS_OPENMP 1
    static int fastnn_omp_max_threads(void) { return omp_get_max_threads(); }
    #else
    #define FASTNN_HAS_OPENMP 0
    static int fastnn_omp_max_threads(void) { return 1; }
    #endif
    #if defined(__AVX512F__)
    #define FASTNN_SIMD "avx512"
    #elif defined(__AVX2__)
    #define FASTNN_SIMD "avx2"
    #elif defined(__SSE2__)
    #define FASTNN_SIMD "sse2"
    #else
    #define FASTNN_SIMD "generic"
    #endif
    """
    int FASTNN_HAS_OPENMP
    const char* FASTNN_SIMD
    int fastnn_omp_max_threads()


def has_openmp():
    """True when the extension was compiled with OpenMP."""
    return bool(FASTNN_HAS_OPENMP)


def compiled_simd():
    """The SIMD level the compiler was allowed to assume at build time."""
    return FASTNN_SIMD.decode()


def omp_max_threads():
    """OpenMP's default team size (1 without OpenMP)."""
    return fastnn_omp_max_threads()
