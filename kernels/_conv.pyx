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


cdef inline void _gemm(bint trans_a, bint trans_b, int m, int n, int k, floating alpha,
                       const floating* a, int lda, const floating* b, int ldb, floating beta,
                       floating* c, int ldc) noexcept nogil:
    """Row-major C(m, n) = alpha·op(A)·op(B) + beta·C through column-major BLAS (Cᵀ = op(B)ᵀ·op(A)ᵀ)."""
    cdef char ta = b'T' if trans_a else b'N'
    cdef char tb = b'T' if trans_b else b'N'
    if floating is float:
        sgemm(&tb, &ta, &n, &m, &k, &alpha, <float*>b, &ldb, <float*>a, &lda, &beta, c, &ldc)
    else:
        dgemm(&tb, &ta, &n, &m, &k, &alpha, <double*>b, &ldb, <double*>a, &lda, &beta, c, &ldc)


cdef inline void _valid_range(int n_out, int n_in, int s, int offset, int* lo, int* hi) noexcept nogil:
    """Outputs j with 0 <= j·s + offset < n_in, as [lo, hi)."""
    lo[0] = (-offset + s - 1) // s if offset < 0 else 0
    hi[0] = (n_in - offset - 1) // s + 1 if n_in - offset > 0 else 0
    if hi[0] > n_out:
        hi[0] = n_out
    if lo[0] > hi[0]:
        lo[0] = hi[0]


cdef void _im2col_plane(const floating* src, int H, int W, int kh, int kw, int sh, int sw,
                        int ph, int pw, int dh, int dw, int ho, int wo,
                        floating* dst, Py_ssize_t ld) noexcept nogil:
    """kH·kW rows (stride ld) of the columns of one input plane."""
    cdef int u, v, i, j, ilo, ihi, jlo, jhi, off
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


cdef void _col2im_plane(const floating* src, Py_ssize_t ld, int H, int W, int kh, int kw, int sh, int sw,
                        int ph, int pw, int dh, int dw, int ho, int wo, floating* dst) noexcept nogil:
    """dst (one H×W plane) = Σ over taps of the kH·kW column rows (stride ld) copied from it."""
    cdef int u, v, i, j, ilo, ihi, jlo, jhi, off
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


cdef void _scatter_ld(const floating* y, Py_ssize_t ld, const floating* bias, int nb, int O, Py_ssize_t P,
                      floating* out) noexcept nogil:
    """out[b, o, p] = y[o·ld + b·P + p] + bias[o]."""
    cdef Py_ssize_t r, p
    cdef int b, o
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


cdef void _gather_ld(const floating* g, int nb, int O, Py_ssize_t P, floating* dst, Py_ssize_t ld) noexcept nogil:
    """dst[o·ld + b·P + p] = g[b, o, p]."""
    cdef Py_ssize_t r
    cdef int b, o
    for r in prange(nb * O, nogil=True, schedule="static", num_threads=_threads(nb * O * P)):
        b = r // O
        o = r % O
        memcpy(dst + o * ld + b * P, g + r * P, P * sizeof(floating))


cdef void _im2col_ld(const floating* x, int nb, int C, int H, int W, int kh, int kw, int sh, int sw,
                     int ph, int pw, int dh, int dw, int ho, int wo, floating* cols, Py_ssize_t ld) noexcept nogil:
    cdef Py_ssize_t P = ho * wo, r
    cdef int b, c, kk = kh * kw
    for r in prange(nb * C, nogil=True, schedule="static", num_threads=_threads(nb * P * C * kk)):
        b = r // C
        c = r % C
        _im2col_plane(x + r * H * W, H, W, kh, kw, sh, sw, ph, pw, dh, dw, ho, wo,
                      cols + c * kk * ld + b * P, ld)


cdef void _col2im_ld(const floating* dcols, Py_ssize_t ld, int nb, int C, int H, int W, int kh, int kw,
                     int sh, int sw, int ph, int pw, int dh, int dw, int ho, int wo, floating* gx) noexcept nogil:
    cdef Py_ssize_t P = ho * wo, r
    cdef int b, c, kk = kh * kw
    for r in prange(nb * C, nogil=True, schedule="static", num_threads=_threads(nb * P * C * kk)):
        b = r // C
        c = r % C
        _col2im_plane(dcols + c * kk * ld + b * P, ld, H, W, kh, kw, sh, sw, ph, pw, dh, dw, ho, wo,
                      gx + r * H * W)


cdef inline int _chunk(int B, Py_ssize_t K, Py_ssize_t P) noexcept nogil:
    """Images per chunk: as many as keep the columns within COLS_BUDGET (at least one)."""
    cdef Py_ssize_t nb = COLS_BUDGET // (K * P if K * P > 0 else 1)
    if nb < 1:
        nb = 1
    if nb > B:
        nb = B
    return <int>nb


def _shape2(m, n, needed):
    """(m, n), or a (1, 1) placeholder for a buffer that is not needed."""
    return (m, n) if needed else (1, 1)


def conv2d_fwd(floating[:, :, :, ::1] x, floating[:, :, :, ::1] weight, floating[::1] bias, bint has_bias,
               int sh, int sw, int ph, int pw, int dh, int dw, floating[:, :, :, ::1] out):
    """y[b,o,i,j] = bias[o] + Σ_{c,u,v} w[o,c,u,v]·xp[b,c,i·sH+u·dH,j·sW+v·dW] (chunked im2col + GEMM)."""
    cdef int B = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef int O = weight.shape[0], kh = weight.shape[2], kw = weight.shape[3]
    cdef int ho = out.shape[2], wo = out.shape[3]
    cdef int K = C * kh * kw, P = ho * wo
    cdef int nb = _chunk(B, K, P), b0, n, o, p
    cdef Py_ssize_t ld = <Py_ssize_t>nb * P
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
    with nogil:
        b0 = 0
        while b0 < B:
            n = nb if B - b0 > nb else B - b0
            _im2col_ld(xp + <Py_ssize_t>b0 * C * H * W, n, C, H, W, kh, kw, sh, sw, ph, pw, dh, dw, ho, wo,
                       cp, ld)
            if nb == 1:  # one image: the GEMM writes straight into the output
                d = op + <Py_ssize_t>b0 * O * P
                _gemm(False, False, O, P, K, <floating>1, wp, K, cp, P, <floating>0, d, P)
                if bp != NULL:
                    for o in range(O):
                        for p in range(P):
                            d[o * P + p] += bp[o]
            else:
                _gemm(False, False, O, n * P, K, <floating>1, wp, K, cp, <int>ld, <floating>0, yp, <int>ld)
                _scatter_ld(yp, ld, bp, n, O, P, op + <Py_ssize_t>b0 * O * P)
            b0 += n


def conv2d_bwd(floating[:, :, :, ::1] grad_out, floating[:, :, :, ::1] x, floating[:, :, :, ::1] weight,
               int sh, int sw, int ph, int pw, int dh, int dw,
               floating[:, :, :, ::1] grad_input, bint want_input,
               floating[:, :, :, ::1] grad_weight, floating[::1] grad_bias, bint want_bias):
    """dW = Σ_b G_b·cols_bᵀ, db = Σ G, dx = col2im(Wᵀ·G_b) (chunked; GEMMs outside parallel loops)."""
    cdef int B = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef int O = weight.shape[0], kh = weight.shape[2], kw = weight.shape[3]
    cdef int ho = grad_out.shape[2], wo = grad_out.shape[3]
    cdef int K = C * kh * kw, P = ho * wo
    cdef int nb = _chunk(B, K, P), b0, n, o, b, p, ldg
    cdef Py_ssize_t ld = <Py_ssize_t>nb * P
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
    with nogil:
        b0 = 0
        while b0 < B:
            n = nb if B - b0 > nb else B - b0
            _im2col_ld(xp + <Py_ssize_t>b0 * C * H * W, n, C, H, W, kh, kw, sh, sw, ph, pw, dh, dw, ho, wo,
                       cp, ld)
            if nb == 1:
                gp = gop + <Py_ssize_t>b0 * O * P
            else:
                _gather_ld(gop + <Py_ssize_t>b0 * O * P, n, O, P, &g[0, 0], ld)
                gp = &g[0, 0]
            ldg = <int>ld
            # dW (O, K) (+)= G (O, nP) · colsᵀ (nP, K)
            _gemm(False, True, O, K, n * P, <floating>1, gp, ldg, cp, <int>ld,
                  <floating>(0 if b0 == 0 else 1), gwp, K)
            if want_input:
                # dcols (K, nP) = Wᵀ (K, O) · G (O, nP)
                _gemm(True, False, K, n * P, O, <floating>1, wp, K, gp, ldg, <floating>0, dcp, <int>ld)
                _col2im_ld(dcp, ld, n, C, H, W, kh, kw, sh, sw, ph, pw, dh, dw, ho, wo,
                           gxp + <Py_ssize_t>b0 * C * H * W)
            b0 += n
        if want_bias:
            for o in range(O):
                acc = 0
                for b in range(B):
                    gp = gop + (<Py_ssize_t>b * O + o) * P
                    for p in range(P):
                        acc = acc + gp[p]
                gbp[o] = <floating>acc


# ---------------------------------------------------------------- pooling

cdef extern from "conv_kernels.h" nogil:
    void fastnn_maxpool2x2_f32(const float* src, int W, int ho, int wo, float* dst, long long* idx)
    void fastnn_maxpool2x2_f64(const double* src, int W, int ho, int wo, double* dst, long long* idx)


cdef void _max_pool_2x2(const floating* xp, Py_ssize_t planes, int H, int W, int ho, int wo,
                        floating* op, long long* ip) noexcept nogil:
    """The common 2×2, stride 2, unpadded case: no window clipping, independent outputs."""
    cdef Py_ssize_t r
    for r in prange(planes, nogil=True, schedule="static", num_threads=_threads(planes * H * W)):
        if floating is float:
            fastnn_maxpool2x2_f32(xp + r * H * W, W, ho, wo, op + r * ho * wo, ip + r * ho * wo)
        else:
            fastnn_maxpool2x2_f64(xp + r * H * W, W, ho, wo, op + r * ho * wo, ip + r * ho * wo)


def max_pool_fwd(floating[:, :, :, ::1] x, int kh, int kw, int sh, int sw, int ph, int pw,
                 floating[:, :, :, ::1] out, long long[:, :, :, ::1] indices):
    """y = max over the window (-inf padding); first maximum wins, NaN wins."""
    cdef int B = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef int ho = out.shape[2], wo = out.shape[3]
    cdef Py_ssize_t r
    cdef int i, j, u, v, h0, w0, ulo, uhi, vlo, vhi
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


def max_pool_bwd(floating[:, :, :, ::1] grad_out, long long[:, :, :, ::1] indices,
                 floating[:, :, :, ::1] grad_input):
    """dx[plane][indices] += dy (one plane per thread: no races)."""
    cdef int B = grad_input.shape[0], C = grad_input.shape[1]
    cdef Py_ssize_t HW = grad_input.shape[2] * grad_input.shape[3]
    cdef Py_ssize_t n_out = grad_out.shape[2] * grad_out.shape[3], r, p
    cdef const floating* gp = &grad_out[0, 0, 0, 0]
    cdef const long long* ip = &indices[0, 0, 0, 0]
    cdef floating* dp = &grad_input[0, 0, 0, 0]
    cdef floating* plane
    for r in prange(B * C, nogil=True, schedule="static", num_threads=_threads(B * C * HW)):
        plane = dp + r * HW
        memset(plane, 0, HW * sizeof(floating))
        for p in range(n_out):
            plane[ip[r * n_out + p]] += gp[r * n_out + p]


def avg_pool_fwd(floating[:, :, :, ::1] x, int kh, int kw, int sh, int sw, int ph, int pw,
                 bint count_include_pad, floating[:, :, :, ::1] out):
    """y = Σ window / n, n = kH·kW or the number of real pixels."""
    cdef int B = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef int ho = out.shape[2], wo = out.shape[3]
    cdef Py_ssize_t r
    cdef int i, j, u, v, h0, w0, ulo, uhi, vlo, vhi, cnt
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


def avg_pool_bwd(floating[:, :, :, ::1] grad_out, int kh, int kw, int sh, int sw, int ph, int pw,
                 bint count_include_pad, floating[:, :, :, ::1] grad_input):
    """dx[window] += dy / n for every output."""
    cdef int B = grad_input.shape[0], C = grad_input.shape[1], H = grad_input.shape[2], W = grad_input.shape[3]
    cdef int ho = grad_out.shape[2], wo = grad_out.shape[3]
    cdef Py_ssize_t r
    cdef int i, j, u, v, h0, w0, ulo, uhi, vlo, vhi, cnt
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
    void fastnn_conv_shift_f32(int K, int OP, ptrdiff_t Q, const float* wpk, const ptrdiff_t* koff,
                               const float* src, float* out, ptrdiff_t ldo)
    void fastnn_conv_wgrad_f32(int O, int K, ptrdiff_t Q, const float* g, ptrdiff_t ldg,
                               const ptrdiff_t* koff, const float* src, float* gw)


cdef inline Py_ssize_t _round_up(Py_ssize_t n, Py_ssize_t m) noexcept nogil:
    return (n + m - 1) // m * m


cdef void _pad_image(const float* x, int C, int H, int W, int ph, int pw, Py_ssize_t plane, int Wp,
                     float* xp) noexcept nogil:
    """Copy one image into its zero-padded flat buffer (the borders stay zero from allocation)."""
    cdef int c, h
    for c in range(C):
        for h in range(H):
            memcpy(xp + c * plane + (h + ph) * Wp + pw, x + (c * H + h) * W, W * sizeof(float))


def conv2d_fwd_direct(float[:, :, :, ::1] x, float[:, :, :, ::1] weight, float[::1] bias, bint has_bias,
                      int ph, int pw, int dh, int dw, float[:, :, :, ::1] out):
    """y[b,o,i,j] = bias[o] + Σ_{c,u,v} w[o,c,u,v]·xp[b,c,i+u·dH,j+v·dW] (stride 1, shifted GEMM)."""
    cdef int B = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef int O = weight.shape[0], kh = weight.shape[2], kw = weight.shape[3]
    cdef int Ho = out.shape[2], Wo = out.shape[3]
    cdef int Hp = H + 2 * ph, Wp = W + 2 * pw, K = C * kh * kw
    cdef int OP = <int>_round_up(O, FASTNN_CONV_OB)
    cdef Py_ssize_t plane = <Py_ssize_t>Hp * Wp
    cdef Py_ssize_t Q = _round_up(<Py_ssize_t>Ho * Wp, FASTNN_CONV_QB)
    cdef Py_ssize_t xlen = C * plane + (kw - 1) * dw + 2 * FASTNN_CONV_QB
    cdef int nt = _threads(<Py_ssize_t>B * O * Q * K // 8)
    if nt > B:
        nt = B
    cdef int o, c, u, v, k, b, t, i, j
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
        _pad_image(xptr + <Py_ssize_t>b * C * H * W, C, H, W, ph, pw, plane, Wp, xp)
        fastnn_conv_shift_f32(K, OP, Q, &wpk[0, 0], &koff[0], xp, ob, Q)
        for o in range(O):
            bo = bptr[o] if bptr != NULL else 0
            for i in range(Ho):
                d = optr + ((<Py_ssize_t>b * O + o) * Ho + i) * Wo
                s = ob + o * Q + i * Wp
                for j in range(Wo):
                    d[j] = s[j] + bo


def conv2d_bwd_direct(float[:, :, :, ::1] grad_out, float[:, :, :, ::1] x, float[:, :, :, ::1] weight,
                      int ph, int pw, int dh, int dw,
                      float[:, :, :, ::1] grad_input, bint want_input,
                      float[:, :, :, ::1] grad_weight, float[::1] grad_bias, bint want_bias):
    """dW[o,c,u,v] = Σ_{b,i,j} G[b,o,i,j]·xp[b,c,i+u·dH,j+v·dW]; dxp[c] = Σ_{o,u,v} w[o,c,u,v]·G[o] shifted."""
    cdef int B = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef int O = weight.shape[0], kh = weight.shape[2], kw = weight.shape[3]
    cdef int Ho = grad_out.shape[2], Wo = grad_out.shape[3]
    cdef int Hp = H + 2 * ph, Wp = W + 2 * pw, K = C * kh * kw, KT = O * kh * kw
    cdef int CP = <int>_round_up(C, FASTNN_CONV_OB)
    cdef Py_ssize_t plane = <Py_ssize_t>Hp * Wp
    cdef Py_ssize_t Qg = _round_up(<Py_ssize_t>Ho * Wp, 16)
    cdef Py_ssize_t QI = _round_up(plane, FASTNN_CONV_QB)
    cdef Py_ssize_t xlen = C * plane + (kw - 1) * dw + 2 * FASTNN_CONV_QB
    cdef Py_ssize_t margin = (kh - 1) * dh * Wp + (kw - 1) * dw
    cdef Py_ssize_t gplane = margin + plane + 2 * FASTNN_CONV_QB
    cdef int nt = _threads(<Py_ssize_t>B * O * Qg * K // 4)
    if nt > B:
        nt = B
    cdef int o, c, u, v, b, t, i, h, p
    cdef Py_ssize_t r, kk
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
        _pad_image(xptr + <Py_ssize_t>b * C * H * W, C, H, W, ph, pw, plane, Wp, xp)
        for o in range(O):   # G rows at width Wp; the junk columns stay zero
            for i in range(Ho):
                memcpy(gp + o * gplane + margin + i * Wp, gptr + ((<Py_ssize_t>b * O + o) * Ho + i) * Wo,
                       Wo * sizeof(float))
        fastnn_conv_wgrad_f32(O, K, Qg, gp + margin, gplane, &koff[0], xp, &gwt[t, 0])
        if want_input:
            ib = &ibuf[t, 0]
            fastnn_conv_shift_f32(KT, CP, QI, &wpkT[0, 0], &koffT[0], gp, ib, QI)
            for c in range(C):
                for h in range(H):
                    d = giptr + ((<Py_ssize_t>b * C + c) * H + h) * W
                    s = ib + c * QI + (h + ph) * Wp + pw
                    memcpy(d, s, W * sizeof(float))
    cdef float* gw = &grad_weight[0, 0, 0, 0]
    with nogil:
        for kk in range(<Py_ssize_t>O * K):
            acc = 0
            for t in range(nt):
                for p in range(16):
                    acc = acc + gwt[t, kk * 16 + p]
            gw[kk] = <float>acc
        if want_bias:
            for o in range(O):
                acc = 0
                for b in range(B):
                    s = gptr + (<Py_ssize_t>b * O + o) * Ho * Wo
                    for p in range(Ho * Wo):
                        acc = acc + s[p]
                grad_bias[o] = <float>acc
