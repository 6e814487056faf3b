"""Small products for the Numba backend's own GEMM: register tiles, no packing of A.

For the layer sizes of small networks (up to ~10^6 multiply-adds: a 32-row
batch through a 64-128-10 MLP) the packed GEMM of :mod:`._gemm` spends more on
its packing buffers, its 12-row panels and its 32-column tiles than on the
arithmetic, and BLAS more on dispatch. This path reads A in place, reads B in
place when it is row-major with whole vectors of columns, and otherwise copies
it once into a zero-padded row-major panel (a transposed weight, a 10-column
output layer). Tiles are 8 rows by two vectors (16 accumulators), or by one
vector for the last columns, so that a narrow output wastes at most one
partial vector instead of most of a 32-column tile. The micro-kernel is the
same ``@intrinsic`` as the packed GEMM's, instantiated for these tile shapes.
"""

import numpy as np
from numba import njit

from ... import _config
from ._gemm import VBYTES, _act_tile, _store_tile, _ukr

_OPTS = _config.NUMBA_JIT_OPTIONS

#: Largest volume M*N*K (multiply-adds) run here (one thread; fastnn.gemm.SMALL_KERNEL_MAX).
SMALL_MAX = 1 << 20
#: Tile rows (with two vectors of columns: 16 accumulators of the 32 registers).
SMR = 8
NV2 = 2
NV1 = 1


@njit(**_OPTS)
def _lanes(arr):
    return VBYTES // arr.itemsize


@njit(**_OPTS)
def _row_block(K, a, ao, ars, acs, pb, brs, nb, N, tile, c, ldc, i0, mr, bias, has_bias, act, acc):
    """C rows i0:i0+mr (mr <= SMR) over all columns; A[i, p] = a[ao + i*ars + p*acs], B[p, j] = pb[p*brs + j].

    Whole tiles go straight from the registers into C with bias and ReLU
    applied on the way (or added to C when acc); edge tiles (fewer rows, or
    columns past N) go through the scratch tile."""
    w = _lanes(c)
    first = not acc
    fuse_bias = has_bias and not acc
    relu = act == 1 and not acc
    sig_tanh = act >= 2 and not acc
    j0 = 0
    while j0 < nb:
        # two vectors of columns while they fit, then one
        two = j0 + 2 * w <= nb
        ncols = 2 * w if two else w
        nr = min(ncols, N - j0)
        if mr == SMR and nr == ncols:
            if two:
                _ukr(K, a, ao, ars, acs, pb, j0, brs, c, i0 * ldc + j0, ldc, first, bias, j0, fuse_bias, relu,
                     SMR, NV2)
            else:
                _ukr(K, a, ao, ars, acs, pb, j0, brs, c, i0 * ldc + j0, ldc, first, bias, j0, fuse_bias, relu,
                     SMR, NV1)
        else:
            if two:
                _ukr(K, a, ao, ars, acs, pb, j0, brs, tile, 0, ncols, True, bias, 0, False, False, SMR, NV2)
            else:
                _ukr(K, a, ao, ars, acs, pb, j0, brs, tile, 0, ncols, True, bias, 0, False, False, SMR, NV1)
            _store_tile(tile, ncols, c, ldc, i0, j0, mr, nr, first, bias, fuse_bias, relu)
        if sig_tanh:
            _act_tile(c, ldc, i0, j0, mr, nr, act)
        j0 += ncols


@njit(**_OPTS)
def _all_rows(M, N, K, a, rsa, csa, pb, brs, nb, c, ldc, bias, has_bias, act, acc, pa, tile):
    """Every row block of C, B read from pb with row stride brs (nb columns, zero-padded past N)."""
    m8 = M // SMR * SMR
    for i0 in range(0, m8, SMR):
        _row_block(K, a, i0 * rsa, rsa, csa, pb, brs, nb, N, tile, c, ldc, i0, SMR, bias, has_bias, act, acc)
    rest = M - m8
    if rest:
        # the last rows, copied into an 8-row panel (pa[p*SMR + i]) padded with zeros
        for p in range(K):
            for i in range(SMR):
                pa[p * SMR + i] = a[(m8 + i) * rsa + p * csa] if i < rest else a[0] * 0
        _row_block(K, pa, 0, 1, SMR, pb, brs, nb, N, tile, c, ldc, m8, rest, bias, has_bias, act, acc)


@njit(**_OPTS)
def small_gemm(M, N, K, a, rsa, csa, b, rsb, csb, c, ldc, bias, has_bias, act):
    """C = act(op(A)·op(B) + bias) for small products (K >= 1), flat arrays with element strides as in gemm_flat."""
    _tiled(M, N, K, a, rsa, csa, b, rsb, csb, c, ldc, bias, has_bias, act, False)


@njit(**_OPTS)
def _rows(M, N, K, a, rsa, csa, pb, brs, nb, c, ldc, bias, has_bias, act, acc, pa, tile):
    """_all_rows with a unit stride of A passed as the constant 1 where it is one.

    Numba compiles a call with a literal argument as its own specialisation, so
    the micro-kernel's address arithmetic along a row (or column) of A
    simplifies; with both strides as run-time values a 128x128x10 product
    took 5.2 us against 3.8 us."""
    if csa == 1:
        _all_rows(M, N, K, a, rsa, 1, pb, brs, nb, c, ldc, bias, has_bias, act, acc, pa, tile)
    elif rsa == 1:
        _all_rows(M, N, K, a, 1, csa, pb, brs, nb, c, ldc, bias, has_bias, act, acc, pa, tile)
    else:
        _all_rows(M, N, K, a, rsa, csa, pb, brs, nb, c, ldc, bias, has_bias, act, acc, pa, tile)


@njit(**_OPTS)
def _tiled(M, N, K, a, rsa, csa, b, rsb, csb, c, ldc, bias, has_bias, act, acc):
    """small_gemm, or C += op(A)·op(B) when acc."""
    w = _lanes(c)
    nb = (N + w - 1) // w * w
    # B in place when row-major with whole vectors, else one zero-padded (K, nb) copy
    in_place = csb == 1 and nb == N
    nbuf = 0 if in_place else K * nb
    scratch = np.empty(nbuf + SMR * K + SMR * 2 * w, c.dtype)
    pa = scratch[nbuf:nbuf + SMR * K]
    tile = scratch[nbuf + SMR * K:]
    if in_place:
        _rows(M, N, K, a, rsa, csa, b, rsb, nb, c, ldc, bias, has_bias, act, acc, pa, tile)
        return
    pb = scratch[:nbuf]
    # (row views below: range() indices are >= 0, so the copies vectorise)
    if csb == 1:
        for p in range(K):
            dst = pb[p * nb:(p + 1) * nb]
            src = b[p * rsb:p * rsb + N]
            for j in range(N):
                dst[j] = src[j]
            for j in range(N, nb):
                dst[j] = 0
    else:
        for p in range(K):
            dst = pb[p * nb:(p + 1) * nb]
            for j in range(N, nb):
                dst[j] = 0
        if rsb == 1:
            # transposed B (a weight read as Wᵀ): each stored row read once, contiguously
            for j in range(N):
                src = b[j * csb:j * csb + K]
                col = pb[j:]
                for p in range(K):
                    col[p * nb] = src[p]
        else:
            for p in range(K):
                for j in range(N):
                    pb[p * nb + j] = b[p * rsb + j * csb]
    _rows(M, N, K, a, rsa, csa, pb, nb, nb, c, ldc, bias, has_bias, act, acc, pa, tile)


# -- 2-D entry points for kernels built on these products (the recurrent time loops) --

@njit(**_OPTS)
def acc_nn(A, Bm, C):
    """C (M, N) += A (M, K)·Bm (K, N), C-contiguous 2-D arrays."""
    M, K = A.shape
    N = Bm.shape[1]
    if M and N and K:
        _tiled(M, N, K, A.reshape(-1), K, 1, Bm.reshape(-1), N, 1, C.reshape(-1), N, np.zeros(1, C.dtype),
               False, 0, True)


@njit(**_OPTS)
def acc_tn(A, Bm, C):
    """C (M, N) += Aᵀ·Bm with A (K, M), Bm (K, N), C-contiguous 2-D arrays."""
    K, M = A.shape
    N = Bm.shape[1]
    if M and N and K:
        _tiled(M, N, K, A.reshape(-1), 1, M, Bm.reshape(-1), N, 1, C.reshape(-1), N, np.zeros(1, C.dtype),
               False, 0, True)


@njit(**_OPTS)
def mul_nt(A, Bn, C):
    """C (M, N) = A (M, K)·Bn (N, K)ᵀ, C-contiguous 2-D arrays."""
    M, K = A.shape
    N = Bn.shape[0]
    if K == 0:
        C[:] = 0
    elif M and N:
        _tiled(M, N, K, A.reshape(-1), K, 1, Bn.reshape(-1), 1, K, C.reshape(-1), N, np.zeros(1, C.dtype),
               False, 0, False)
