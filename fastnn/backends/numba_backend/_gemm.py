"""fastnn's own GEMM for the Numba backend: BLIS-style packing, register-tile micro-kernel.

``C = act(op(A)·op(B) + bias)``. Layout of the work (as in BLIS): a KC x NC
block of op(B) is packed into NR-column panels, each MC x KC block of op(A)
into MR-row panels, and the micro-kernel multiplies one A panel by one B
panel with an MR x NR tile of accumulators that never leaves the vector
registers. The M blocks run in parallel.

LLVM does not keep a Numba array of accumulators in registers, and its
vectorisers either leave scalar phis alone or vectorise the wrong loop, so the
micro-kernel is written as a Numba ``@intrinsic`` that emits the vector loop
(``llvm.fma`` on MR x NV vector registers) directly; everything around it is
ordinary ``@njit`` code.
"""

import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic

from ... import _config

_OPTS = _config.NUMBA_JIT_OPTIONS


def _host_has_avx512() -> bool:
    try:
        import llvmlite.binding as ll
        feats = ll.get_host_cpu_features()
        return bool(feats.get("avx512f", False))
    except Exception:  # pragma: no cover - unknown host: assume 256-bit vectors
        return False


#: Vector register width the micro-kernel is written for (bytes).
VBYTES = 64 if _host_has_avx512() else 32
#: Register tile: MR rows x NV vectors (32 zmm or 16 ymm registers).
MR = 12 if VBYTES == 64 else 6
NV = 2
#: Cache blocking: a KC x NR panel of B stays in L1, an MC x KC block of A in L2.
KC = 256
MC = 96
NC = 1024
#: Below this many multiply-adds the product runs on one thread.
PARALLEL_MIN_FLOPS = 192 * 192 * 192
#: Threaded products give each thread one slab of C (no shared packed B: Numba's
#: parallel loops pay a barrier per prange, and with two threads the slabs
#: measured as fast or faster at n = 512 ... 2048).
#: Up to this many multiply-adds (one thread) the operands are read in place, not packed.
DIRECT_MAX_FLOPS = 128 * 128 * 128


@intrinsic
def _ukr(typingctx, kc, pa, oa, ars, acs, pb, ob, brs, tile, mr, nv):
    """tile[:MR*NR] = A·B over kc, A[i, p] = pa[oa + i*ars + p*acs], B[p, j] = pb[ob + p*brs + j], in registers.

    Packed panels are (ars, acs, brs) = (1, MR, NR); small products read the
    operands in place with their own strides."""
    if not (isinstance(mr, types.IntegerLiteral) and isinstance(nv, types.IntegerLiteral)):
        return None
    rows, nvec = mr.literal_value, nv.literal_value
    width = VBYTES // (pa.dtype.bitwidth // 8)
    ncols = nvec * width
    fma_name = "llvm.fma.v%d%s" % (width, "f32" if pa.dtype.bitwidth == 32 else "f64")

    def codegen(context, builder, sig, args):
        kc_v, pa_v, oa_v, ars_v, acs_v, pb_v, ob_v, brs_v, tile_v = args[:9]
        ety = context.get_value_type(sig.args[1].dtype)
        esize = context.get_abi_sizeof(ety)
        vty = ir.VectorType(ety, width)
        i64 = ir.IntType(64)
        a_data = context.make_array(sig.args[1])(context, builder, pa_v).data
        b_data = context.make_array(sig.args[5])(context, builder, pb_v).data
        t_data = context.make_array(sig.args[8])(context, builder, tile_v).data
        ars_v = context.cast(builder, ars_v, sig.args[3], types.int64)
        acs_v = context.cast(builder, acs_v, sig.args[4], types.int64)
        brs_v = context.cast(builder, brs_v, sig.args[7], types.int64)
        oa_v = context.cast(builder, oa_v, sig.args[2], types.int64)
        ob_v = context.cast(builder, ob_v, sig.args[6], types.int64)
        kc_v = context.cast(builder, kc_v, sig.args[0], types.int64)
        zero = ir.Constant(vty, [ir.Constant(ety, 0.0)] * width)
        # Allocas of vector type with constant indices: SROA turns them into
        # vector phis, i.e. registers.
        accs = [[cgutils.alloca_once_value(builder, zero) for _ in range(nvec)] for _ in range(rows)]
        fma = cgutils.get_or_insert_function(builder.module, ir.FunctionType(vty, [vty, vty, vty]), fma_name)
        splat_mask = ir.Constant(ir.VectorType(ir.IntType(32), width), [0] * width)
        with cgutils.for_range(builder, kc_v) as loop:
            p = loop.index
            bbase = builder.add(ob_v, builder.mul(p, brs_v))
            abase = builder.add(oa_v, builder.mul(p, acs_v))
            bvs = []
            for j in range(nvec):
                ptr = builder.gep(b_data, [builder.add(bbase, ir.Constant(i64, j * width))])
                bvs.append(builder.load(builder.bitcast(ptr, vty.as_pointer()), align=esize))
            for i in range(rows):
                av = builder.load(builder.gep(a_data, [builder.add(abase, builder.mul(ir.Constant(i64, i), ars_v))]))
                sv = builder.insert_element(ir.Constant(vty, ir.Undefined), av, ir.Constant(ir.IntType(32), 0))
                sv = builder.shuffle_vector(sv, ir.Constant(vty, ir.Undefined), splat_mask)
                for j in range(nvec):
                    builder.store(builder.call(fma, [sv, bvs[j], builder.load(accs[i][j])]), accs[i][j])
        for i in range(rows):
            for j in range(nvec):
                ptr = builder.gep(t_data, [ir.Constant(i64, i * ncols + j * width)])
                builder.store(builder.load(accs[i][j]), builder.bitcast(ptr, vty.as_pointer()), align=esize)
        return context.get_dummy_value()

    return types.none(kc, pa, oa, ars, acs, pb, ob, brs, tile, mr, nv), codegen


@njit(**_OPTS)
def _nr(arr):
    """Columns of the register tile for this dtype."""
    return NV * (VBYTES // arr.itemsize)


@njit(**_OPTS)
def _pack_a(a, rsa, csa, i0, p0, mc, kc, pa):
    """pa[panel, p, i] = op(A)[i0 + panel*MR + i, p0 + p], zero-padded to whole panels."""
    for ir_ in range(0, mc, MR):
        mr = min(MR, mc - ir_)
        base = ir_ * kc
        src = (i0 + ir_) * rsa + p0 * csa
        if mr == MR and csa == 1:
            # rows of A are contiguous: read each row once, in order
            for i in range(MR):
                s = src + i * rsa
                for p in range(kc):
                    pa[base + p * MR + i] = a[s + p]
        elif mr == MR and rsa == 1:
            for p in range(kc):
                q = base + p * MR
                s = src + p * csa
                for i in range(MR):
                    pa[q + i] = a[s + i]
        else:
            for p in range(kc):
                q = base + p * MR
                s = src + p * csa
                for i in range(mr):
                    pa[q + i] = a[s + i * rsa]
                for i in range(mr, MR):
                    pa[q + i] = 0


@njit(**_OPTS)
def _pack_b_panel(b, rsb, csb, p0, j0, kc, nc, jp, nr_full, pb):
    """pb[panel jp, p, j] = op(B)[p0 + p, j0 + jp*NR + j], zero-padded."""
    js = jp * nr_full
    nr = min(nr_full, nc - js)
    base = js * kc
    src = p0 * rsb + (j0 + js) * csb
    if nr == nr_full and csb == 1:
        # rows of B are contiguous: a vectorised copy per row
        for p in range(kc):
            q = base + p * nr_full
            s = src + p * rsb
            for j in range(nr_full):
                pb[q + j] = b[s + j]
        return
    for p in range(kc):
        q = base + p * nr_full
        s = src + p * rsb
        for j in range(nr):
            pb[q + j] = b[s + j * csb]
        for j in range(nr, nr_full):
            pb[q + j] = 0


@njit(**_OPTS)
def _store_tile(tile, nr_full, c, ldc, i0, j0, mr, nr, first, last, bias, has_bias, act):
    """C tile = (C tile if not first) + tile, then on the last K block + bias and activation."""
    # One branch-free loop per step, so that each one vectorises.
    for i in range(mr):
        r = (i0 + i) * ldc + j0
        t = i * nr_full
        if last and has_bias and act == 1:
            # the dense layer's case: one pass for sum, bias and ReLU
            if first:
                for j in range(nr):
                    v = tile[t + j] + bias[j0 + j]
                    c[r + j] = v if not (v <= 0) else v * 0
            else:
                for j in range(nr):
                    v = c[r + j] + tile[t + j] + bias[j0 + j]
                    c[r + j] = v if not (v <= 0) else v * 0
            continue
        if first:
            for j in range(nr):
                c[r + j] = tile[t + j]
        else:
            for j in range(nr):
                c[r + j] += tile[t + j]
        if last:
            if has_bias:
                for j in range(nr):
                    c[r + j] += bias[j0 + j]
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
def _macro(a, rsa, csa, b, rsb, csb, c, ldc, pb, pa, tile, ic, mc, pc, kc, jc, nc, nr_full, first, last, bias,
           has_bias, act, direct):
    """All MR x NR tiles of one MC x NC block of C.

    Packed: A block packed here, B block already packed in pb. Direct (small
    products, where packing would cost more than it saves): A and B read in
    place, only ragged edge panels packed (for their zero padding)."""
    mfull = mc // MR * MR if direct else 0
    if not direct:
        _pack_a(a, rsa, csa, ic, pc, mc, kc, pa)
    elif mfull < mc:
        _pack_a(a, rsa, csa, ic + mfull, pc, mc - mfull, kc, pa)
    for jr in range(0, nc, nr_full):
        nr = min(nr_full, nc - jr)
        b_in_place = direct and nr == nr_full and csb == 1
        if direct and not b_in_place:
            _pack_b_panel(b, rsb, csb, pc, jc, kc, nc, jr // nr_full, nr_full, pb)
        bo = pc * rsb + jc + jr
        for ir_ in range(0, mc, MR):
            mr = min(MR, mc - ir_)
            if ir_ < mfull:
                ao = (ic + ir_) * rsa + pc * csa
                if b_in_place:
                    _ukr(kc, a, ao, rsa, csa, b, bo, rsb, tile, MR, NV)
                else:
                    _ukr(kc, a, ao, rsa, csa, pb, jr * kc, nr_full, tile, MR, NV)
            else:
                ao = (ir_ - mfull) * kc
                if b_in_place:
                    _ukr(kc, pa, ao, 1, MR, b, bo, rsb, tile, MR, NV)
                else:
                    _ukr(kc, pa, ao, 1, MR, pb, jr * kc, nr_full, tile, MR, NV)
            _store_tile(tile, nr_full, c, ldc, ic + ir_, jc + jr, mr, nr, first, last, bias, has_bias, act)


@njit(**_OPTS)
def _gemm_serial(M, N, K, a, rsa, csa, b, rsb, csb, c, ldc, bias, has_bias, act):
    """C = act(op(A)·op(B) + bias) on one thread (flat arrays, element strides)."""
    direct = M * N * K <= DIRECT_MAX_FLOPS
    nrf = _nr(c)
    npan_max = (min(N, NC) + nrf - 1) // nrf
    kcm = min(K, KC)
    pb = np.empty(kcm * npan_max * nrf, c.dtype)
    pa = np.empty(kcm * (min(M, MC) + MR), c.dtype)
    tile = np.empty(MR * nrf, c.dtype)
    for jc in range(0, N, NC):
        nc = min(NC, N - jc)
        npan = (nc + nrf - 1) // nrf
        for pc in range(0, K, KC):
            kc = min(KC, K - pc)
            if not direct:
                for jp in range(npan):
                    _pack_b_panel(b, rsb, csb, pc, jc, kc, nc, jp, nrf, pb)
            for ic in range(0, M, MC):
                mc = min(MC, M - ic)
                _macro(a, rsa, csa, b, rsb, csb, c, ldc, pb, pa, tile, ic, mc, pc, kc, jc, nc, nrf, pc == 0,
                       pc + kc >= K, bias, has_bias, act, direct)


@njit(parallel=True, **_OPTS)
def _gemm_slabs(M, N, K, a, rsa, csa, b, rsb, csb, c, ldc, bias, has_bias, act, nthreads):
    """Same product, one slab of C per thread along its longer side, each run serially.

    The shared operand is packed once per thread, but there is a single
    parallel loop and no barrier inside it: cheaper for mid-sized products."""
    split_n = N >= M
    unit = _nr(c) if split_n else MR
    length = N if split_n else M
    tiles = (length + unit - 1) // unit
    nt = min(nthreads, tiles)
    for t in prange(nt):
        s0 = tiles * t // nt * unit
        s1 = min(tiles * (t + 1) // nt * unit, length)
        if s1 > s0:
            if split_n:
                _gemm_serial(M, s1 - s0, K, a, rsa, csa, b[s0 * csb:], rsb, csb, c[s0:], ldc,
                             bias[s0:] if has_bias else bias, has_bias, act)
            else:
                _gemm_serial(s1 - s0, N, K, a[s0 * rsa:], rsa, csa, b, rsb, csb, c[s0 * ldc:], ldc,
                             bias, has_bias, act)


@njit(**_OPTS)
def _zero_k(M, N, c, ldc, bias, has_bias, act):
    """K = 0: the product is zero, the epilogue still applies."""
    for i in range(M):
        for j in range(N):
            v = bias[j] if has_bias else bias[0] * 0   # the dummy bias is zeros(1)
            if act == 1:
                v = v if not (v <= 0) else v * 0
            elif act == 2:
                v = 1 / (1 + np.exp(-v))
            elif act == 3:
                v = np.tanh(v)
            c[i * ldc + j] = v


@njit(**_OPTS)
def gemm_flat(M, N, K, a, rsa, csa, b, rsb, csb, c, ldc, bias, has_bias, act, nthreads):
    """C = act(op(A)·op(B) + bias); op(A)[i, p] = a[i*rsa + p*csa], op(B)[p, j] = b[p*rsb + j*csb], C[i, j] = c[i*ldc + j]."""
    if M == 0 or N == 0:
        return
    if K == 0:
        _zero_k(M, N, c, ldc, bias, has_bias, act)
    elif M * N * K <= _small.SMALL_MAX:
        _small.small_gemm(M, N, K, a, rsa, csa, b, rsb, csb, c, ldc, bias, has_bias, act)
    elif nthreads > 1 and M * N * K >= PARALLEL_MIN_FLOPS:
        _gemm_slabs(M, N, K, a, rsa, csa, b, rsb, csb, c, ldc, bias, has_bias, act, nthreads)
    else:
        _gemm_serial(M, N, K, a, rsa, csa, b, rsb, csb, c, ldc, bias, has_bias, act)


@njit(**_OPTS)
def gemm_c(a, b, trans_a, trans_b, c, bias, has_bias, act, nthreads):
    """c = act(op(a)·op(b) + bias) for C-contiguous 2-D a, b, c (what the ops layer hands over)."""
    M, N = c.shape
    if trans_a:
        K = a.shape[0]
        rsa, csa = 1, M
    else:
        K = a.shape[1]
        rsa, csa = K, 1
    if trans_b:
        rsb, csb = 1, K
    else:
        rsb, csb = N, 1
    gemm_flat(M, N, K, a.reshape(-1), rsa, csa, b.reshape(-1), rsb, csb, c.reshape(-1), N, bias, has_bias, act,
              nthreads)
    return c


@njit(**_OPTS)
def act_backward_colsum(grad_out, y, act, delta, grad_bias, has_bias):
    """delta = grad_out ⊙ act'(y), grad_bias = Σ_rows delta, in one pass."""
    B, O = grad_out.shape
    if has_bias:
        for j in range(O):
            grad_bias[j] = 0
    for i in range(B):
        for j in range(O):
            g = grad_out[i, j]
            if act == 1:
                g = g if y[i, j] > 0 else g * 0
            elif act == 2:
                g = g * y[i, j] * (1 - y[i, j])
            elif act == 3:
                g = g * (1 - y[i, j] * y[i, j])
            delta[i, j] = g
            if has_bias:
                grad_bias[j] += g
    return delta


_ACT = {"identity": 0, "relu": 1, "sigmoid": 2, "tanh": 3}

_NO_BIAS = {np.dtype(np.float32): np.zeros(1, np.float32), np.dtype(np.float64): np.zeros(1, np.float64)}


def _c_order(x, trans):
    """x as a C-contiguous array and the transpose flag that keeps op(x) the same."""
    if x.flags.c_contiguous:
        return x, trans
    if x.flags.f_contiguous:
        return x.T, not trans
    return np.ascontiguousarray(x), trans


def gemm(a, b, trans_a, trans_b, out, bias=None, activation="identity"):
    """``out = act(op(a)·op(b) + bias)`` with fastnn's own Numba GEMM; ``out`` C-contiguous."""
    a, trans_a = _c_order(a, trans_a)
    b, trans_b = _c_order(b, trans_b)
    if bias is None:
        gemm_c(a, b, trans_a, trans_b, out, _NO_BIAS[out.dtype], False, _ACT[activation], _config.get_num_threads())
    else:
        gemm_c(a, b, trans_a, trans_b, out, np.ascontiguousarray(bias), True, _ACT[activation],
               _config.get_num_threads())
    return out


def dense_forward(x, weight, bias, activation, out):
    """Fused ``out = act(x·Wᵀ + b)``: bias and activation applied to each tile as it is stored."""
    return gemm(x, weight, False, True, out, bias, activation)


def dense_backward(grad_out, x, weight, y, activation, grad_input, grad_weight, grad_bias):
    """δ = grad_out ⊙ act'(y) and dL/db in one pass, then dL/dW = δᵀ·x and dL/dx = δ·W."""
    has_bias = grad_bias is not None
    if activation == "identity" and not has_bias:
        delta = grad_out
    else:
        delta = np.empty_like(grad_out) if activation != "identity" else grad_out
        if activation == "identity":
            np.sum(grad_out, axis=0, out=grad_bias)
        else:
            act_backward_colsum(grad_out, y, _ACT[activation], delta,
                                grad_bias if has_bias else np.zeros(1, grad_out.dtype), has_bias)
    gemm(delta, x, True, False, grad_weight)
    if grad_input is not None:
        gemm(delta, weight, False, False, grad_input)
    return grad_input, grad_weight, grad_bias


@njit(**_OPTS)
def bench_loop(a, b, out, reps, blas, nthreads):
    """Run reps products C = A·B back to back from compiled code (own GEMM or BLAS via np.dot)."""
    bias = np.zeros(1, out.dtype)
    for _ in range(reps):
        if blas:
            np.dot(a, b, out)
        else:
            gemm_c(a, b, False, False, out, bias, False, 0, nthreads)
    return out


# Small products (register tiles, no packing of A) live in their own module,
# which builds on the micro-kernel above; gemm_flat resolves these names when
# it is first compiled, after both modules are loaded.
from . import _small_gemm as _small  # noqa: E402
