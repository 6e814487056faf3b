"""Numba convolution and pooling kernels (NCHW, float32/float64).

Convolution forward: one parallel loop over (image, band of output rows);
each work item lowers its band (im2col, all input channels) into a buffer
that stays in L2 and multiplies it by the own GEMM's small-product kernel
straight into the output, bias added while the band is in cache. With
``set_gemm("blas")``, and for the backward pass: the batch is cut into chunks
whose im2col matrix stays small (``_COLS_BUDGET`` elements), a parallel loop
over (image, channel) builds the columns, one large BLAS GEMM called from
Python (never from inside a parallel region) does the arithmetic, and a
parallel loop scatters the result back to NCHW. Pooling is a direct loop,
parallel over (image, channel) planes once the work is large enough. Each
loop is one function compiled twice (:func:`._jit.variants`: serial and
parallel, indexed ``[parallel]``), each compilation on its first call.
"""

import threading

import numba
import numpy as np
from numba import get_thread_id, prange

from ...gemm import get_gemm as _gemm_mode
from ..reference import conv as _spec
from ._gemm import _NO_BIAS, _gemm_small_plain, _raw
from ._jit import PAIRS, Deferred, jit, jit_inline, kernel, renamed, threads, variants
from ._small_gemm import small_gemm

__all__ = list(_spec.__all__)  # the reference's kernels, every one overridden here

#: Elements from which im2col, col2im and pooling run as parallel loops. Lower
#: than the elementwise kernels' threshold (fastnn._config.PARALLEL_MIN_ELEMENTS):
#: these loops touch each element at scattered addresses and gain from a second
#: thread much earlier (W5 CNN step, 2 threads: 6.2 ms at 2^16, 8.4 ms at 2^19).
PARALLEL_MIN_ELEMENTS = 1 << 16

#: Largest im2col chunk, in elements (4 MB of float32): small enough to stay in cache.
_COLS_BUDGET = 1 << 20


@jit
def _valid_range(n_out, n_in, s, offset):
    """Outputs ``j`` with ``0 <= j·s + offset < n_in``, as ``[lo, hi)``."""
    lo = 0
    if offset < 0:
        lo = (-offset + s - 1) // s
    hi = 0
    if n_in - offset > 0:
        hi = (n_in - offset - 1) // s + 1
    if hi > n_out:
        hi = n_out
    if lo > hi:
        lo = hi
    return lo, hi


@jit_inline
def _lower_channel(xf, src0, c, H, W, kh, kw, sh, sw, ph, pw, dh, dw, ho, wo, i0, i1, cf, ld, col0):
    """cf[((c·kH + u)·kW + v)·ld + col0 + (i - i0)·Wo + j] = xp[c, i·sH + u·dH, j·sW + v·dW] for i0 <= i < i1.

    One channel (its plane at xf[src0:]) of one image, output rows i0:i1."""
    for u in range(kh):
        ilo, ihi = _valid_range(ho, H, sh, u * dh - ph)
        for v in range(kw):
            jlo, jhi = _valid_range(wo, W, sw, v * dw - pw)
            off = v * dw - pw
            base = ((c * kh + u) * kw + v) * ld + col0
            for i in range(i0, i1):
                d = base + (i - i0) * wo
                # Row views indexed by range() variables (known >= 0): a
                # flat index such as d + j gets Numba's negative-index
                # wrap-around, which kept this copy from vectorising
                # (the 64-channel W-CONV im2col: 8 ms of 26 ms).
                dst = cf[d : d + wo]
                if i < ilo or i >= ihi:
                    for j in range(wo):
                        dst[j] = 0
                    continue
                s = src0 + (i * sh + u * dh - ph) * W + off
                for j in range(jlo):
                    dst[j] = 0
                if sw == 1:
                    seg = dst[jlo:jhi]
                    src = xf[s + jlo : s + jhi]
                    for j in range(jhi - jlo):
                        seg[j] = src[j]
                else:
                    for j in range(jlo, jhi):
                        dst[j] = xf[s + j * sw]
                for j in range(jhi, wo):
                    dst[j] = 0


@variants(inputs="x")
def _im2col(x, b0, nb, kh, kw, sh, sw, ph, pw, dh, dw, ho, wo, cols):
    """cols[(c·kH + u)·kW + v, b·P + i·Wo + j] = xp[b0 + b, c, i·sH + u·dH, j·sW + v·dW]."""
    C, H, W = x.shape[1], x.shape[2], x.shape[3]
    P = ho * wo
    ld = cols.shape[1]
    xf = x.reshape(x.size)  # flat indexing: no per-row views in the hot loop
    cf = cols.reshape(cols.size)
    for r in prange(nb * C):
        b = r // C
        c = r - b * C
        _lower_channel(
            xf, ((b0 + b) * C + c) * H * W, c, H, W, kh, kw, sh, sw, ph, pw, dh, dw, ho, wo, 0, ho, cf, ld, b * P
        )


@variants
def _col2im(dcols, b0, nb, kh, kw, sh, sw, ph, pw, dh, dw, ho, wo, grad_input):
    """grad_input[b0 + b, c] = Σ over kernel taps of the columns that were copied from it."""
    C, H, W = grad_input.shape[1], grad_input.shape[2], grad_input.shape[3]
    P = ho * wo
    for r in prange(nb * C):
        b = r // C
        c = r - b * C
        plane = grad_input[b0 + b, c]
        plane[:, :] = 0
        for u in range(kh):
            ilo, ihi = _valid_range(ho, H, sh, u * dh - ph)
            for v in range(kw):
                jlo, jhi = _valid_range(wo, W, sw, v * dw - pw)
                row = dcols[(c * kh + u) * kw + v, b * P : (b + 1) * P]
                off = v * dw - pw
                for i in range(ilo, ihi):
                    dst = plane[i * sh + u * dh - ph]
                    src = row[i * wo : (i + 1) * wo]
                    if sw == 1:
                        # segments indexed from 0 (see _im2col): vectorises
                        dseg = dst[jlo + off : jhi + off]
                        sseg = src[jlo:jhi]
                        for j in range(jhi - jlo):
                            dseg[j] += sseg[j]
                    else:
                        for j in range(jlo, jhi):
                            dst[j * sw + off] += src[j]


@variants(inputs="bias")
def _scatter(y, bias, has_bias, b0, nb, out):
    """out[b0 + b, o, p] = y[o, b·P + p] + bias[o]."""
    O = out.shape[1]
    P = out.shape[2] * out.shape[3]
    for r in prange(nb * O):
        b = r // O
        o = r - b * O
        dst = out[b0 + b, o].reshape(P)
        src = y[o, b * P : (b + 1) * P]
        bo = bias[o] if has_bias else 0
        for p in range(P):
            dst[p] = src[p] + bo


@variants(inputs="grad_out")
def _gather(grad_out, b0, nb, g):
    """g[o, b·P + p] = grad_out[b0 + b, o, p]."""
    O = grad_out.shape[1]
    P = grad_out.shape[2] * grad_out.shape[3]
    for r in prange(nb * O):
        b = r // O
        o = r - b * O
        dst = g[o, b * P : (b + 1) * P]
        src = grad_out[b0 + b, o].reshape(P)
        for p in range(P):  # element by element: a slice assignment compiles Numba's shape-error message
            dst[p] = src[p]


def _chunk(B, K, P):
    return max(1, min(B, _COLS_BUDGET // max(1, K * P)))


#: Lowered elements per work item of the fused forward (K x rows·Wo): the
#: band (~500 kB of float32) stays in L2 while the small-product kernel's
#: 8-row tiles read it once per 8 output channels. 64 channels at 56 x 56,
#: 1 / 2 threads: 2^15 13.6 / 7.3 ms, 2^16 10.8 / 5.7, 2^17 9.8 / 5.1,
#: 2^18 10.2 / 5.4.
_BAND_ELEMENTS = 1 << 17


def _fused_kernels(product, suffix):
    """(serial, parallel) compilations of the fused forward, with the band products from ``product``."""

    def _conv_forward_fused(x, w2, bias, has_bias, kh, kw, sh, sw, ph, pw, dh, dw, ho, wo, rows, work, out):
        """out = conv(x) + bias, one parallel loop over (image, band of output rows).

        Each work item lowers its band (all channels) into its thread's row of
        ``work`` and multiplies it by the own GEMM's small-product kernel straight
        into the output plane (row stride P), then adds the bias while the band
        is in cache: one parallel region for the whole batch, no im2col matrix
        through memory, no BLAS call between Numba's parallel loops."""
        B, C, H, W = x.shape
        O, K = w2.shape
        P = ho * wo
        nbands = (ho + rows - 1) // rows
        xf = _raw(x)
        wf = _raw(w2)
        of = _raw(out)
        for item in prange(B * nbands):
            b = item // nbands
            i0 = (item - b * nbands) * rows
            i1 = min(ho, i0 + rows)
            n = (i1 - i0) * wo
            cols = work[get_thread_id()]
            cf = _raw(cols)
            for c in range(C):
                _lower_channel(
                    xf, (b * C + c) * H * W, c, H, W, kh, kw, sh, sw, ph, pw, dh, dw, ho, wo, i0, i1, cf, n, 0
                )
            po = b * O * P + i0 * wo
            product(O, n, K, wf, K, 1, cf, n, 1, of[po:], P, wf, False, 0)
            if has_bias:
                for o in range(O):
                    row = of[po + o * P : po + o * P + n]
                    bo = bias[o]
                    for j in range(n):
                        row[j] += bo

    return (
        kernel(renamed(_conv_forward_fused, suffix), inputs="x w2 bias"),
        kernel(renamed(_conv_forward_fused, suffix + "_parallel"), inputs="x w2 bias", parallel=True),
    )


_fused_tiled = _fused_kernels(small_gemm, "_tiled")
PAIRS.append(_fused_tiled)


def _fused_fallback(x, w2, bias, has_bias, kh, kw, sh, sw, ph, pw, dh, dw, ho, wo, rows, work, out):
    """The fused forward's result, bit for bit, from kernels a training step compiles anyway.

    Image by image: the serial im2col (the backward pass's) and the plain
    small product (``_gemm._gemm_small_plain``: per output, the K products
    summed in order from zero, as the tiled kernel in the fused loop), then
    + bias. Runs while the fused kernel compiles in the background, so a
    first step does not compile a second, fused copy of the lowering."""
    B, O, K = x.shape[0], w2.shape[0], w2.shape[1]
    P = ho * wo
    if B == 0 or O == 0 or P == 0:
        return
    if K == 0:  # no inputs: the fused kernel's empty sum, then + bias
        out[...] = 0
        if has_bias:
            out += bias.reshape(1, O, 1, 1)
        return
    cols = _scratch("cols", (K, P), x.dtype)
    for b in range(B):
        _im2col[0](x, b, 1, kh, kw, sh, sw, ph, pw, dh, dw, ho, wo, cols)
        ob = out[b].reshape(O, P)
        _gemm_small_plain(w2, cols, False, False, ob, bias, False, 0)
        if has_bias:  # per output row (the product's own bias is per column), added once as in the fused loop
            ob += bias[:, None]


def _install_fused(k):
    def install(fast):
        pair = list(_conv_forward_fused)
        pair[k] = fast
        globals()["_conv_forward_fused"] = tuple(pair)

    return install


#: [parallel]: the tiled fused forward, or the unfused plain one (same results) while it compiles.
_conv_forward_fused = tuple(Deferred(_fused_tiled[k], _fused_fallback, _install_fused(k)) for k in (0, 1))


_tls = threading.local()
#: Largest scratch array kept between calls (per name and calling thread).
_SCRATCH_KEEP_BYTES = 1 << 24


def _scratch(name, shape, dtype):
    """An uninitialised scratch array of ``shape``, kept per calling thread under ``name`` and reused.

    Scratch allocated per call (hundreds of kB to a few MB) let the
    allocator hand the memory back to the OS and fault it in again at the
    next call: a W5 training step took 169k page faults in 60 steps instead
    of 47k, and its backward pass ran at half speed."""
    need = 1
    for d in shape:
        need *= d
    if need * np.dtype(dtype).itemsize > _SCRATCH_KEEP_BYTES:
        return np.empty(shape, dtype)  # not kept: too much memory to hold between calls
    cache = getattr(_tls, "bufs", None)
    if cache is None:
        cache = _tls.bufs = {}
    buf = cache.get(name)
    if buf is None or buf.dtype != dtype or buf.size < need:
        buf = cache[name] = np.empty(max(need, 1), dtype)
    return buf[:need].reshape(shape)


def conv2d_forward(x, weight, bias, stride, padding, dilation, out):
    """y[b,o,i,j] = bias[o] + Σ_{c,u,v} w[o,c,u,v]·xp[b,c,i·sH+u·dH,j·sW+v·dW] (lowering + GEMM)."""
    B = x.shape[0]
    O, C, kh, kw = weight.shape
    ho, wo = out.shape[2], out.shape[3]
    K, P = C * kh * kw, ho * wo
    (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
    w2 = weight.reshape(O, K)
    has_bias = bias is not None
    if _gemm_mode() != "blas":
        # lowering and products fused, band by band, on the own GEMM (the
        # chunked path below, BLAS between parallel loops, is set_gemm("blas"))
        rows = max(1, min(ho, _BAND_ELEMENTS // (K * wo)))
        par = B * K * P >= PARALLEL_MIN_ELEMENTS and threads() > 1
        work = _scratch("lowered", (numba.get_num_threads() if par else 1, K * rows * wo), x.dtype)
        _conv_forward_fused[par](
            x,
            w2,
            bias if has_bias else _NO_BIAS[x.dtype],
            has_bias,
            kh,
            kw,
            sh,
            sw,
            ph,
            pw,
            dh,
            dw,
            ho,
            wo,
            rows,
            work,
            out,
        )
        return out
    nb = _chunk(B, K, P)
    cols = _scratch("cols", (K, nb * P), x.dtype)
    y = _scratch("y", (O, nb * P), x.dtype)
    bias_ = bias if has_bias else w2[:, 0]
    for b0 in range(0, B, nb):
        n = min(nb, B - b0)
        par = n * K * P >= PARALLEL_MIN_ELEMENTS and threads() > 1
        _im2col[par](x, b0, n, kh, kw, sh, sw, ph, pw, dh, dw, ho, wo, cols)
        if n == 1:
            dst = out[b0].reshape(O, P)
            np.matmul(w2, cols[:, :P], out=dst)
            if has_bias:
                dst += bias[:, None]
        else:
            yc = y[:, : n * P]
            np.matmul(w2, cols[:, : n * P], out=yc)
            _scatter[par](yc, bias_, has_bias, b0, n, out)
    return out


def conv2d_backward(grad_out, x, weight, stride, padding, dilation, grad_input, grad_weight, grad_bias):
    """dW = Σ_b G_b·cols_bᵀ, db = Σ G, dx = col2im(Wᵀ·G_b) (chunked, GEMMs outside parallel loops)."""
    B = x.shape[0]
    O, C, kh, kw = weight.shape
    ho, wo = grad_out.shape[2], grad_out.shape[3]
    K, P = C * kh * kw, ho * wo
    (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
    w2 = weight.reshape(O, K)
    gw2 = grad_weight.reshape(O, K)
    nb = _chunk(B, K, P)
    cols = _scratch("cols", (K, nb * P), x.dtype)
    g = _scratch("y", (O, nb * P), x.dtype) if nb > 1 else None
    dcols = _scratch("dcols", (K, nb * P), x.dtype) if grad_input is not None else None
    tmp = _scratch("dw", (O, K), x.dtype) if B > nb else None
    if B == 0:  # no images (a layer may call this directly): dW is a sum over nothing
        gw2[...] = 0
    for b0 in range(0, B, nb):
        n = min(nb, B - b0)
        par = n * K * P >= PARALLEL_MIN_ELEMENTS and threads() > 1
        _im2col[par](x, b0, n, kh, kw, sh, sw, ph, pw, dh, dw, ho, wo, cols)
        c = cols[:, : n * P]
        if n == 1:
            gc = grad_out[b0].reshape(O, P)
        else:
            gc = g[:, : n * P]
            _gather[par](grad_out, b0, n, gc)
        if b0 == 0:
            np.matmul(gc, c.T, out=gw2)
        else:
            np.matmul(gc, c.T, out=tmp)
            gw2 += tmp
        if dcols is not None:
            dc = dcols[:, : n * P]
            np.matmul(w2.T, gc, out=dc)
            _col2im[par](dc, b0, n, kh, kw, sh, sw, ph, pw, dh, dw, ho, wo, grad_input)
    if grad_bias is not None:
        np.sum(grad_out.reshape(B, O, P), axis=(0, 2), out=grad_bias)
    return grad_input, grad_weight, grad_bias


@jit_inline
def _window(i, s, p, k, n):
    """(start, lo, hi) of output i's pooling window along one axis: taps lo:hi of k lie in the n inputs."""
    start = i * s - p
    return start, max(0, -start), min(k, n - start)


@variants(inputs="x")
def _max_pool_fwd(x, kh, kw, sh, sw, ph, pw, out, indices):
    """y = max over the window (-inf padding), first maximum wins, NaN wins."""
    B, C, H, W = x.shape
    ho, wo = out.shape[2], out.shape[3]
    for r in prange(B * C):
        b = r // C
        c = r - b * C
        src = x[b, c]
        dst = out[b, c]
        idx = indices[b, c]
        for i in range(ho):
            h0, ulo, uhi = _window(i, sh, ph, kh, H)
            for j in range(wo):
                w0, vlo, vhi = _window(j, sw, pw, kw, W)
                best = src[h0 + ulo, w0 + vlo]
                arg = (h0 + ulo) * W + w0 + vlo
                for u in range(ulo, uhi):
                    for v in range(vlo, vhi):
                        val = src[h0 + u, w0 + v]
                        # strict > keeps the first maximum; a NaN replaces a number, not a NaN.
                        # Selects, not branches: on real data the comparison is a coin flip.
                        take = (val > best) | ((val != val) & (best == best))
                        best = val if take else best
                        arg = (h0 + u) * W + w0 + v if take else arg
                dst[i, j] = best
                idx[i, j] = arg


@variants(inputs="x")
def _max_pool_2x2(x, out, indices):
    """2×2, stride 2, unpadded: a tournament (a|b, c|d, winners), strict > keeps the first max."""
    B, C, H, W = x.shape
    ho, wo = out.shape[2], out.shape[3]
    # flat views: each row below is a slice at a computed offset
    xf = _raw(x)
    of = _raw(out)
    jf = _raw(indices)
    for r in prange(B * C):
        s0 = r * H * W
        d0 = r * ho * wo
        for i in range(ho):
            # rows indexed by range() variables (no wrap-around code): LLVM
            # turns the pairs into interleaved vector loads
            base0 = (2 * i) * W
            base1 = base0 + W
            r0 = xf[s0 + base0 : s0 + base0 + W]
            r1 = xf[s0 + base1 : s0 + base1 + W]
            drow = of[d0 + i * wo : d0 + (i + 1) * wo]
            irow = jf[d0 + i * wo : d0 + (i + 1) * wo]
            for j in range(wo):
                a_ = r0[2 * j]
                b_ = r0[2 * j + 1]
                c_ = r1[2 * j]
                d_ = r1[2 * j + 1]
                # No branches: "&" instead of a short-circuit "and", and the
                # index picked by arithmetic, not a select, which the code
                # generator turns into a conditional jump in the loop's
                # scalar remainder (6 of a 14-wide row's outputs),
                # mispredicted half the time on real data: W5's first pool
                # took 0.66 ms, now ~0.25
                t = (not (b_ <= a_)) & (a_ == a_)
                a_ = b_ if t else a_
                ia = base0 + 2 * j + np.int64(t)
                t = (not (d_ <= c_)) & (c_ == c_)
                c_ = d_ if t else c_
                ic = base1 + 2 * j + np.int64(t)
                t = (not (c_ <= a_)) & (a_ == a_)
                drow[j] = c_ if t else a_
                irow[j] = ia + (ic - ia) * np.int64(t)


@variants(inputs="grad_out indices")
def _max_pool_bwd(grad_out, indices, grad_input):
    """dx[plane][indices] += dy (each plane by one thread, so no races); returns the count of bad indices.

    An index outside the plane is never used (the caller raises): this
    kernel checks what it indexes with, whoever called it.
    """
    B, C, H, W = grad_input.shape
    hw = np.uint64(H * W)
    n_out = grad_out.shape[2] * grad_out.shape[3]
    bad = 0
    for r in prange(B * C):
        b = r // C
        c = r - b * C
        plane = grad_input[b, c].reshape(H * W)
        plane[:] = 0
        g = grad_out[b, c].reshape(n_out)
        idx = indices[b, c].reshape(n_out)
        for p in range(n_out):
            k = idx[p]
            if np.uint64(k) < hw:  # one unsigned compare: negative indices are huge
                plane[k] += g[p]
            else:
                bad += 1
    return bad


# ordered_sums: each window summed in the source's order in both compilations (see _jit.variants)
@variants(inputs="x", ordered_sums=True)
def _avg_pool_fwd(x, kh, kw, sh, sw, ph, pw, count_include_pad, out):
    """y = Σ window / n, n = kH·kW or the number of real pixels."""
    B, C, H, W = x.shape
    ho, wo = out.shape[2], out.shape[3]
    zero = out.dtype.type(0)
    for r in prange(B * C):
        b = r // C
        c = r - b * C
        src = x[b, c]
        dst = out[b, c]
        for i in range(ho):
            h0, ulo, uhi = _window(i, sh, ph, kh, H)
            for j in range(wo):
                w0, vlo, vhi = _window(j, sw, pw, kw, W)
                s = zero  # not src[0, 0] * 0: a NaN or inf there would spread over the plane
                for u in range(ulo, uhi):
                    for v in range(vlo, vhi):
                        s += src[h0 + u, w0 + v]
                n = kh * kw if count_include_pad else (uhi - ulo) * (vhi - vlo)
                dst[i, j] = s / n


@variants(inputs="grad_out")
def _avg_pool_bwd(grad_out, kh, kw, sh, sw, ph, pw, count_include_pad, grad_input):
    """dx[window] += dy / n for every output."""
    B, C, H, W = grad_input.shape
    ho, wo = grad_out.shape[2], grad_out.shape[3]
    for r in prange(B * C):
        b = r // C
        c = r - b * C
        plane = grad_input[b, c]
        plane[:, :] = 0
        g = grad_out[b, c]
        for i in range(ho):
            h0, ulo, uhi = _window(i, sh, ph, kh, H)
            for j in range(wo):
                w0, vlo, vhi = _window(j, sw, pw, kw, W)
                n = kh * kw if count_include_pad else (uhi - ulo) * (vhi - vlo)
                gv = g[i, j] / n
                for u in range(ulo, uhi):
                    for v in range(vlo, vhi):
                        plane[h0 + u, w0 + v] += gv


def max_pool2d_forward(x, kernel_size, stride, padding, out, indices):
    """y[b,c,i,j] = max_{u,v} xp[b,c,i·sH+u,j·sW+v]; indices = flat argmax (first max, NaN wins)."""
    par = x.size >= PARALLEL_MIN_ELEMENTS and threads() > 1
    if kernel_size == (2, 2) and stride == (2, 2) and padding == (0, 0):
        _max_pool_2x2[par](x, out, indices)
        return out, indices
    _max_pool_fwd[par](x, *kernel_size, *stride, *padding, out, indices)
    return out, indices


def max_pool2d_backward(grad_out, indices, grad_input):
    """dx[b,c].flat[indices[b,c,i,j]] += dy[b,c,i,j]."""
    fn = _max_pool_bwd[grad_input.size >= PARALLEL_MIN_ELEMENTS and threads() > 1]
    if fn(grad_out, indices, grad_input):
        raise ValueError(
            f"indices must lie in [0, {grad_input.shape[2] * grad_input.shape[3]}) for input shape {grad_input.shape}"
        )
    return grad_input


def avg_pool2d_forward(x, kernel_size, stride, padding, count_include_pad, out):
    """y[b,c,i,j] = Σ_{u,v} xp[b,c,i·sH+u,j·sW+v] / n."""
    fn = _avg_pool_fwd[x.size >= PARALLEL_MIN_ELEMENTS and threads() > 1]
    fn(x, *kernel_size, *stride, *padding, bool(count_include_pad), out)
    return out


def avg_pool2d_backward(grad_out, kernel_size, stride, padding, count_include_pad, grad_input):
    """dx[b,c,window(i,j)] += dy[b,c,i,j] / n."""
    fn = _avg_pool_bwd[grad_input.size >= PARALLEL_MIN_ELEMENTS and threads() > 1]
    fn(grad_out, *kernel_size, *stride, *padding, bool(count_include_pad), grad_input)
    return grad_input
