"""Small products for the Numba backend's own GEMM: register tiles, no packing of A.

For the layer sizes of small networks (up to ~10^6 multiply-adds: a 32-row
batch through a 64-128-10 MLP) the packed GEMM of :mod:`._gemm` spends more on
its packing buffers, its 12-row panels and its 32-column tiles than on the
arithmetic, and BLAS more on dispatch. This path reads A in place, reads B in
place when it is row-major, and otherwise copies it once into a row-major
panel (a transposed weight). Tiles are 8 rows by two vectors (16
accumulators), or by one vector for the last columns, so that a narrow output
wastes at most one partial vector instead of most of a 32-column tile. The
micro-kernel is the same ``@intrinsic`` as the packed GEMM's, instantiated for
these tile shapes; tiles over C's last rows or columns use its masked variant
(``_ukr_edge``), which reads and writes only their valid part, so no operand
is padded and no tile goes through scratch memory.

A second implementation, :func:`simple_gemm`, computes the same products
with the same bits (each element sums its K products in order with one
fused multiply-add each, from zero, then the same epilogue) in plain loops
that LLVM vectorises across a row of C: about 1.6 times slower, but it
compiles in a fraction of the time. It runs while the tiled kernel compiles
in the background on a fresh install (see ``_jit.Deferred``).

Everything here takes flat views without a reference count (``_gemm._raw``):
counting the arrays in and out of each call cost more than a small tile. For
the same reason the levels down to the row blocks are inlined into their
callers (``inline="always"``): each Numba call passes every array as seven
words and cost ~10 ns, a row block of 8 x 64 x 64 ~250 ns.
"""

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

from ... import _config
from ._gemm import PARALLEL_MIN_FLOPS, VBYTES, _act_tile, _raw, _transpose_block, _ukr, _ukr_edge
from ._jit import kernel, renamed

_OPTS = _config.NUMBA_JIT_OPTIONS

#: Largest volume M*N*K (multiply-adds) run here, on one thread: up to where the
#: packed GEMM would start using threads. Measured from
#: compiled code, 1 thread, this kernel / the packed one: 128^3 0.55 (x·Wᵀ 0.38),
#: 32x784x128 0.59 (0.41), 256^3 0.81 (0.77).
SMALL_MAX = PARALLEL_MIN_FLOPS
#: Tile rows (with two vectors of columns: 16 accumulators of the 32 registers).
SMR = 8
NV2 = 2
NV1 = 1


@njit(**_OPTS)
def _lanes(arr):
    return VBYTES // arr.itemsize


@njit(inline="always", **_OPTS)
def _tile(K, a, ao, ars, acs, pb, brs, c, ldc, i0, j0, mr, nr, first, bias, fuse_bias, relu, nv):
    """The tile of C at rows i0:i0+mr, columns j0:j0+nr, nv vectors wide (nv a literal).

    Whole tiles use the micro-kernel, tiles over C's last rows or columns its
    masked variant (only lanes < nlast of the last vector)."""
    w = _lanes(c)
    if mr == SMR and nr == nv * w:
        _ukr(K, a, ao, ars, acs, pb, j0, brs, c, i0 * ldc + j0, ldc, first, bias, j0, fuse_bias, relu, SMR, nv)
    else:
        nlast = nr - (nv - 1) * w
        _ukr_edge(
            K, a, ao, ars, acs, pb, j0, brs, c, i0 * ldc + j0, ldc, first, bias, j0, fuse_bias, relu, SMR, nv, mr, nlast
        )


@njit(inline="always", **_OPTS)
def _row_block(K, a, ao, ars, acs, pb, brs, N, c, ldc, i0, mr, bias, has_bias, act, acc):
    """C rows i0:i0+mr (mr <= SMR) over all columns; A[i, p] = a[ao + i*ars + p*acs], B[p, j] = pb[p*brs + j].

    Tiles go straight from the registers into C with bias and ReLU applied on
    the way (or added to C when acc); edge tiles (fewer rows, or a last
    vector past N) use the masked micro-kernel, which touches only the valid
    part of B, bias and C."""
    w = _lanes(c)
    first = not acc
    fuse_bias = has_bias and not acc
    relu = act == 1 and not acc
    sig_tanh = act >= 2 and not acc
    j0 = 0
    while j0 < N:
        # two vectors of columns while both hold columns, then one
        two = j0 + w < N
        ncols = 2 * w if two else w
        nr = min(ncols, N - j0)
        # the vector count as a literal: the micro-kernel is generated for it
        if two:
            _tile(K, a, ao, ars, acs, pb, brs, c, ldc, i0, j0, mr, nr, first, bias, fuse_bias, relu, NV2)
        else:
            _tile(K, a, ao, ars, acs, pb, brs, c, ldc, i0, j0, mr, nr, first, bias, fuse_bias, relu, NV1)
        if sig_tanh:
            _act_tile(c, ldc, i0, j0, mr, nr, act)
        j0 += ncols


@njit(inline="always", **_OPTS)
def _all_rows(M, N, K, a, rsa, csa, pb, brs, c, ldc, bias, has_bias, act, acc):
    """Every row block of C, B read from pb with row stride brs."""
    for i0 in range(0, M, SMR):
        _row_block(K, a, i0 * rsa, rsa, csa, pb, brs, N, c, ldc, i0, min(SMR, M - i0), bias, has_bias, act, acc)


@njit(inline="always", **_OPTS)
def small_gemm(M, N, K, a, rsa, csa, b, rsb, csb, c, ldc, bias, has_bias, act):
    """C = act(op(A)·op(B) + bias) for small products (K >= 1), flat arrays with element strides as in gemm_flat."""
    _tiled(M, N, K, a, rsa, csa, b, rsb, csb, c, ldc, bias, has_bias, act, False)


@njit(**_OPTS)
def _rows(M, N, K, a, rsa, csa, pb, brs, c, ldc, bias, has_bias, act, acc):
    """_all_rows with a unit stride of A passed as the constant 1 where it is one.

    Numba compiles a call with a literal argument as its own specialisation, so
    the micro-kernel's address arithmetic along a row (or column) of A
    simplifies; with both strides as run-time values a 128x128x10 product
    took 5.2 us against 3.8 us."""
    if csa == 1:
        _all_rows(M, N, K, a, rsa, 1, pb, brs, c, ldc, bias, has_bias, act, acc)
    elif rsa == 1:
        _all_rows(M, N, K, a, 1, csa, pb, brs, c, ldc, bias, has_bias, act, acc)
    else:
        _all_rows(M, N, K, a, rsa, csa, pb, brs, c, ldc, bias, has_bias, act, acc)


@njit(inline="always", **_OPTS)
def _tiled(M, N, K, a, rsa, csa, b, rsb, csb, c, ldc, bias, has_bias, act, acc):
    """small_gemm, or C += op(A)·op(B) when acc."""
    if csb == 1:
        # row-major B is read in place (its last partial vector by masked loads)
        _rows(M, N, K, a, rsa, csa, b, rsb, c, ldc, bias, has_bias, act, acc)
    else:
        # otherwise one row-major (K, nb) copy, rows a whole number of vectors apart
        w = _lanes(c)
        nb = (N + w - 1) // w * w
        pb = np.empty(K * nb, c.dtype)
        _pack_b(N, K, b, rsb, csb, pb, nb)
        _rows(M, N, K, a, rsa, csa, pb, nb, c, ldc, bias, has_bias, act, acc)


@njit(**_OPTS)
def _pack_b(N, K, b, rsb, csb, pb, nb):
    """pb[p*nb + j] = B[p, j] = b[p*rsb + j*csb] for a B with non-unit column stride."""
    if rsb == 1:
        # transposed B (a weight read as Wᵀ): whole blocks of lanes x lanes
        # by in-register transposes (element by element, every store of a
        # column of pb missed L1: 32x784x128 spent 260 us there against 24 us
        # of products)
        w = _lanes(pb)
        jw = N // w * w
        kw = K // w * w
        for j0 in range(0, jw, w):
            for p0 in range(0, kw, w):
                _transpose_block(b, j0 * csb + p0, csb, pb, p0 * nb + j0, nb)
        # the last (< w) columns: each a contiguous stored row of B
        for j in range(jw, N):
            src = b[j * csb : j * csb + K]
            col = pb[j:]
            for p in range(K):
                col[p * nb] = src[p]
        # the last (< w) rows of the blocked columns
        for p in range(kw, K):
            dst = pb[p * nb : p * nb + jw]
            src = b[p:]
            for j in range(jw):
                dst[j] = src[j * csb]
    else:
        for p in range(K):
            for j in range(N):
                pb[p * nb + j] = b[p * rsb + j * csb]


# -- the same products in plain loops (same bits, a fraction of the compilation) --


@intrinsic
def _fma(typingctx, a, b, c):
    """a·b + c rounded once (llvm.fma), as the micro-kernel computes it."""
    if not (isinstance(a, types.Float) and a == b == c):
        return None

    def codegen(context, builder, sig, args):
        ty = context.get_value_type(sig.args[0])
        fn = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(ty, [ty, ty, ty]), f"llvm.fma.f{sig.args[0].bitwidth}"
        )
        return builder.call(fn, args)

    return a(a, a, a), codegen


@njit(**_OPTS)
def simple_tiled(M, N, K, a, rsa, csa, b, rsb, csb, c, ldc, bias, has_bias, act, acc):
    """_tiled's result, bit for bit, from plain loops: C = act(op(A)·op(B) + bias), or C += op(A)·op(B) when acc.

    Per element of C, as the micro-kernel: the K products summed in order by
    fused multiply-adds from zero, then + C (acc) or + bias, then ReLU
    (act 1). Sigmoid and tanh (act 2, 3) are not applied here: the caller
    runs ``_gemm._act_tile`` over C afterwards, as the tiled kernel does
    tile by tile."""
    if csb == 1:
        pb = b
        ldb = rsb
    else:
        pb = np.empty(K * N, c.dtype)
        ldb = N
        for j in range(N):
            for p in range(K):
                pb[p * N + j] = b[p * rsb + j * csb]
    zero = c.dtype.type(0)
    row = np.empty(N, c.dtype)
    for i in range(M):
        for j in range(N):
            row[j] = zero
        for p in range(K):
            aip = a[i * rsa + p * csa]
            brow = pb[p * ldb : p * ldb + N]
            for j in range(N):
                row[j] = _fma(aip, brow[j], row[j])
        crow = c[i * ldc : i * ldc + N]
        if acc:
            for j in range(N):
                crow[j] = row[j] + crow[j]
        else:
            if has_bias:
                for j in range(N):
                    row[j] = row[j] + bias[j]
            if act == 1:
                for j in range(N):
                    v = row[j]
                    crow[j] = v if not (v <= zero) else zero
            else:
                for j in range(N):
                    crow[j] = row[j]


@intrinsic
def _opaque(typingctx, x):
    """x, typed as a run-time value: a constant argument would make Numba compile the callee again for it."""
    return types.unliteral(x)(x), lambda context, builder, sig, args: args[0]


@njit(inline="always", **_OPTS)
def _plain(M, N, K, a, rsa, csa, b, rsb, csb, c, ldc, bias, has_bias, act, acc):
    """:func:`simple_tiled` with every scalar as a run-time value (the arguments of ``_tiled``).

    Constants passed on would make Numba compile simple_tiled again for each
    of them: this way all plain products share one compilation of it per
    dtype (its speed is not the point)."""
    simple_tiled(
        _opaque(M),
        _opaque(N),
        _opaque(K),
        a,
        _opaque(rsa),
        _opaque(csa),
        b,
        _opaque(rsb),
        _opaque(csb),
        c,
        _opaque(ldc),
        bias,
        _opaque(has_bias),
        _opaque(act),
        _opaque(acc),
    )


@njit(inline="always", **_OPTS)
def simple_gemm(M, N, K, a, rsa, csa, b, rsb, csb, c, ldc, bias, has_bias, act):
    """small_gemm's result from :func:`simple_tiled` (act 0 or 1)."""
    _plain(M, N, K, a, rsa, csa, b, rsb, csb, c, ldc, bias, has_bias, act, False)


# -- 2-D entry points for kernels built on these products (the recurrent time loops) --


@intrinsic
def _keep(typingctx, *arrays):
    """Nothing, but a use of the arrays: they stay referenced until this point.

    The entry points below are inlined into their callers and read their
    operands through :func:`_gemm._raw`, which holds no reference. An operand
    made for the call (``np.ascontiguousarray(w.T)``) would otherwise be
    released after its last use in Numba's IR, the ``_raw`` view, and the
    product would read freed memory (wrong results once the allocator reused it).
    """

    def codegen(context, builder, sig, args):
        return context.get_dummy_value()

    return types.none(types.StarArgTuple(arrays)), codegen


def _products(product, suffix):
    """(acc_nn, acc_tn, mul_nt, mul_nt_bias) computed by ``product`` (``_tiled`` or ``_plain``)."""

    def acc_nn(A, Bm, C):
        """C (M, N) += A (M, K)·Bm (K, N), C-contiguous 2-D arrays."""
        M, K = A.shape
        N = Bm.shape[1]
        if M and N and K:
            cf = _raw(C)
            # (C's view stands in for the unused bias)
            product(M, N, K, _raw(A), K, 1, _raw(Bm), N, 1, cf, N, cf, False, 0, True)
            _keep(A, Bm, C)

    def acc_tn(A, Bm, C):
        """C (M, N) += Aᵀ·Bm with A (K, M), Bm (K, N), C-contiguous 2-D arrays."""
        K, M = A.shape
        N = Bm.shape[1]
        if M and N and K:
            cf = _raw(C)
            product(M, N, K, _raw(A), 1, M, _raw(Bm), N, 1, cf, N, cf, False, 0, True)
            _keep(A, Bm, C)

    def mul_nt(A, Bn, C):
        """C (M, N) = A (M, K)·Bn (N, K)ᵀ, C-contiguous 2-D arrays."""
        M, K = A.shape
        N = Bn.shape[0]
        if K == 0:
            C[:] = 0
        elif M and N:
            cf = _raw(C)
            product(M, N, K, _raw(A), K, 1, _raw(Bn), 1, K, cf, N, cf, False, 0, False)
            _keep(A, Bn, C)

    def mul_nt_bias(A, Bn, C, bias, has_bias, relu):
        """C = A·Bnᵀ + bias (when has_bias), then max(·, 0) (when relu), applied to each tile in registers.

        The bits of mul_nt followed by a pass adding the bias to every row and
        one applying ReLU (NaN kept), without the two passes over C."""
        M, K = A.shape
        N = Bn.shape[0]
        if K == 0:
            zero = C.dtype.type(0)
            for i in range(M):
                for j in range(N):
                    v = zero + bias[j] if has_bias else zero
                    C[i, j] = v if not (relu and v <= 0) else zero
        elif M and N:
            cf = _raw(C)
            product(M, N, K, _raw(A), K, 1, _raw(Bn), 1, K, cf, N, _raw(bias), has_bias, 1 if relu else 0, False)
            _keep(A, Bn, C, bias)

    # inline: a kernel that calls them takes their few lines in, where a compilation of their own
    # (one per read-only/writeable typing of the operands) was linked into every caller and optimised
    # there again; kernel(): from Python, a disk-cache key that is the same in every process
    return tuple(kernel(renamed(fn, suffix), inline=True) for fn in (acc_nn, acc_tn, mul_nt, mul_nt_bias))


acc_nn, acc_tn, mul_nt, mul_nt_bias = _products(_tiled, "")
#: The same products from plain loops (same bits, a fraction of the compilation).
acc_nn_simple, acc_tn_simple, mul_nt_simple, mul_nt_bias_simple = _products(_plain, "_simple")
