"""fastnn's own GEMM for the Numba backend: BLIS-style packing, register-tile micro-kernel.

``C = act(op(A)·op(B) + bias)``. Layout of the work (as in BLIS): a KC x NC
block of op(B) is packed into NR-column panels, each MC x KC block of op(A)
into MR-row panels, and the micro-kernel multiplies one A panel by one B
panel with an MR x NR tile of accumulators that never leaves the vector
registers. The M blocks run in parallel.

LLVM does not keep a Numba array of accumulators in registers, and its
vectorisers either leave scalar phis alone or vectorise the wrong loop, so the
micro-kernel is written as a Numba ``@intrinsic`` that emits the vector loop
(``llvm.fma`` on MR x NV vector registers) directly. It also applies the
epilogue (accumulate into C, bias, ReLU) to the registers and stores each
whole tile straight into C; only ragged edge tiles go through a scratch tile.
Numba's array indexing adds a negative-index wrap-around to every access,
which turned the packing copies into gathers and scatters and kept the tile
copy scalar, so the panels (edges zero-padded) are packed by a second small
intrinsic.
Everything around the two is ordinary ``@njit`` code.

Entry points: :func:`gemm_2d` picks the kernel a product needs in Python
(small-product, packed, threaded, or the K = 0 case), so that a call
compiles only that one; :func:`gemm_c` makes the same choice in compiled
code, for callers that are compiled themselves (:func:`bench_loop`), and
compiles all of them.
"""

import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic
from numba.np.arrayobj import populate_array

from ... import _config
from ._jit import Deferred, kernel, rebinder, threads

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


def _as_i64(context, builder, sig, args, idx):
    """The intrinsic's integer arguments at positions idx, as int64 values."""
    return [context.cast(builder, args[i], sig.args[i], types.int64) for i in idx]


def _ukr_codegen(rows, nvec, width, fma_name, edge):
    """Code generator of the micro-kernel for a rows x nvec-vector tile.

    With ``edge`` the tile may hang over C's last row or column: rows from
    ``mvalid`` on read A's row mvalid-1 (valid memory, results dropped) and
    are not stored, and the last vector of columns is loaded from B, bias and
    C and stored with a lane mask of its first ``nlast`` lanes, so edge tiles
    need neither zero-padded copies of A and B nor a scratch tile."""

    def codegen(context, builder, sig, args):
        first_v, add_bias_v, relu_v = args[11], args[14], args[15]
        kc_v, oa_v, ars_v, acs_v, ob_v, brs_v, oc_v, ldc_v, obias_v = _as_i64(
            context, builder, sig, args, (0, 2, 3, 4, 6, 7, 9, 10, 13)
        )
        ety = context.get_value_type(sig.args[1].dtype)
        esize = context.get_abi_sizeof(ety)
        vty = ir.VectorType(ety, width)
        vptr = vty.as_pointer()
        i64 = ir.IntType(64)
        i32 = ir.IntType(32)
        a_data = context.make_array(sig.args[1])(context, builder, args[1]).data
        b_data = context.make_array(sig.args[5])(context, builder, args[5]).data
        c_data = context.make_array(sig.args[8])(context, builder, args[8]).data
        bias_data = context.make_array(sig.args[12])(context, builder, args[12]).data

        if edge:
            mvalid_v, nlast_v = _as_i64(context, builder, sig, args, (18, 19))
            mty = ir.VectorType(ir.IntType(1), width)
            lanes = ir.Constant(ir.VectorType(i64, width), list(range(width)))
            nsplat = builder.insert_element(
                ir.Constant(ir.VectorType(i64, width), ir.Undefined), nlast_v, ir.Constant(i32, 0)
            )
            nsplat = builder.shuffle_vector(
                nsplat,
                ir.Constant(ir.VectorType(i64, width), ir.Undefined),
                ir.Constant(ir.VectorType(i32, width), [0] * width),
            )
            mask = builder.icmp_signed("<", lanes, nsplat)
            mload = cgutils.get_or_insert_function(
                builder.module, ir.FunctionType(vty, [vptr, i32, mty, vty]), f"llvm.masked.load.{fma_name[9:]}.p0"
            )
            mstore = cgutils.get_or_insert_function(
                builder.module,
                ir.FunctionType(ir.VoidType(), [vty, vptr, i32, mty]),
                f"llvm.masked.store.{fma_name[9:]}.p0",
            )
            # row i reads A's row min(i, mvalid - 1)
            last_row = builder.sub(mvalid_v, ir.Constant(i64, 1))
            a_rows = [
                builder.mul(
                    builder.select(
                        builder.icmp_signed("<", ir.Constant(i64, i), mvalid_v), ir.Constant(i64, i), last_row
                    ),
                    ars_v,
                )
                for i in range(rows)
            ]
        else:
            a_rows = [builder.mul(ir.Constant(i64, i), ars_v) for i in range(rows)]

        def vec_at(data, offset):
            return builder.bitcast(builder.gep(data, [offset]), vptr)

        def load(data, offset, j):
            ptr = vec_at(data, offset)
            if edge and j == nvec - 1:
                return builder.call(mload, [ptr, ir.Constant(i32, esize), mask, ir.Constant(vty, None)])
            return builder.load(ptr, align=esize)

        def c_off(i, j):
            return builder.add(oc_v, builder.add(builder.mul(ir.Constant(i64, i), ldc_v), ir.Constant(i64, j * width)))

        def store_c(value, i, j):
            ptr = vec_at(c_data, c_off(i, j))
            if edge and j == nvec - 1:
                builder.call(mstore, [value, ptr, ir.Constant(i32, esize), mask])
            else:
                builder.store(value, ptr, align=esize)

        def each_stored_row(body):
            for i in range(rows):
                if edge:
                    with builder.if_then(builder.icmp_signed("<", ir.Constant(i64, i), mvalid_v)):
                        body(i)
                else:
                    body(i)

        zero = ir.Constant(vty, [ir.Constant(ety, 0.0)] * width)
        # Allocas of vector type with constant indices: SROA turns them into
        # vector phis, i.e. registers.
        accs = [[cgutils.alloca_once_value(builder, zero) for _ in range(nvec)] for _ in range(rows)]
        fma = cgutils.get_or_insert_function(builder.module, ir.FunctionType(vty, [vty, vty, vty]), fma_name)
        splat_mask = ir.Constant(ir.VectorType(i32, width), [0] * width)
        with cgutils.for_range(builder, kc_v) as loop:
            p = loop.index
            bbase = builder.add(ob_v, builder.mul(p, brs_v))
            abase = builder.add(oa_v, builder.mul(p, acs_v))
            bvs = [load(b_data, builder.add(bbase, ir.Constant(i64, j * width)), j) for j in range(nvec)]
            for i in range(rows):
                av = builder.load(builder.gep(a_data, [builder.add(abase, a_rows[i])]))
                sv = builder.insert_element(ir.Constant(vty, ir.Undefined), av, ir.Constant(i32, 0))
                sv = builder.shuffle_vector(sv, ir.Constant(vty, ir.Undefined), splat_mask)
                for j in range(nvec):
                    builder.store(builder.call(fma, [sv, bvs[j], builder.load(accs[i][j])]), accs[i][j])

        # Epilogue on the registers: the tile of C is read and written once.
        def add_old(i):
            for j in range(nvec):
                old = load(c_data, c_off(i, j), j)
                builder.store(builder.fadd(builder.load(accs[i][j]), old), accs[i][j])

        with builder.if_then(builder.not_(first_v)):
            each_stored_row(add_old)
        with builder.if_then(add_bias_v):
            for j in range(nvec):
                bv = load(bias_data, builder.add(obias_v, ir.Constant(i64, j * width)), j)
                for i in range(rows):
                    builder.store(builder.fadd(builder.load(accs[i][j]), bv), accs[i][j])
        with builder.if_then(relu_v):
            for i in range(rows):
                for j in range(nvec):
                    v = builder.load(accs[i][j])
                    # v <= 0 -> 0; positives and NaN unchanged
                    builder.store(builder.select(builder.fcmp_ordered("<=", v, zero), zero, v), accs[i][j])

        def store_row(i):
            for j in range(nvec):
                store_c(builder.load(accs[i][j]), i, j)

        each_stored_row(store_row)
        return context.get_dummy_value()

    return codegen


def _ukr_setup(pa, mr, nv):
    """(rows, vectors, lanes, fma intrinsic name) of a micro-kernel call, or None if not literal."""
    if not (isinstance(mr, types.IntegerLiteral) and isinstance(nv, types.IntegerLiteral)):
        return None
    width = VBYTES // (pa.dtype.bitwidth // 8)
    fma_name = f"llvm.fma.v{width}{'f32' if pa.dtype.bitwidth == 32 else 'f64'}"
    return mr.literal_value, nv.literal_value, width, fma_name


@intrinsic
def _ukr(typingctx, kc, pa, oa, ars, acs, pb, ob, brs, c, oc, ldc, first, bias, obias, add_bias, relu, mr, nv):
    """C[oc + i*ldc + j] (+)= A·B over kc for an MR x NR tile, in registers, epilogue fused.

    A[i, p] = pa[oa + i*ars + p*acs], B[p, j] = pb[ob + p*brs + j]. Packed
    panels are (ars, acs, brs) = (1, MR, NR); small products read the operands
    in place with their own strides. After the K loop, still in registers:
    + C unless first, + bias[obias + j] if add_bias, ReLU if relu; then one
    store per accumulator. Edge tiles of the packed GEMM pass a scratch tile
    as C (first, no epilogue) and copy the valid part (_store_tile)."""
    setup = _ukr_setup(pa, mr, nv)
    if setup is None:
        return None
    rows, nvec, width, fma_name = setup
    sig = types.none(kc, pa, oa, ars, acs, pb, ob, brs, c, oc, ldc, first, bias, obias, add_bias, relu, mr, nv)
    return sig, _ukr_codegen(rows, nvec, width, fma_name, False)


@intrinsic
def _ukr_edge(
    typingctx, kc, pa, oa, ars, acs, pb, ob, brs, c, oc, ldc, first, bias, obias, add_bias, relu, mr, nv, mvalid, nlast
):
    """_ukr for a tile over C's edge: only rows < mvalid and, in the last vector, lanes < nlast.

    A is read in place (rows past mvalid re-read row mvalid-1), B, bias and C
    through masked vector loads and stores; nothing past the valid part is
    read or written in the last vector, so B and C need no padding."""
    setup = _ukr_setup(pa, mr, nv)
    if setup is None:
        return None
    rows, nvec, width, fma_name = setup
    sig = types.none(
        kc, pa, oa, ars, acs, pb, ob, brs, c, oc, ldc, first, bias, obias, add_bias, relu, mr, nv, mvalid, nlast
    )
    return sig, _ukr_codegen(rows, nvec, width, fma_name, True)


@intrinsic
def _transpose_block(typingctx, src, so, sstride, dst, do, dstride):
    """dst[do + c*dstride + r] = src[so + r*sstride + c] for one block of one vector's lanes squared.

    The block is loaded as vector rows and transposed in registers: stage s
    swaps the s-blocks off the diagonal of each pair of rows (r, r + s), which
    exchanges one bit of the row index with the same bit of the lane index;
    log2(lanes) stages exchange them all. The scalar copy it replaces wrote
    one element per cache line."""
    if not (isinstance(src, types.Array) and isinstance(dst, types.Array) and src.dtype == dst.dtype):
        return None
    width = VBYTES // (src.dtype.bitwidth // 8)

    def codegen(context, builder, sig, args):
        so_v, ss_v, do_v, ds_v = _as_i64(context, builder, sig, args, (1, 2, 4, 5))
        ety = context.get_value_type(sig.args[0].dtype)
        esize = context.get_abi_sizeof(ety)
        vty = ir.VectorType(ety, width)
        vptr = vty.as_pointer()
        i64 = ir.IntType(64)
        i32 = ir.IntType(32)
        s_data = context.make_array(sig.args[0])(context, builder, args[0]).data
        d_data = context.make_array(sig.args[3])(context, builder, args[3]).data
        rows = []
        for r in range(width):
            off = builder.add(so_v, builder.mul(ir.Constant(i64, r), ss_v))
            rows.append(builder.load(builder.bitcast(builder.gep(s_data, [off]), vptr), align=esize))
        step = 1
        while step < width:
            lo = ir.Constant(
                ir.VectorType(i32, width), [width + lane - step if lane & step else lane for lane in range(width)]
            )
            hi = ir.Constant(
                ir.VectorType(i32, width), [width + lane if lane & step else lane + step for lane in range(width)]
            )
            for r in range(width):
                if r & step:
                    continue
                a, b = rows[r], rows[r + step]
                rows[r] = builder.shuffle_vector(a, b, lo)
                rows[r + step] = builder.shuffle_vector(a, b, hi)
            step *= 2
        for c in range(width):
            off = builder.add(do_v, builder.mul(ir.Constant(i64, c), ds_v))
            builder.store(rows[c], builder.bitcast(builder.gep(d_data, [off]), vptr), align=esize)
        return context.get_dummy_value()

    return types.none(src, so, sstride, dst, do, dstride), codegen


@intrinsic
def _raw(typingctx, arr):
    """A flat view of a C-contiguous array's buffer that carries no reference count.

    Numba increments and decrements an array's reference count (atomic
    operations) around every call that passes it: with five arrays per call
    that cost ~60 ns per call of a row-block helper, more than its 8 x 16 x 16
    product. A view built from the bare pointer has no meminfo, so the
    counting becomes a null check. The caller must keep ``arr`` alive while
    the view is in use (every user here holds it as an argument). An
    intrinsic (what ``carray(ptr, arr.size)`` builds) rather than a jitted
    function: nothing to compile per array type."""
    if not (isinstance(arr, types.Array) and arr.layout == "C"):
        return None
    flat = types.Array(arr.dtype, 1, "C")

    def codegen(context, builder, sig, args):
        src = context.make_array(sig.args[0])(context, builder, args[0])
        view = context.make_array(flat)(context, builder)
        itemsize = context.get_abi_sizeof(context.get_data_type(arr.dtype))
        populate_array(
            view,
            data=src.data,
            shape=[src.nitems],
            strides=[context.get_constant(types.intp, itemsize)],
            itemsize=context.get_constant(types.intp, itemsize),
            meminfo=None,
        )
        return view._getvalue()

    return flat(arr), codegen


#: ``nvalid`` of a panel with no padding (any literal >= its width).
WHOLE = 1 << 30


@intrinsic
def _pack_panel(typingctx, n, src, so, lane_s, step_s, nvalid, dst, do, rows, nv):
    """dst[do + p*W + i] = src[so + p*step_s + i*lane_s] if i < nvalid else 0, for p < n, i < W.

    One panel of A (W = rows = MR) or of B (W = nv vectors = NR), zero-padded
    past nvalid lanes (ragged edges; pass WHOLE for a full panel), copied with
    plain loads and stores: Numba's indexing would add a negative-index
    wrap-around to every access, which made LLVM turn these copies into
    gathers and scatters."""
    if not (isinstance(rows, types.IntegerLiteral) and isinstance(nv, types.IntegerLiteral)):
        return None
    w = rows.literal_value + nv.literal_value * (VBYTES // (src.dtype.bitwidth // 8))
    whole = isinstance(nvalid, types.IntegerLiteral) and nvalid.literal_value >= w

    def codegen(context, builder, sig, args):
        n_v, so_v, lane_v, step_v, nvalid_v, do_v = _as_i64(context, builder, sig, args, (0, 2, 3, 4, 5, 7))
        i64 = ir.IntType(64)
        ety = context.get_value_type(sig.args[1].dtype)
        s_data = context.make_array(sig.args[1])(context, builder, args[1]).data
        d_data = context.make_array(sig.args[6])(context, builder, args[6]).data
        lanes = [ir.Constant(i64, i) for i in range(w)]
        valid = None
        if not whole:
            # Lanes past nvalid read the last valid one (stays in bounds) and store 0.
            valid = [builder.icmp_signed("<", lane, nvalid_v) for lane in lanes]
            last = builder.sub(nvalid_v, ir.Constant(i64, 1))
            lanes = [builder.select(ok, lane, last) for ok, lane in zip(valid, lanes)]
        lane_offs = [builder.mul(lane, lane_v) for lane in lanes]
        zero = ir.Constant(ety, 0.0)
        with cgutils.for_range(builder, n_v) as loop:
            p = loop.index
            sbase = builder.add(so_v, builder.mul(p, step_v))
            dbase = builder.add(do_v, builder.mul(p, ir.Constant(i64, w)))
            # All loads before the stores: LLVM cannot tell that src and dst do
            # not overlap, and this order lets it merge contiguous ones into vectors.
            vals = [builder.load(builder.gep(s_data, [builder.add(sbase, off)])) for off in lane_offs]
            if valid is not None:
                vals = [builder.select(ok, v, zero) for ok, v in zip(valid, vals)]
            for i in range(w):
                builder.store(vals[i], builder.gep(d_data, [builder.add(dbase, ir.Constant(i64, i))]))
        return context.get_dummy_value()

    return types.none(n, src, so, lane_s, step_s, nvalid, dst, do, rows, nv), codegen


@njit(**_OPTS)
def _nr(arr):
    """Columns of the register tile for this dtype."""
    return NV * (VBYTES // arr.itemsize)


@njit(**_OPTS)
def _empty_aligned(n, like):
    """np.empty(n) of like's dtype starting on a 64-byte boundary: no vector load of a packed panel spans two cache lines."""
    extra = 64 // like.itemsize
    buf = np.empty(n + extra, like.dtype)
    addr = np.int64(buf.ctypes.data)
    off = (64 - addr % 64) % 64 // like.itemsize
    return buf[off : off + n]


@njit(**_OPTS)
def _pack_a(a, rsa, csa, i0, p0, mc, kc, pa):
    """pa[panel, p, i] = op(A)[i0 + panel*MR + i, p0 + p], zero-padded to whole panels."""
    for ir_ in range(0, mc, MR):
        mr = min(MR, mc - ir_)
        src = (i0 + ir_) * rsa + p0 * csa
        if mr == MR and csa == 1:
            _pack_panel(kc, a, src, rsa, 1, WHOLE, pa, ir_ * kc, MR, 0)
        elif mr == MR and rsa == 1:
            _pack_panel(kc, a, src, 1, csa, WHOLE, pa, ir_ * kc, MR, 0)
        else:
            _pack_panel(kc, a, src, rsa, csa, mr, pa, ir_ * kc, MR, 0)


@njit(**_OPTS)
def _pack_b_panel(b, rsb, csb, p0, j0, kc, nc, jp, nr_full, pb):
    """pb[panel jp, p, j] = op(B)[p0 + p, j0 + jp*NR + j], zero-padded."""
    js = jp * nr_full
    nr = min(nr_full, nc - js)
    src = p0 * rsb + (j0 + js) * csb
    if nr == nr_full and csb == 1:
        _pack_panel(kc, b, src, 1, rsb, WHOLE, pb, js * kc, 0, NV)
    elif nr == nr_full and rsb == 1:
        # transposed B (a weight read as Wᵀ): whole blocks of lanes x lanes by
        # in-register transposes, the last rows (< lanes) lane by lane
        w = VBYTES // b.itemsize
        kw = kc // w * w
        for p in range(0, kw, w):
            for h in range(0, nr_full, w):
                _transpose_block(b, src + h * csb + p, csb, pb, js * kc + p * nr_full + h, nr_full)
        if kw < kc:
            _pack_panel(kc - kw, b, src + kw, csb, 1, WHOLE, pb, js * kc + kw * nr_full, 0, NV)
    else:
        _pack_panel(kc, b, src, csb, rsb, nr, pb, js * kc, 0, NV)


@njit(**_OPTS)
def _store_tile(tile, nr_full, c, ldc, i0, j0, mr, nr, first, bias, add_bias, relu):
    """Edge tiles: C tile = (C tile if not first) + tile (+ bias, ReLU), valid part only."""
    # Row views: indices from range() are known to be >= 0, so LLVM drops
    # the wrap-around code.
    for i in range(mr):
        r = (i0 + i) * ldc + j0
        crow = c[r : r + nr]
        trow = tile[i * nr_full : i * nr_full + nr]
        brow = bias[j0 : j0 + nr]
        for j in range(nr):
            v = trow[j] if first else crow[j] + trow[j]
            if add_bias:
                v += brow[j]
            if relu:
                v = v if not (v <= 0) else v * 0  # NaN passes through
            crow[j] = v


@njit(**_OPTS)
def _act_tile(c, ldc, i0, j0, mr, nr, act):
    """Sigmoid (2) or tanh (3) on a finished tile of C, while it is in L1."""
    for i in range(mr):
        r = (i0 + i) * ldc + j0
        crow = c[r : r + nr]
        if act == 2:
            for j in range(nr):
                crow[j] = 1 / (1 + np.exp(-crow[j]))
        else:
            for j in range(nr):
                crow[j] = np.tanh(crow[j])


@njit(**_OPTS)
def _macro(a_op, b_op, c, ldc, bufs, epi, ic, mc, pc, kc, jc, nc, nr_full, first, last, direct):
    """All MR x NR tiles of one MC x NC block of C.

    Packed: A block packed here, B block already packed in pb. Direct (small
    products, where packing would cost more than it saves): A and B read in
    place, only ragged edge panels packed (for their zero padding). Whole
    tiles go straight from the registers to C with the epilogue applied there;
    edge tiles go through the scratch tile.

    Grouped arguments (tuples, unpacked at compile time): a_op = (a, rsa, csa)
    and b_op = (b, rsb, csb), operands and their element strides; bufs =
    (pb, pa, tile), the packing buffers and the scratch tile; epi = (bias,
    has_bias, act), the epilogue."""
    a, rsa, csa = a_op
    b, rsb, csb = b_op
    pb, pa, tile = bufs
    bias, has_bias, act = epi
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
        if b_in_place:
            bp, bo, brs = b, pc * rsb + jc + jr, rsb
        else:
            bp, bo, brs = pb, jr * kc, nr_full
        for ir_ in range(0, mc, MR):
            mr = min(MR, mc - ir_)
            full = mr == MR and nr == nr_full
            if full:
                out, oo, ldo = c, (ic + ir_) * ldc + jc + jr, ldc
            else:
                out, oo, ldo = tile, 0, nr_full
            fst = first or not full
            add_bias = full and last and has_bias
            relu = full and last and act == 1
            if ir_ < mfull:
                _ukr(
                    kc,
                    a,
                    (ic + ir_) * rsa + pc * csa,
                    rsa,
                    csa,
                    bp,
                    bo,
                    brs,
                    out,
                    oo,
                    ldo,
                    fst,
                    bias,
                    jc + jr,
                    add_bias,
                    relu,
                    MR,
                    NV,
                )
            else:
                _ukr(
                    kc,
                    pa,
                    (ir_ - mfull) * kc,
                    1,
                    MR,
                    bp,
                    bo,
                    brs,
                    out,
                    oo,
                    ldo,
                    fst,
                    bias,
                    jc + jr,
                    add_bias,
                    relu,
                    MR,
                    NV,
                )
            if not full:
                _store_tile(
                    tile, nr_full, c, ldc, ic + ir_, jc + jr, mr, nr, first, bias, last and has_bias, last and act == 1
                )
            if last and act >= 2:
                _act_tile(c, ldc, ic + ir_, jc + jr, mr, nr, act)


@njit(**_OPTS)
def _gemm_serial(M, N, K, a, rsa, csa, b, rsb, csb, c, ldc, bias, has_bias, act):
    """C = act(op(A)·op(B) + bias) on one thread (flat arrays, element strides)."""
    direct = M * N * K <= DIRECT_MAX_FLOPS
    nrf = _nr(c)
    npan_max = (min(N, NC) + nrf - 1) // nrf
    kcm = min(K, KC)
    pb = _empty_aligned(kcm * npan_max * nrf, c)
    pa = _empty_aligned(kcm * (min(M, MC) + MR), c)
    tile = _empty_aligned(MR * nrf, c)
    a_op, b_op, bufs, epi = (a, rsa, csa), (b, rsb, csb), (pb, pa, tile), (bias, has_bias, act)
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
                _macro(a_op, b_op, c, ldc, bufs, epi, ic, mc, pc, kc, jc, nc, nrf, pc == 0, pc + kc >= K, direct)


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
                _gemm_serial(
                    M,
                    s1 - s0,
                    K,
                    a,
                    rsa,
                    csa,
                    b[s0 * csb :],
                    rsb,
                    csb,
                    c[s0:],
                    ldc,
                    bias[s0:] if has_bias else bias,
                    has_bias,
                    act,
                )
            else:
                _gemm_serial(
                    s1 - s0, N, K, a[s0 * rsa :], rsa, csa, b, rsb, csb, c[s0 * ldc :], ldc, bias, has_bias, act
                )


@njit(**_OPTS)
def _zero_k(M, N, c, ldc, bias, has_bias, act):
    """K = 0: the product is zero, the epilogue still applies."""
    for i in range(M):
        for j in range(N):
            v = bias[j] if has_bias else bias[0] * 0  # the dummy bias is zeros(1)
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


@njit(inline="always", **_OPTS)
def _layout(a, trans_a, trans_b, c):
    """(M, N, K, rsa, csa, rsb, csb) of c = op(a)·op(b) for C-contiguous 2-D a, b, c."""
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
    return M, N, K, rsa, csa, rsb, csb


@njit(**_OPTS)
def gemm_c(a, b, trans_a, trans_b, c, bias, has_bias, act, nthreads):
    """c = act(op(a)·op(b) + bias) for C-contiguous 2-D a, b, c (what the ops layer hands over)."""
    M, N, K, rsa, csa, rsb, csb = _layout(a, trans_a, trans_b, c)
    gemm_flat(M, N, K, _raw(a), rsa, csa, _raw(b), rsb, csb, _raw(c), N, _raw(bias), has_bias, act, nthreads)
    return c


@kernel(inputs="a b bias")
def _gemm_small_tiled(a, b, trans_a, trans_b, c, bias, has_bias, act):
    """gemm_c for K >= 1, at most SMALL_MAX multiply-adds and act 0 or 1: register tiles on one thread."""
    M, N, K, rsa, csa, rsb, csb = _layout(a, trans_a, trans_b, c)
    _small.small_gemm(M, N, K, _raw(a), rsa, csa, _raw(b), rsb, csb, _raw(c), N, _raw(bias), has_bias, act)


@kernel(inputs="a b bias")
def _gemm_small_plain(a, b, trans_a, trans_b, c, bias, has_bias, act):
    """_gemm_small_tiled's result from plain loops (compiles in a fraction of the time)."""
    M, N, K, rsa, csa, rsb, csb = _layout(a, trans_a, trans_b, c)
    _small.simple_gemm(M, N, K, _raw(a), rsa, csa, _raw(b), rsb, csb, _raw(c), N, _raw(bias), has_bias, act)


#: The small-product entry point (act 0 or 1): the tiled kernel, or the plain one while the tiled one compiles.
gemm_small = Deferred(_gemm_small_tiled, _gemm_small_plain, rebinder(__name__, "gemm_small", lambda fast: fast))


@kernel
def _act_epilogue(c, act):
    """Sigmoid (2) or tanh (3) over C after a small product, as the tiled kernel applies it per tile."""
    M, N = c.shape
    _act_tile(_raw(c), N, 0, 0, M, N, act)


@kernel(inputs="a b bias")
def _gemm_packed(a, b, trans_a, trans_b, c, bias, has_bias, act):
    """gemm_c through packed panels on one thread."""
    M, N, K, rsa, csa, rsb, csb = _layout(a, trans_a, trans_b, c)
    _gemm_serial(M, N, K, _raw(a), rsa, csa, _raw(b), rsb, csb, _raw(c), N, _raw(bias), has_bias, act)


@kernel(inputs="a b bias")
def _gemm_threaded(a, b, trans_a, trans_b, c, bias, has_bias, act, nthreads):
    """gemm_c with one slab of C per thread."""
    M, N, K, rsa, csa, rsb, csb = _layout(a, trans_a, trans_b, c)
    _gemm_slabs(M, N, K, _raw(a), rsa, csa, _raw(b), rsb, csb, _raw(c), N, _raw(bias), has_bias, act, nthreads)


@kernel(inputs="bias")
def _gemm_no_k(c, bias, has_bias, act):
    """gemm_c for K = 0: act(bias) in every row."""
    M, N = c.shape
    _zero_k(M, N, _raw(c), N, _raw(bias), has_bias, act)


def gemm_2d(a, b, trans_a, trans_b, c, bias, has_bias, act, nthreads):
    """:func:`gemm_c` from Python, compiling only the kernel this product runs."""
    M, N = c.shape
    K = a.shape[0] if trans_a else a.shape[1]
    volume = M * N * K
    if M == 0 or N == 0:
        pass
    elif K == 0:
        _gemm_no_k(c, bias, has_bias, act)
    elif volume <= _small.SMALL_MAX:
        if act >= 2:
            gemm_small(a, b, trans_a, trans_b, c, bias, has_bias, 0)
            _act_epilogue(c, act)
        else:
            gemm_small(a, b, trans_a, trans_b, c, bias, has_bias, act)
    elif nthreads > 1 and volume >= PARALLEL_MIN_FLOPS:
        _gemm_threaded(a, b, trans_a, trans_b, c, bias, has_bias, act, nthreads)
    else:
        _gemm_packed(a, b, trans_a, trans_b, c, bias, has_bias, act)
    return c


@kernel(inputs="grad_out y")
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
        gemm_2d(a, b, trans_a, trans_b, out, _NO_BIAS[out.dtype], False, _ACT[activation], threads())
    else:
        gemm_2d(a, b, trans_a, trans_b, out, np.ascontiguousarray(bias), True, _ACT[activation], threads())
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
            act_backward_colsum(
                grad_out, y, _ACT[activation], delta, grad_bias if has_bias else np.zeros(1, grad_out.dtype), has_bias
            )
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
