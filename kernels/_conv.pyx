# cython: boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False, nonecheck=False
"""Convolution and pooling kernels (NCHW, float32/float64) for the Cython backend.

float32 stride-1 convolution (every 3×3 "same" layer) runs the direct
kernels of ``conv_kernels.h``: each image is zero-padded once into a flat
buffer, and a register-blocked micro-kernel (8 output channels × 48 pixels in
vector accumulators, AVX-512/AVX2 picked at load time) treats every kernel tap
as a shift of that buffer, so no im2col matrix is built; an OpenMP loop runs
the images in parallel (no BLAS inside it). The weight and input gradients use
the same layout.

Every other case (float64, strides > 1) cuts the batch into chunks whose
im2col matrix stays in cache (``COLS_BUDGET`` elements); per chunk an OpenMP
loop over (image, channel) builds the columns, one BLAS GEMM runs from the
serial level (OpenBLAS is threaded itself, so it is never called inside a
parallel region) and an OpenMP loop scatters the result to NCHW.

Pooling is a direct loop, parallel over (image, channel) planes when the work
is large enough; 2×2/stride-2 max pooling has its own branch-free loop.

Sizes and offsets are Py_ssize_t throughout: a batch's output may hold more
than 2^31 elements. The sizes handed to BLAS (O, C·kH·kW, Ho·Wo and the
leading dimensions, at most max(COLS_BUDGET, Ho·Wo)) fit a C int because
fastnn.ops.conv refuses larger ones. Inputs are const memoryviews, so
read-only arrays (np.load(..., mmap_mode="r")) are accepted.
"""

include "_threads.pxi"

import numpy as np

from cython.parallel cimport prange
from libc.string cimport memset, memcpy
from scipy.linalg.cython_blas cimport dgemm, sgemm

ctypedef fused floating:
    float
    double

cdef enum:
    COLS_BUDGET = 1 << 20   # largest im2col chunk, in elements (4 MB of float32): stays in cache


# Below this many elements of work, loops run on one thread (fastnn._config).
from fastnn._config import PARALLEL_MIN_ELEMENTS as _PARALLEL_MIN_ELEMENTS
cdef Py_ssize_t PARALLEL_MIN = _PARALLEL_MIN_ELEMENTS


cdef inline int _threads(Py_ssize_t work) noexcept nogil:
    return _fastnn_num_threads if work >= PARALLEL_MIN else 1


cdef inline int _threads_d(double work) noexcept nogil:
    """_threads for a multiply-add count that may exceed 2^63 (a product of four sizes)."""
    return _fastnn_num_threads if work >= PARALLEL_MIN else 1


cdef inline void _gemm(bint trans_a, bint trans_b, Py_ssize_t m, Py_ssize_t n, Py_ssize_t k, floating alpha,
                       const floating* a, Py_ssize_t lda, const floating* b, Py_ssize_t ldb, floating beta,
                       floating* c, Py_ssize_t ldc) noexcept nogil:
    """Row-major C(m, n) = alpha·op(A)·op(B) + beta·C through column-major BLAS (Cᵀ = op(B)ᵀ·op(A)ᵀ).

    Every size fits BLAS's int: ops.conv bounds O, C·kH·kW and Ho·Wo by
    2^31 - 1, and a leading dimension is one of them or a chunk of at most
    COLS_BUDGET columns.
    """
    cdef char ta = b'T' if trans_a else b'N'
    cdef char tb = b'T' if trans_b else b'N'
    cdef int im = <int>m, in_ = <int>n, ik = <int>k, ilda = <int>lda, ildb = <int>ldb, ildc = <int>ldc
    if floating is float:
        sgemm(&tb, &ta, &in_, &im, &ik, &alpha, <float*>b, &ildb, <float*>a, &ilda, &beta, c, &ildc)
    else:
        dgemm(&tb, &ta, &in_, &im, &ik, &alpha, <double*>b, &ildb, <double*>a, &ilda, &beta, c, &ildc)


cdef inline void _valid_range(Py_ssize_t n_out, Py_ssize_t n_in, Py_ssize_t s, Py_ssize_t offset,
                              Py_ssize_t* lo, Py_ssize_t* hi) noexcept nogil:
    """Outputs j with 0 <= j·s + offset < n_in, as [lo, hi)."""
    lo[0] = (-offset + s - 1) // s if offset < 0 else 0
    hi[0] = (n_in - offset - 1) // s + 1 if n_in - offset > 0 else 0
    if hi[0] > n_out:
        hi[0] = n_out
    if lo[0] > hi[0]:
        lo[0] = hi[0]


cdef void _im2col_plane(const floating* src, Py_ssize_t H, Py_ssize_t W, Py_ssize_t kh, Py_ssize_t kw,
                        Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t ph, Py_ssize_t pw, Py_ssize_t dh, Py_ssize_t dw,
                        Py_ssize_t ho, Py_ssize_t wo, floating* dst, Py_ssize_t ld) noexcept nogil:
    """kH·kW rows (stride ld) of the columns of one input plane."""
    cdef Py_ssize_t u, v, i, j, ilo, ihi, jlo, jhi, off
    cdef floating* row
    cdef const floating* s
    for u in range(kh):
        _valid_range(ho, H, sh, u * dh - ph, &ilo, &ihi)
        for v in range(kw):
            _valid_range(wo, W, sw, v * dw - pw, &jlo, &jhi)
            off = v * dw - pw
            row = dst + (u * kw + v) * ld
            for i in range(ho):
                if i < ilo or i >= ihi:
                    memset(row + i * wo, 0, wo * sizeof(floating))
                    continue
                s = src + (i * sh + u * dh - ph) * W + off
                for j in range(jlo):
                    row[i * wo + j] = 0
                if sw == 1:
                    memcpy(row + i * wo + jlo, s + jlo, (jhi - jlo) * sizeof(floating))
                else:
                    for j in range(jlo, jhi):
                        row[i * wo + j] = s[j * sw]
                for j in range(jhi, wo):
                    row[i * wo + j] = 0


cdef void _col2im_plane(const floating* src, Py_ssize_t ld, Py_ssize_t H, Py_ssize_t W, Py_ssize_t kh,
                        Py_ssize_t kw, Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t ph, Py_ssize_t pw, Py_ssize_t dh,
                        Py_ssize_t dw, Py_ssize_t ho, Py_ssize_t wo, floating* dst) noexcept nogil:
    """dst (one H×W plane) = Σ over taps of the kH·kW column rows (stride ld) copied from it."""
    cdef Py_ssize_t u, v, i, j, ilo, ihi, jlo, jhi, off
    cdef const floating* row
    cdef floating* d
    memset(dst, 0, H * W * sizeof(floating))
    for u in range(kh):
        _valid_range(ho, H, sh, u * dh - ph, &ilo, &ihi)
        for v in range(kw):
            _valid_range(wo, W, sw, v * dw - pw, &jlo, &jhi)
            off = v * dw - pw
            row = src + (u * kw + v) * ld
            for i in range(ilo, ihi):
                d = dst + (i * sh + u * dh - ph) * W + off
                if sw == 1:
                    for j in range(jlo, jhi):
                        d[j] += row[i * wo + j]
                else:
                    for j in range(jlo, jhi):
                        d[j * sw] += row[i * wo + j]


cdef void _scatter_ld(const floating* y, Py_ssize_t ld, const floating* bias, Py_ssize_t nb, Py_ssize_t O,
                      Py_ssize_t P, floating* out) noexcept nogil:
    """out[b, o, p] = y[o·ld + b·P + p] + bias[o]."""
    cdef Py_ssize_t r, p, b, o
    cdef floating bo
    cdef const floating* s
    cdef floating* d
    for r in prange(nb * O, nogil=True, schedule="static", num_threads=_threads(nb * O * P)):
        b = r // O
        o = r % O
        bo = bias[o] if bias != NULL else 0
        s = y + o * ld + b * P
        d = out + r * P
        for p in range(P):
            d[p] = s[p] + bo


cdef void _gather_ld(const floating* g, Py_ssize_t nb, Py_ssize_t O, Py_ssize_t P, floating* dst,
                     Py_ssize_t ld) noexcept nogil:
    """dst[o·ld + b·P + p] = g[b, o, p]."""
    cdef Py_ssize_t r, b, o
    for r in prange(nb * O, nogil=True, schedule="static", num_threads=_threads(nb * O * P)):
        b = r // O
        o = r % O
        memcpy(dst + o * ld + b * P, g + r * P, P * sizeof(floating))


cdef void _im2col_ld(const floating* x, Py_ssize_t nb, Py_ssize_t C, Py_ssize_t H, Py_ssize_t W, Py_ssize_t kh,
                     Py_ssize_t kw, Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t ph, Py_ssize_t pw, Py_ssize_t dh,
                     Py_ssize_t dw, Py_ssize_t ho, Py_ssize_t wo, floating* cols, Py_ssize_t ld) noexcept nogil:
    cdef Py_ssize_t P = ho * wo, r, b, c, kk = kh * kw
    for r in prange(nb * C, nogil=True, schedule="static", num_threads=_threads(nb * P * C * kk)):
        b = r // C
        c = r % C
        _im2col_plane(x + r * H * W, H, W, kh, kw, sh, sw, ph, pw, dh, dw, ho, wo,
                      cols + c * kk * ld + b * P, ld)


cdef void _col2im_ld(const floating* dcols, Py_ssize_t ld, Py_ssize_t nb, Py_ssize_t C, Py_ssize_t H,
                     Py_ssize_t W, Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t ph,
                     Py_ssize_t pw, Py_ssize_t dh, Py_ssize_t dw, Py_ssize_t ho, Py_ssize_t wo,
                     floating* gx) noexcept nogil:
    cdef Py_ssize_t P = ho * wo, r, b, c, kk = kh * kw
    for r in prange(nb * C, nogil=True, schedule="static", num_threads=_threads(nb * P * C * kk)):
        b = r // C
        c = r % C
        _col2im_plane(dcols + c * kk * ld + b * P, ld, H, W, kh, kw, sh, sw, ph, pw, dh, dw, ho, wo,
                      gx + r * H * W)


cdef inline Py_ssize_t _chunk(Py_ssize_t B, Py_ssize_t K, Py_ssize_t P) noexcept nogil:
    """Images per chunk: as many as keep the columns within COLS_BUDGET (at least one)."""
    cdef Py_ssize_t nb = COLS_BUDGET // (K * P if K * P > 0 else 1)
    if nb < 1:
        nb = 1
    if nb > B:
        nb = B
    return nb


def _shape2(m, n, needed):
    """(m, n), or a (1, 1) placeholder for a buffer that is not needed."""
    return (m, n) if needed else (1, 1)


def conv2d_fwd(const floating[:, :, :, ::1] x, const floating[:, :, :, ::1] weight, const floating[::1] bias,
               bint has_bias, Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t ph, Py_ssize_t pw, Py_ssize_t dh, Py_ssize_t dw,
               floating[:, :, :, ::1] out):
    """y[b,o,i,j] = bias[o] + Σ_{c,u,v} w[o,c,u,v]·xp[b,c,i·sH+u·dH,j·sW+v·dW] (chunked im2col + GEMM)."""
    cdef Py_ssize_t B = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef Py_ssize_t O = weight.shape[0], kh = weight.shape[2], kw = weight.shape[3]
    cdef Py_ssize_t ho = out.shape[2], wo = out.shape[3]
    cdef Py_ssize_t K = C * kh * kw, P = ho * wo
    cdef Py_ssize_t nb = _chunk(B, K, P), b0, n, o, p
    cdef Py_ssize_t ld = nb * P
    dt = np.float32 if floating is float else np.float64
    cdef floating[:, ::1] cols = np.empty((K, ld), dtype=dt)
    cdef floating[:, ::1] y = np.empty(_shape2(O, ld, nb > 1), dtype=dt)
    cdef const floating* xp = &x[0, 0, 0, 0]
    cdef const floating* wp = &weight[0, 0, 0, 0]
    cdef const floating* bp = &bias[0] if has_bias else NULL
    cdef floating* op = &out[0, 0, 0, 0]
    cdef floating* cp = &cols[0, 0]
    cdef floating* yp = &y[0, 0]
    cdef floating* d
    if B == 0:
        return
    with nogil:
        b0 = 0
        while b0 < B:
            n = nb if B - b0 > nb else B - b0
            _im2col_ld(xp + b0 * C * H * W, n, C, H, W, kh, kw, sh, sw, ph, pw, dh, dw, ho, wo, cp, ld)
            if nb == 1:  # one image: the GEMM writes straight into the output
                d = op + b0 * O * P
                _gemm(False, False, O, P, K, <floating>1, wp, K, cp, P, <floating>0, d, P)
                if bp != NULL:
                    for o in range(O):
                        for p in range(P):
                            d[o * P + p] += bp[o]
            else:
                _gemm(False, False, O, n * P, K, <floating>1, wp, K, cp, ld, <floating>0, yp, ld)
                _scatter_ld(yp, ld, bp, n, O, P, op + b0 * O * P)
            b0 += n


def conv2d_bwd(const floating[:, :, :, ::1] grad_out, const floating[:, :, :, ::1] x,
               const floating[:, :, :, ::1] weight, Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t ph, Py_ssize_t pw,
               Py_ssize_t dh, Py_ssize_t dw, floating[:, :, :, ::1] grad_input, bint want_input,
               floating[:, :, :, ::1] grad_weight, floating[::1] grad_bias, bint want_bias):
    """dW = Σ_b G_b·cols_bᵀ, db = Σ G, dx = col2im(Wᵀ·G_b) (chunked; GEMMs outside parallel loops)."""
    cdef Py_ssize_t B = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef Py_ssize_t O = weight.shape[0], kh = weight.shape[2], kw = weight.shape[3]
    cdef Py_ssize_t ho = grad_out.shape[2], wo = grad_out.shape[3]
    cdef Py_ssize_t K = C * kh * kw, P = ho * wo
    cdef Py_ssize_t nb = _chunk(B, K, P), b0, n, o, b, p
    cdef Py_ssize_t ld = nb * P
    cdef double acc
    dt = np.float32 if floating is float else np.float64
    cdef floating[:, ::1] cols = np.empty((K, ld), dtype=dt)
    cdef floating[:, ::1] g = np.empty(_shape2(O, ld, nb > 1), dtype=dt)
    cdef floating[:, ::1] dcols = np.empty(_shape2(K, ld, want_input), dtype=dt)
    cdef const floating* gop = &grad_out[0, 0, 0, 0]
    cdef const floating* xp = &x[0, 0, 0, 0]
    cdef const floating* wp = &weight[0, 0, 0, 0]
    cdef floating* gxp = &grad_input[0, 0, 0, 0]
    cdef floating* gwp = &grad_weight[0, 0, 0, 0]
    cdef floating* gbp = &grad_bias[0]
    cdef floating* cp = &cols[0, 0]
    cdef floating* dcp = &dcols[0, 0]
    cdef const floating* gp
    if B == 0:   # no images (layers call this directly, ops would not): sums over nothing
        grad_weight[...] = 0
        if want_bias:
            grad_bias[...] = 0
        return
    with nogil:
        b0 = 0
        while b0 < B:
            n = nb if B - b0 > nb else B - b0
            _im2col_ld(xp + b0 * C * H * W, n, C, H, W, kh, kw, sh, sw, ph, pw, dh, dw, ho, wo, cp, ld)
            if nb == 1:
                gp = gop + b0 * O * P
            else:
                _gather_ld(gop + b0 * O * P, n, O, P, &g[0, 0], ld)
                gp = &g[0, 0]
            # dW (O, K) (+)= G (O, nP) · colsᵀ (nP, K)
            _gemm(False, True, O, K, n * P, <floating>1, gp, ld, cp, ld,
                  <floating>(0 if b0 == 0 else 1), gwp, K)
            if want_input:
                # dcols (K, nP) = Wᵀ (K, O) · G (O, nP)
                _gemm(True, False, K, n * P, O, <floating>1, wp, K, gp, ld, <floating>0, dcp, ld)
                _col2im_ld(dcp, ld, n, C, H, W, kh, kw, sh, sw, ph, pw, dh, dw, ho, wo, gxp + b0 * C * H * W)
            b0 += n
        if want_bias:
            for o in range(O):
                acc = 0
                for b in range(B):
                    gp = gop + (b * O + o) * P
                    for p in range(P):
                        acc = acc + gp[p]
                gbp[o] = <floating>acc


# ---------------------------------------------------------------- pooling

cdef extern from "conv_kernels.h" nogil:
    void fastnn_maxpool2x2_f32(const float* src, Py_ssize_t W, Py_ssize_t ho, Py_ssize_t wo, float* dst,
                               long long* idx)
    void fastnn_maxpool2x2_f64(const double* src, Py_ssize_t W, Py_ssize_t ho, Py_ssize_t wo, double* dst,
                               long long* idx)


cdef void _max_pool_2x2(const floating* xp, Py_ssize_t planes, Py_ssize_t H, Py_ssize_t W, Py_ssize_t ho,
                        Py_ssize_t wo, floating* op, long long* ip) noexcept nogil:
    """The common 2×2, stride 2, unpadded case: no window clipping, independent outputs."""
    cdef Py_ssize_t r
    for r in prange(planes, nogil=True, schedule="static", num_threads=_threads(planes * H * W)):
        if floating is float:
            fastnn_maxpool2x2_f32(xp + r * H * W, W, ho, wo, op + r * ho * wo, ip + r * ho * wo)
        else:
            fastnn_maxpool2x2_f64(xp + r * H * W, W, ho, wo, op + r * ho * wo, ip + r * ho * wo)


# The window loops below clip each window to the image (ulo..uhi, vlo..vhi).
# ops.conv guarantees every window holds a real pixel: H, W >= 1 and
# padding <= kernel_size // 2 (PyTorch's rule), so max pooling never reads
# outside the plane and never divides by an empty window.

def max_pool_fwd(const floating[:, :, :, ::1] x, Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sh, Py_ssize_t sw,
                 Py_ssize_t ph, Py_ssize_t pw, floating[:, :, :, ::1] out, long long[:, :, :, ::1] indices):
    """y = max over the window (-inf padding); first maximum wins, NaN wins."""
    cdef Py_ssize_t B = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef Py_ssize_t ho = out.shape[2], wo = out.shape[3]
    cdef Py_ssize_t r, i, j, u, v, h0, w0, ulo, uhi, vlo, vhi
    cdef long long arg, pos
    cdef bint take
    cdef floating best, val
    cdef const floating* src
    cdef floating* dst
    cdef long long* idx
    cdef const floating* xp = &x[0, 0, 0, 0]
    cdef floating* op = &out[0, 0, 0, 0]
    cdef long long* ip = &indices[0, 0, 0, 0]
    if kh == 2 and kw == 2 and sh == 2 and sw == 2 and ph == 0 and pw == 0:
        _max_pool_2x2(xp, B * C, H, W, ho, wo, op, ip)
        return
    for r in prange(B * C, nogil=True, schedule="static", num_threads=_threads(B * C * H * W)):
        src = xp + r * H * W
        dst = op + r * ho * wo
        idx = ip + r * ho * wo
        for i in range(ho):
            h0 = i * sh - ph
            ulo = -h0 if h0 < 0 else 0
            uhi = H - h0 if H - h0 < kh else kh
            for j in range(wo):
                w0 = j * sw - pw
                vlo = -w0 if w0 < 0 else 0
                vhi = W - w0 if W - w0 < kw else kw
                arg = (h0 + ulo) * W + w0 + vlo
                best = src[arg]
                for u in range(ulo, uhi):
                    for v in range(vlo, vhi):
                        pos = (h0 + u) * W + w0 + v
                        val = src[pos]
                        # strict > keeps the first maximum; a NaN replaces a number, not a NaN.
                        # Selects, not branches: on real data the comparison is a coin flip.
                        take = (val > best) | ((val != val) & (best == best))
                        best = val if take else best
                        arg = pos if take else arg
                dst[i * wo + j] = best
                idx[i * wo + j] = arg


def max_pool_bwd(const floating[:, :, :, ::1] grad_out, const long long[:, :, :, ::1] indices,
                 floating[:, :, :, ::1] grad_input):
    """dx[plane][indices] += dy (one plane per thread: no races).

    The kernel checks what it indexes with, whoever called it: an index
    outside [0, H·W) is skipped and makes the call raise ValueError.
    """
    cdef Py_ssize_t B = grad_input.shape[0], C = grad_input.shape[1]
    cdef Py_ssize_t HW = grad_input.shape[2] * grad_input.shape[3]
    cdef Py_ssize_t n_out = grad_out.shape[2] * grad_out.shape[3], r, p
    cdef const floating* gp = &grad_out[0, 0, 0, 0]
    cdef const long long* ip = &indices[0, 0, 0, 0]
    cdef floating* dp = &grad_input[0, 0, 0, 0]
    cdef floating* plane
    cdef long long k
    cdef Py_ssize_t bad = 0
    for r in prange(B * C, nogil=True, schedule="static", num_threads=_threads(B * C * HW)):
        plane = dp + r * HW
        memset(plane, 0, HW * sizeof(floating))
        for p in range(n_out):
            k = ip[r * n_out + p]
            if <size_t>k < <size_t>HW:   # one unsigned compare: negative indices are huge
                plane[k] += gp[r * n_out + p]
            else:
                bad += 1
    if bad:
        raise ValueError(f"indices must lie in [0, {HW}) for input planes of "
                         f"{grad_input.shape[2]}x{grad_input.shape[3]}")


def avg_pool_fwd(const floating[:, :, :, ::1] x, Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sh, Py_ssize_t sw,
                 Py_ssize_t ph, Py_ssize_t pw, bint count_include_pad, floating[:, :, :, ::1] out):
    """y = Σ window / n, n = kH·kW or the number of real pixels."""
    cdef Py_ssize_t B = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef Py_ssize_t ho = out.shape[2], wo = out.shape[3]
    cdef Py_ssize_t r, i, j, u, v, h0, w0, ulo, uhi, vlo, vhi, cnt
    cdef floating s
    cdef const floating* src
    cdef floating* dst
    cdef const floating* xp = &x[0, 0, 0, 0]
    cdef floating* op = &out[0, 0, 0, 0]
    for r in prange(B * C, nogil=True, schedule="static", num_threads=_threads(B * C * H * W)):
        src = xp + r * H * W
        dst = op + r * ho * wo
        for i in range(ho):
            h0 = i * sh - ph
            ulo = -h0 if h0 < 0 else 0
            uhi = H - h0 if H - h0 < kh else kh
            for j in range(wo):
                w0 = j * sw - pw
                vlo = -w0 if w0 < 0 else 0
                vhi = W - w0 if W - w0 < kw else kw
                s = 0
                for u in range(ulo, uhi):
                    for v in range(vlo, vhi):
                        s = s + src[(h0 + u) * W + w0 + v]
                cnt = kh * kw if count_include_pad else (uhi - ulo) * (vhi - vlo)
                dst[i * wo + j] = s / cnt


def avg_pool_bwd(const floating[:, :, :, ::1] grad_out, Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sh,
                 Py_ssize_t sw, Py_ssize_t ph, Py_ssize_t pw, bint count_include_pad,
                 floating[:, :, :, ::1] grad_input):
    """dx[window] += dy / n for every output."""
    cdef Py_ssize_t B = grad_input.shape[0], C = grad_input.shape[1]
    cdef Py_ssize_t H = grad_input.shape[2], W = grad_input.shape[3]
    cdef Py_ssize_t ho = grad_out.shape[2], wo = grad_out.shape[3]
    cdef Py_ssize_t r, i, j, u, v, h0, w0, ulo, uhi, vlo, vhi, cnt
    cdef floating gv
    cdef const floating* g
    cdef floating* plane
    cdef const floating* gp = &grad_out[0, 0, 0, 0]
    cdef floating* dp = &grad_input[0, 0, 0, 0]
    for r in prange(B * C, nogil=True, schedule="static", num_threads=_threads(B * C * H * W)):
        g = gp + r * ho * wo
        plane = dp + r * H * W
        memset(plane, 0, H * W * sizeof(floating))
        for i in range(ho):
            h0 = i * sh - ph
            ulo = -h0 if h0 < 0 else 0
            uhi = H - h0 if H - h0 < kh else kh
            for j in range(wo):
                w0 = j * sw - pw
                vlo = -w0 if w0 < 0 else 0
                vhi = W - w0 if W - w0 < kw else kw
                cnt = kh * kw if count_include_pad else (uhi - ulo) * (vhi - vlo)
                gv = g[i * wo + j] / cnt
                for u in range(ulo, uhi):
                    for v in range(vlo, vhi):
                        plane[(h0 + u) * W + w0 + v] += gv


# ------------------------------------------------- direct float32 stride-1 convolution

from libc.stddef cimport ptrdiff_t
from cython.parallel cimport threadid

cdef extern from "conv_kernels.h" nogil:
    int FASTNN_CONV_OB
    int FASTNN_CONV_QB
    void fastnn_conv_shift_f32(ptrdiff_t K, ptrdiff_t OP, ptrdiff_t Q, const float* wpk, const ptrdiff_t* koff,
                               const float* src, float* out, ptrdiff_t ldo)
    void fastnn_conv_wgrad_f32(ptrdiff_t O, ptrdiff_t K, ptrdiff_t Q, const float* g, ptrdiff_t ldg,
                               const ptrdiff_t* koff, const float* src, float* gw)
    bint fastnn_all_finite_f32(const float* a, ptrdiff_t n)


def all_finite(const float[::1] a):
    """True when no element of ``a`` is NaN or ±inf (one vectorised pass)."""
    cdef bint ok
    with nogil:
        ok = fastnn_all_finite_f32(&a[0], a.shape[0]) if a.shape[0] else True
    return ok


cdef inline Py_ssize_t _round_up(Py_ssize_t n, Py_ssize_t m) noexcept nogil:
    return (n + m - 1) // m * m


cdef void _pad_image(const float* x, Py_ssize_t C, Py_ssize_t H, Py_ssize_t W, Py_ssize_t ph, Py_ssize_t pw,
                     Py_ssize_t plane, Py_ssize_t Wp, float* xp) noexcept nogil:
    """Copy one image into its zero-padded flat buffer (the borders stay zero from allocation)."""
    cdef Py_ssize_t c, h
    for c in range(C):
        for h in range(H):
            memcpy(xp + c * plane + (h + ph) * Wp + pw, x + (c * H + h) * W, W * sizeof(float))


def conv2d_fwd_direct(const float[:, :, :, ::1] x, const float[:, :, :, ::1] weight, const float[::1] bias,
                      bint has_bias, Py_ssize_t ph, Py_ssize_t pw, Py_ssize_t dh, Py_ssize_t dw,
                      float[:, :, :, ::1] out):
    """y[b,o,i,j] = bias[o] + Σ_{c,u,v} w[o,c,u,v]·xp[b,c,i+u·dH,j+v·dW] (stride 1, shifted GEMM).

    The caller (cython_backend.conv) picks this kernel only while a padded
    image, C·Hp·Wp elements, stays far below 2^31 (one buffer per thread).
    """
    cdef Py_ssize_t B = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef Py_ssize_t O = weight.shape[0], kh = weight.shape[2], kw = weight.shape[3]
    cdef Py_ssize_t Ho = out.shape[2], Wo = out.shape[3]
    cdef Py_ssize_t Hp = H + 2 * ph, Wp = W + 2 * pw, K = C * kh * kw
    cdef Py_ssize_t OP = _round_up(O, FASTNN_CONV_OB)
    if B == 0:
        return
    cdef Py_ssize_t plane = Hp * Wp
    cdef Py_ssize_t Q = _round_up(Ho * Wp, FASTNN_CONV_QB)
    cdef Py_ssize_t xlen = C * plane + (kw - 1) * dw + 2 * FASTNN_CONV_QB
    cdef int nt = _threads_d(<double>B * O * Q * K / 8)
    if nt > B:
        nt = <int>B
    cdef Py_ssize_t o, c, u, v, b, i, j
    cdef int t
    w_np = np.asarray(weight).reshape(O, K)
    wpk_np = np.zeros((K, OP), np.float32)
    wpk_np[:, :O] = w_np.T
    cdef float[:, ::1] wpk = wpk_np
    cdef ptrdiff_t[::1] koff = np.empty(K, np.intp)
    for c in range(C):
        for u in range(kh):
            for v in range(kw):
                koff[(c * kh + u) * kw + v] = c * plane + u * dh * Wp + v * dw
    cdef float[:, ::1] xbuf = np.zeros((nt, xlen), np.float32)
    cdef float[:, ::1] obuf = np.empty((nt, OP * Q), np.float32)
    cdef const float* xptr = &x[0, 0, 0, 0]
    cdef float* optr = &out[0, 0, 0, 0]
    cdef const float* bptr = &bias[0] if has_bias else NULL
    cdef float* xp
    cdef float* ob
    cdef float* d
    cdef const float* s
    cdef float bo
    for b in prange(B, nogil=True, schedule="static", num_threads=nt):
        t = threadid()
        xp = &xbuf[t, 0]
        ob = &obuf[t, 0]
        _pad_image(xptr + b * C * H * W, C, H, W, ph, pw, plane, Wp, xp)
        fastnn_conv_shift_f32(K, OP, Q, &wpk[0, 0], &koff[0], xp, ob, Q)
        for o in range(O):
            bo = bptr[o] if bptr != NULL else 0
            for i in range(Ho):
                d = optr + ((b * O + o) * Ho + i) * Wo
                s = ob + o * Q + i * Wp
                for j in range(Wo):
                    d[j] = s[j] + bo


def conv2d_bwd_direct(const float[:, :, :, ::1] grad_out, const float[:, :, :, ::1] x,
                      const float[:, :, :, ::1] weight, Py_ssize_t ph, Py_ssize_t pw, Py_ssize_t dh, Py_ssize_t dw,
                      float[:, :, :, ::1] grad_input, bint want_input,
                      float[:, :, :, ::1] grad_weight, float[::1] grad_bias, bint want_bias):
    """dW[o,c,u,v] = Σ_{b,i,j} G[b,o,i,j]·xp[b,c,i+u·dH,j+v·dW]; dxp[c] = Σ_{o,u,v} w[o,c,u,v]·G[o] shifted.

    Both products run over whole padded rows, so they also multiply the
    zeros at the junk positions (output columns Wo..Wp, the margins) with
    real pixels and weights: exact for finite data, NaN for an infinite
    one (0·inf). The caller runs this kernel only when x and the weight are
    finite (all_finite) and the im2col kernel otherwise.
    """
    cdef Py_ssize_t B = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef Py_ssize_t O = weight.shape[0], kh = weight.shape[2], kw = weight.shape[3]
    cdef Py_ssize_t Ho = grad_out.shape[2], Wo = grad_out.shape[3]
    cdef Py_ssize_t Hp = H + 2 * ph, Wp = W + 2 * pw, K = C * kh * kw, KT = O * kh * kw
    cdef Py_ssize_t CP = _round_up(C, FASTNN_CONV_OB)
    if B == 0:
        grad_weight[...] = 0
        if want_bias:
            grad_bias[...] = 0
        return
    cdef Py_ssize_t plane = Hp * Wp
    cdef Py_ssize_t Qg = _round_up(Ho * Wp, 16)
    cdef Py_ssize_t QI = _round_up(plane, FASTNN_CONV_QB)
    cdef Py_ssize_t xlen = C * plane + (kw - 1) * dw + 2 * FASTNN_CONV_QB
    cdef Py_ssize_t margin = (kh - 1) * dh * Wp + (kw - 1) * dw
    cdef Py_ssize_t gplane = margin + plane + 2 * FASTNN_CONV_QB
    cdef int nt = _threads_d(<double>B * O * Qg * K / 4)
    if nt > B:
        nt = <int>B
    cdef Py_ssize_t o, c, u, v, b, i, h, p, r, kk
    cdef int t
    cdef double acc
    cdef ptrdiff_t[::1] koff = np.empty(K, np.intp)
    cdef ptrdiff_t[::1] koffT = np.empty(KT, np.intp)
    for c in range(C):
        for u in range(kh):
            for v in range(kw):
                koff[(c * kh + u) * kw + v] = c * plane + u * dh * Wp + v * dw
    for o in range(O):
        for u in range(kh):
            for v in range(kw):
                koffT[(o * kh + u) * kw + v] = o * gplane + margin - u * dh * Wp - v * dw
    # wpkT[(o, u, v), c] = w[o, c, u, v]
    wpkT_np = np.zeros((KT, CP), np.float32)
    wpkT_np[:, :C] = np.asarray(weight).transpose(0, 2, 3, 1).reshape(KT, C)
    cdef float[:, ::1] wpkT = wpkT_np
    cdef float[:, ::1] xbuf = np.zeros((nt, xlen), np.float32)
    cdef float[:, ::1] gbuf = np.zeros((nt, O * gplane), np.float32)
    cdef float[:, ::1] ibuf = np.empty((nt, CP * QI if want_input else 1), np.float32)
    cdef float[:, ::1] gwt = np.zeros((nt, O * K * 16), np.float32)   # per thread, 16 lanes
    cdef const float* xptr = &x[0, 0, 0, 0]
    cdef const float* gptr = &grad_out[0, 0, 0, 0]
    cdef float* giptr = &grad_input[0, 0, 0, 0]
    cdef float* xp
    cdef float* gp
    cdef float* ib
    cdef float* d
    cdef const float* s
    for b in prange(B, nogil=True, schedule="static", num_threads=nt):
        t = threadid()
        xp = &xbuf[t, 0]
        gp = &gbuf[t, 0]
        _pad_image(xptr + b * C * H * W, C, H, W, ph, pw, plane, Wp, xp)
        for o in range(O):   # G rows at width Wp; the junk columns stay zero
            for i in range(Ho):
                memcpy(gp + o * gplane + margin + i * Wp, gptr + ((b * O + o) * Ho + i) * Wo, Wo * sizeof(float))
        fastnn_conv_wgrad_f32(O, K, Qg, gp + margin, gplane, &koff[0], xp, &gwt[t, 0])
        if want_input:
            ib = &ibuf[t, 0]
            fastnn_conv_shift_f32(KT, CP, QI, &wpkT[0, 0], &koffT[0], gp, ib, QI)
            for c in range(C):
                for h in range(H):
                    d = giptr + ((b * C + c) * H + h) * W
                    s = ib + c * QI + (h + ph) * Wp + pw
                    memcpy(d, s, W * sizeof(float))
    cdef float* gw = &grad_weight[0, 0, 0, 0]
    with nogil:
        for kk in range(O * K):
            acc = 0
            for r in range(nt):
                for p in range(16):
                    acc = acc + gwt[r, kk * 16 + p]
            gw[kk] = <float>acc
        if want_bias:
            for o in range(O):
                acc = 0
                for b in range(B):
                    s = gptr + (b * O + o) * Ho * Wo
                    for p in range(Ho * Wo):
                        acc = acc + s[p]
                grad_bias[o] = <float>acc
