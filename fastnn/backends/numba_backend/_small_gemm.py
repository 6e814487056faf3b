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
from ._gemm import VBYTES, _ukr

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
def _store(tile, ncols, c, ldc, i0, j0, mr, nr, bias, has_bias, act, acc):
    """C[i0:i0+mr, j0:j0+nr] = act(tile + bias), or C += tile when acc (no bias, no activation)."""
    for i in range(mr):
        r = (i0 + i) * ldc + j0
        t = i * ncols
        if acc:
            for j in range(nr):
                c[r + j] += tile[t + j]
            continue
        if has_bias:
            for j in range(nr):
                c[r + j] = tile[t + j] + bias[j0 + j]
        else:
            for j in range(nr):
                c[r + j] = tile[t + j]
        if act == 1:
            for j in range(nr):
                v = c[r + j]
                c[r + j] = v if not (v <= 0) else v * 0   # NaN passes through
        elif act == 2:
            for j in range(nr):
                c[r + j] = 1 / (1 + np.exp(-c[r + j]))
        elif act == 3:
            for j in range(nr):
                c[r + j] = np.tanh(c[r + j])


@njit(**_OPTS)
def _row_block(K, a, ao, ars, acs, pb, brs, nb, N, tile, c, ldc, i0, mr, bias, has_bias, act, acc):
    """C rows i0:i0+mr (mr <= SMR) over all columns; A[i, p] = a[ao + i*ars + p*acs], B[p, j] = pb[p*brs + j]."""
    w = _lanes(c)
    j0 = 0
    while j0 + 2 * w <= nb:
        _ukr(K, a, ao, ars, acs, pb, j0, brs, tile, SMR, NV2)
        _store(tile, 2 * w, c, ldc, i0, j0, mr, min(2 * w, N - j0), bias, has_bias, act, acc)
        j0 += 2 * w
    if j0 < nb:
        _ukr(K, a, ao, ars, acs, pb, j0, brs, tile, SMR, NV1)
        _store(tile, w, c, ldc, i0, j0, mr, N - j0, bias, has_bias, act, acc)


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
        _all_rows(M, N, K, a, rsa, csa, b, rsb, nb, c, ldc, bias, has_bias, act, acc, pa, tile)
        return
    pb = scratch[:nbuf]
    if csb == 1:
        for p in range(K):
            for j in range(N):
                pb[p * nb + j] = b[p * rsb + j]
            for j in range(N, nb):
                pb[p * nb + j] = 0
    else:
        # transposed B (a weight read as Wᵀ): each stored row read once, contiguously
        for p in range(K):
            for j in range(N, nb):
                pb[p * nb + j] = 0
        for j in range(N):
            for p in range(K):
                pb[p * nb + j] = b[p * rsb + j * csb]
    _all_rows(M, N, K, a, rsa, csa, pb, nb, nb, c, ldc, bias, has_bias, act, acc, pa, tile)


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
