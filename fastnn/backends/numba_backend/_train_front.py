"""Training plans with image stages or a recurrent layer in front of the dense layers, for the Numba backend.

The drivers of :mod:`.train` for the two kinds of front that
:func:`fastnn.backends.reference.train.train_bind` describes, each its own
``@njit`` kernel compiled on its first call, so that a dense model never
compiles the image or recurrent code, and a CNN never the recurrent one
(one driver per recurrent cell, for the same reason). A step runs the same
gather, dense layers, loss, backward pass and update as the dense driver
(its helpers), with the front's kernels around them:

* **image stages**: the backend's own serial kernels of the layers (``conv``:
  the fused lowering-and-product forward, im2col, col2im, the pooling loops;
  the activation kernels). The convolution's weight gradient and dL/dx are
  one BLAS product each per chunk of images, as in the layer, but from
  compiled code (Numba's ``np.dot``, SciPy's BLAS); the dense layers run on
  the small-product kernel: the plan agrees with the per-step loop to
  rounding. The first stage forms no dL/dx.
* **a recurrent layer** (RNN, LSTM or GRU, from zero states, its last hidden
  state into the dense layers): the sequence kernels of ``rnn`` the layers
  call, the input projection and the all-steps products on the small-product
  kernel (the layer's choice at the sizes plans are for; it takes BLAS for
  large ones), BPTT from dL/dh_T alone: the backward loop takes it as the
  final state's gradient and reads no output gradients (the layer's
  (T, B, H) of zeros but the last step), and sums the bias gradients step
  by step while δ_t is in cache (the layer sums all of δ after the loop).

Everything but the convolutions' BLAS products runs on one thread, as the
dense driver.
"""

import math

import numpy as np

from . import conv as _conv
from . import rnn as _rnn
from . import train as _train
from ._gemm import _gemm_small_plain
from ._jit import Deferred, jit, kernel, renamed
from .train import (
    _BAD_INDEX,
    _BAD_LABEL,
    _DONE,
    _NONFINITE,
    _act_bwd,
    _act_fwd,
    _copy_row,
    _gather_targets,
    _list,
    _loss,
    _record,
    _update,
)

# the layers' serial kernels (index [0] of each (serial, parallel) pair)
_FUSED = _conv._fused_tiled[0]
_IM2COL, _COL2IM, _GATHER = _conv._im2col[0], _conv._col2im[0], _conv._gather[0]
_MAX2, _MAXF, _MAXB = _conv._max_pool_2x2[0], _conv._max_pool_fwd[0], _conv._max_pool_bwd[0]
_AVGF, _AVGB = _conv._avg_pool_fwd[0], _conv._avg_pool_bwd[0]

# -- image stages ------------------------------------------------------------------------------------

#: Per stage, after the reference's 15 numbers of geometry: the forward's band rows, the backward's chunk.
_ROWS, _CHUNK = 15, 16


def _image_kernels(dense, conv_forward, suffix):
    """(train, predict, train in scikit-learn's convention) image drivers over the dense passes ``dense``
    (:func:`.train._dense_kernels`) and the convolution's ``conv_forward``."""
    forward, backward = dense["forward"], dense["backward"]

    def _stages_forward(st, x, nb):
        """Every stage's output for the nb images of x (nb, C·H·W); the last one's, (nb, O·Ho·Wo)."""
        codes, acts, slopes, geoms, w2s, bss, hbs, _, _, ys, idxs, _, works, cols, _, _, _ = st
        inp = x
        for s in range(codes.size):
            gm = geoms[s]
            C, H, W, O, kh, kw, ho, wo = gm[0], gm[1], gm[2], gm[3], gm[4], gm[5], gm[6], gm[7]
            sh, sw, ph, pw = gm[8], gm[9], gm[10], gm[11]
            xi = inp.reshape(nb, C, H, W)
            y = ys[s][:nb]
            yi = y.reshape(nb, O, ho, wo)
            code = codes[s]
            if code == 0:
                conv_forward(xi, w2s[s], bss[s], hbs[s], gm, works[s], cols[s], yi)
            elif code == 1:
                _act_fwd(inp, acts[s], slopes[s], y)
            elif code == 2:
                idx = idxs[s][:nb].reshape(nb, O, ho, wo)
                # the layer's choice of loop (conv.max_pool2d_forward): the same maxima and indices
                if kh == 2 and kw == 2 and sh == 2 and sw == 2 and ph == 0 and pw == 0:
                    _MAX2(xi, yi, idx)
                else:
                    _MAXF(xi, kh, kw, sh, sw, ph, pw, yi, idx)
            else:
                _AVGF(xi, kh, kw, sh, sw, ph, pw, gm[14] != 0, yi)
            inp = y
        return inp

    stages_forward = jit(renamed(_stages_forward, suffix))

    def _conv_backward(go, x4, w2, gw2, gb, has_bias, cols, gbuf, dcols, tmp, gm, gin):
        """dW = Σ_chunks G·colsᵀ, db = Σ G, dx = col2im(Wᵀ·G) when gin has images (a chunk of images at a time)."""
        nb = go.shape[0]
        C, O, kh, kw, ho, wo = gm[0], gm[3], gm[4], gm[5], gm[6], gm[7]
        sh, sw, ph, pw, dh, dw = gm[8], gm[9], gm[10], gm[11], gm[12], gm[13]
        K = C * kh * kw
        P = ho * wo
        chunk = gm[_CHUNK]
        need_gin = gin.shape[0] != 0
        gw = gw2.ravel()
        for b0 in range(0, nb, chunk):
            n = min(chunk, nb - b0)
            c = cols[: K * n * P].reshape(K, n * P)
            _IM2COL(x4, b0, n, kh, kw, sh, sw, ph, pw, dh, dw, ho, wo, c)
            g = gbuf[: O * n * P].reshape(O, n * P)
            _GATHER(go, b0, n, g)
            # BLAS, as the layer: these products are long (K and n·P up to thousands), where the
            # small-product kernel took twice BLAS's time (W5's second convolution, 1.6 ms a step)
            if b0 == 0:
                np.dot(g, c.T, gw2)
            else:
                t = tmp.reshape(O, K)
                np.dot(g, c.T, t)
                for i in range(gw.size):
                    gw[i] += tmp[i]
            if need_gin:
                d2 = dcols[: K * n * P].reshape(K, n * P)
                np.dot(w2.T, g, d2)
                _COL2IM(d2, b0, n, kh, kw, sh, sw, ph, pw, dh, dw, ho, wo, gin)
        if has_bias:
            for o in range(O):
                gb[o] = 0
            for b in range(nb):
                for o in range(O):
                    plane = go[b, o].ravel()
                    total = gb[o]
                    for p in range(P):
                        total += plane[p]
                    gb[o] = total

    conv_backward = jit(renamed(_conv_backward, suffix))

    def _stages_backward(st, x, g, nb):
        """The stages' backward passes from g = dL/d(last output), last to first (no dL/dx of the first)."""
        codes, acts, slopes, geoms, w2s, _, hbs, gw2s, gbs, ys, idxs, gins, _, cols, gbufs, dcols, tmps = st
        for s in range(codes.size - 1, -1, -1):
            gm = geoms[s]
            C, H, W, O, kh, kw, ho, wo = gm[0], gm[1], gm[2], gm[3], gm[4], gm[5], gm[6], gm[7]
            sh, sw, ph, pw = gm[8], gm[9], gm[10], gm[11]
            go = g.reshape(nb, O, ho, wo)
            code = codes[s]
            if code == 0:
                xin = x if s == 0 else ys[s - 1][:nb]
                gi = gins[s][:nb].reshape(nb, C, H, W) if s > 0 else gins[s].reshape(0, C, H, W)
                conv_backward(
                    go, xin.reshape(nb, C, H, W), w2s[s], gw2s[s], gbs[s], hbs[s], cols[s], gbufs[s], dcols[s], tmps[s],
                    gm, gi,
                )  # fmt: skip
            elif s == 0:
                break  # nothing below needs dL/dx
            elif code == 1:
                _act_bwd(g, ys[s][:nb], acts[s], slopes[s], gins[s][:nb])
            elif code == 2:
                _MAXB(go, idxs[s][:nb].reshape(nb, O, ho, wo), gins[s][:nb].reshape(nb, C, H, W))
            else:
                _AVGB(go, kh, kw, sh, sw, ph, pw, gm[14] != 0, gins[s][:nb].reshape(nb, C, H, W))
            if s == 0:
                break
            g = gins[s][:nb]

    stages_backward = jit(renamed(_stages_backward, suffix))

    def _image_steps(ws, bs_, hb, ys, ds, gins, gws, gbs, acts, slopes, ps, gs, s1s, s2s, decays, st, xb, lb, tb, gz,
                     x, labels, values, index, batch_size, loss, reduction, opt, lr, h1, h2, wd, eps, decoupled, c1, c2,
                     step0, losses, pred_i, pred_b):  # fmt: skip
        """The image driver: (steps run, status), as the reference's train_steps; x is (N, C·H·W)."""
        n = x.shape[0]
        nsteps = losses.shape[0]
        nindex = min(index.shape[0], nsteps * batch_size)
        nout = gz.shape[1]
        for s in range(nsteps):
            lo = s * batch_size
            nb = min(batch_size, nindex - lo)
            for i in range(nb):
                row = index[lo + i]
                if np.uint64(row) >= np.uint64(n):
                    return s, _BAD_INDEX
                _copy_row(xb[i], x[row])
            if not _gather_targets(labels, values, index, lo, nb, loss, lb, tb, nout):
                return s, _BAD_LABEL
            feats = stages_forward(st, xb[:nb], nb)
            z = forward(ws, bs_, hb, ys, acts, slopes, feats, nb, None)
            g = gz[:nb]
            value = _loss(z, g, lb[:nb], tb[:nb], nb, loss, reduction, ps, decays, wd)
            losses[s] = value
            if not math.isfinite(value):
                return s, _NONFINITE
            _record(z, lo, pred_i, pred_b)
            backward(ws, hb, ys, ds, gins, gws, gbs, acts, slopes, feats, g, nb, True)
            stages_backward(st, xb[:nb], gins[0][:nb], nb)
            _update(ps, gs, s1s, s2s, decays, opt, lr, h1, h2, wd, eps, decoupled, c1, c2, step0 + s + 1, nb, reduction)
        return nsteps, _DONE

    def _image_predict(ws, bs_, hb, ys, acts, slopes, st, xb, x, batch_size, out):
        n = x.shape[0]
        for lo in range(0, n, batch_size):
            nb = min(batch_size, n - lo)
            for i in range(nb):
                _copy_row(xb[i], x[lo + i])
            forward(ws, bs_, hb, ys, acts, slopes, stages_forward(st, xb[:nb], nb), nb, out[lo : lo + nb])

    return (
        kernel(renamed(_image_steps, suffix), inputs="x labels values index"),
        kernel(renamed(_image_predict, suffix), inputs="x"),
        kernel(renamed(_image_steps, "_sklearn" + suffix, replace=_train.SKLEARN_LOSS), inputs="x labels values index"),
    )


@jit
def _conv_forward_tiled(xi, w2, bias, has_bias, gm, work, cols, yi):
    """The layer's fused forward (lowering and tiled products band by band, conv._fused_tiled)."""
    _FUSED(xi, w2, bias, has_bias, gm[4], gm[5], gm[8], gm[9], gm[10], gm[11], gm[12], gm[13], gm[6], gm[7],
           gm[_ROWS], work, yi)  # fmt: skip


@jit
def _conv_forward_plain(xi, w2, bias, has_bias, gm, work, cols, yi):
    """The fused forward's bits from the plain product, image by image (conv._fused_fallback, compiled)."""
    O, K = w2.shape
    ho, wo = gm[6], gm[7]
    P = ho * wo
    c = cols[: K * P].reshape(K, P)
    for b in range(xi.shape[0]):
        _IM2COL(xi, b, 1, gm[4], gm[5], gm[8], gm[9], gm[10], gm[11], gm[12], gm[13], ho, wo, c)
        ob = yi[b].reshape(O, P)
        _gemm_small_plain(w2, c, False, False, ob, bias, False, 0)
        if has_bias:  # per output row, once, as the fused kernel adds it
            for o in range(O):
                row = ob[o]
                bo = bias[o]
                for p in range(P):
                    row[p] += bo


_IMAGE_TILED = _image_kernels(_train.TILED, _conv_forward_tiled, "_tiled")
_IMAGE_PLAIN = _image_kernels(_train.PLAIN, _conv_forward_plain, "_plain")
#: The image drivers (train, predict): the tiled ones, or the plain ones (same bits) while those compile.
IMAGE = tuple(Deferred(_IMAGE_TILED[k], _IMAGE_PLAIN[k]) for k in (0, 1))
#: The image training driver in scikit-learn's convention.
IMAGE_SKLEARN = Deferred(_IMAGE_TILED[2], _IMAGE_PLAIN[2])


def image_tables(stages, dt, bmax, training):
    """The stages' table for the image driver: a tuple of arrays and typed lists (placeholders where absent)."""
    none1, none2 = np.empty(0, dt), np.empty((0, 0), dt)
    cols = {k: [] for k in ("w2", "b", "gw2", "gb", "y", "idx", "gin", "work", "cols", "gbuf", "dcols", "tmp")}
    geoms = np.zeros((len(stages), 17), np.int64)
    for s, (code, _, _, w, b, gw, gb, geom, y, idx, gin) in enumerate(stages):
        C, H, W, O, kh, kw, ho, wo = geom[:8]
        K, P = C * kh * kw, ho * wo
        geoms[s, :15] = geom
        conv = code == 0
        rows = max(1, min(ho, _conv._BAND_ELEMENTS // max(1, K * wo)))  # conv2d_forward's band
        chunk = _conv._chunk(bmax, K, P)
        geoms[s, _ROWS], geoms[s, _CHUNK] = rows, chunk
        back = conv and training
        cols["w2"].append(w.reshape(O, K) if conv else none2)
        cols["b"].append(none1 if b is None else b)
        cols["gw2"].append(gw.reshape(O, K) if back else none2)
        cols["gb"].append(none1 if gb is None else gb)
        cols["y"].append(y)
        cols["idx"].append(np.empty((0, 0), np.int64) if idx is None else idx)
        cols["gin"].append(none2 if gin is None else gin)
        cols["work"].append(np.empty((1, K * rows * wo), dt) if conv else none2)
        # the backward's chunks of columns; one image's for the plain forward (predicting too)
        cols["cols"].append(np.empty(K * (chunk if training else 1) * P, dt) if conv else none1)
        cols["gbuf"].append(np.empty(O * chunk * P, dt) if back else none1)
        cols["dcols"].append(np.empty(K * chunk * P, dt) if back and gin is not None else none1)
        cols["tmp"].append(np.empty(O * K, dt) if back else none1)
    codes = np.array([st[0] for st in stages], np.int64)
    acts = np.array([st[1] for st in stages], np.int64)
    slopes = np.array([st[2] for st in stages], np.float64)
    hbs = np.array([st[4] is not None for st in stages])
    lists = {k: _list(v) for k, v in cols.items()}
    return (
        codes, acts, slopes, geoms, lists["w2"], lists["b"], hbs, lists["gw2"], lists["gb"], lists["y"],
        lists["idx"], lists["gin"], lists["work"], lists["cols"], lists["gbuf"], lists["dcols"], lists["tmp"],
    )  # fmt: skip


# -- a recurrent layer ------------------------------------------------------------------------------

_FWD = ("_rnn_fwd", "_lstm_fwd", "_gru_fwd")
_BWD = ("_rnn_bwd", "_lstm_bwd", "_gru_bwd")


def _recurrent_kernels(cell, dense, kernels, suffix):
    """(train, predict, train in scikit-learn's convention) drivers for one cell (0 RNN, 1 LSTM, 2 GRU) over
    the dense passes ``dense`` and the recurrent ``kernels`` (``rnn._TILED`` or ``rnn._PLAIN``), compiled on
    their first calls."""
    fwd, bwd = kernels[_FWD[cell]], kernels[_BWD[cell]]
    wgrads = kernels["_weight_grads_small"]
    _forward, _backward = dense["forward"], dense["backward"]

    def gather(x, index, lo, nb, xs):
        """xs (T, nb, I) = the sequences x[index[lo:lo + nb]], time-major; False at an index outside [0, N)."""
        n = x.shape[0]
        T = xs.shape[0]
        for i in range(nb):
            row = index[lo + i]
            if np.uint64(row) >= np.uint64(n):
                return False
            for t in range(T):
                _copy_row(xs[t, i], x[row, t])
        return True

    def forward(ra, xs, nb, relu):
        """The layer from zero states over xs; its last hidden state (nb, H)."""
        _, h0b, c0b, w_ih, w_hh, b_ih, b_hh, outb, cellb, gatesb, hnb = ra[:11]
        T = xs.shape[0]
        H = w_hh.shape[1]
        G = w_ih.shape[0]
        h0 = h0b[: nb * H].reshape(nb, H)
        out = outb[: T * nb * H].reshape(T, nb, H)
        # cell is a constant of this closure: only its branch is compiled
        if cell == 0:
            fwd(xs, h0, w_ih, w_hh, b_ih, b_hh, relu, None, out)
        elif cell == 1:
            c0 = c0b[: nb * H].reshape(nb, H)
            fwd(xs, h0, c0, w_ih, w_hh, b_ih, b_hh, None, out, cellb[: T * nb * H].reshape(T, nb, H),
                gatesb[: T * nb * G].reshape(T, nb, G))  # fmt: skip
        else:
            fwd(xs, h0, w_ih, w_hh, b_ih, b_hh, None, out, gatesb[: T * nb * G].reshape(T, nb, G),
                hnb[: T * nb * H].reshape(T, nb, H))  # fmt: skip
        return out[T - 1]

    def backward(ra, xs, nb, relu, gh):
        """BPTT from dL/dh_T = gh, dL/d(out) zero at the other steps; the layer's gradients (no dL/dx).

        gh goes in as the final state's gradient and the steps' output gradients are not read (no
        zeroed (T, B, H) buffer); the bias gradients are summed by the backward loop, step by step."""
        _, h0b, c0b, w_ih, w_hh, _, _, outb, cellb, gatesb, hnb, workb, _, gh0b, gc0b = ra[:15]
        gw_ih, gw_hh, gb_ih, gb_hh = ra[15:]
        T, _, I = xs.shape
        H = w_hh.shape[1]
        G = w_ih.shape[0]
        h0 = h0b[: nb * H].reshape(nb, H)
        out = outb[: T * nb * H].reshape(T, nb, H)
        gh0 = gh0b[: nb * H].reshape(nb, H)
        x2 = xs.reshape(T * nb, I)
        out2 = outb[: T * nb * H].reshape(T * nb, H)
        if cell == 0:
            bwd(None, gh, h0, w_hh, out, relu, workb[: T * nb * H].reshape(T, nb, H), gh0, gb_ih, gb_hh)
            dx = workb[: T * nb * H].reshape(T * nb, H)
            dh = dx
        elif cell == 1:
            bwd(None, gh, None, c0b[: nb * H].reshape(nb, H), w_hh, cellb[: T * nb * H].reshape(T, nb, H),
                gatesb[: T * nb * G].reshape(T, nb, G), workb[: T * nb * G].reshape(T, nb, G), gh0,
                gc0b[: nb * H].reshape(nb, H), gb_ih, gb_hh)  # fmt: skip
            dx = workb[: T * nb * G].reshape(T * nb, G)
            dh = dx
        else:
            dxs, dhs = bwd(None, gh, h0, w_hh, out, gatesb[: T * nb * G].reshape(T, nb, G),
                           hnb[: T * nb * H].reshape(T, nb, H), workb[: T * nb * 2 * G].reshape(T, nb, 2 * G), gh0,
                           gb_ih, gb_hh)  # fmt: skip
            dx = dxs.reshape(T * nb, G)
            dh = dhs.reshape(T * nb, G)
        # the all-steps products, in the layer's order (rnn._all_steps_grads)
        wgrads(dx, dh, x2, h0, out2, gw_ih, gw_hh)

    gather, forward, backward = (jit(renamed(f, f"_{cell}{suffix}")) for f in (gather, forward, backward))

    def _recurrent_steps(ws, bs_, hb, ys, ds, gins, gws, gbs, acts, slopes, ps, gs, s1s, s2s, decays, ra, relu, lb,
                         tb, gz, x, labels, values, index, batch_size, loss, reduction, opt, lr, h1, h2, wd, eps,
                         decoupled, c1, c2, step0, losses, pred_i, pred_b):  # fmt: skip
        """The recurrent driver: (steps run, status), as the reference's train_steps; x is (N, T, I)."""
        T, I = x.shape[1], x.shape[2]
        nsteps = losses.shape[0]
        nindex = min(index.shape[0], nsteps * batch_size)
        nout = gz.shape[1]
        xbuf = ra[0]
        for s in range(nsteps):
            lo = s * batch_size
            nb = min(batch_size, nindex - lo)
            xs = xbuf[: T * nb * I].reshape(T, nb, I)
            if not gather(x, index, lo, nb, xs):
                return s, _BAD_INDEX
            if not _gather_targets(labels, values, index, lo, nb, loss, lb, tb, nout):
                return s, _BAD_LABEL
            hT = forward(ra, xs, nb, relu)
            z = _forward(ws, bs_, hb, ys, acts, slopes, hT, nb, None)
            g = gz[:nb]
            value = _loss(z, g, lb[:nb], tb[:nb], nb, loss, reduction, ps, decays, wd)
            losses[s] = value
            if not math.isfinite(value):
                return s, _NONFINITE
            _record(z, lo, pred_i, pred_b)
            _backward(ws, hb, ys, ds, gins, gws, gbs, acts, slopes, hT, g, nb, True)
            backward(ra, xs, nb, relu, gins[0][:nb])
            _update(ps, gs, s1s, s2s, decays, opt, lr, h1, h2, wd, eps, decoupled, c1, c2, step0 + s + 1, nb,
                    reduction)  # fmt: skip
        return nsteps, _DONE

    def _recurrent_predict(ws, bs_, hb, ys, acts, slopes, ra, relu, x, batch_size, out):
        n, T, I = x.shape
        xbuf = ra[0]
        for lo in range(0, n, batch_size):
            nb = min(batch_size, n - lo)
            xs = xbuf[: T * nb * I].reshape(T, nb, I)
            gather(x, np.arange(lo, lo + nb), 0, nb, xs)
            _forward(ws, bs_, hb, ys, acts, slopes, forward(ra, xs, nb, relu), nb, out[lo : lo + nb])

    suffix = f"_{('rnn', 'lstm', 'gru')[cell]}{suffix}"
    return (
        kernel(renamed(_recurrent_steps, suffix), inputs="x labels values index"),
        kernel(renamed(_recurrent_predict, suffix), inputs="x"),
        kernel(
            renamed(_recurrent_steps, "_sklearn" + suffix, replace=_train.SKLEARN_LOSS), inputs="x labels values index"
        ),
    )


def _recurrent_pair(cell):
    tiled = _recurrent_kernels(cell, _train.TILED, _rnn._TILED, "_tiled")
    plain = _recurrent_kernels(cell, _train.PLAIN, _rnn._PLAIN, "_plain")
    return tuple(Deferred(tiled[k], plain[k]) for k in (0, 1, 2))


_RECURRENT = tuple(_recurrent_pair(cell) for cell in range(3))
#: (train, predict) drivers per cell: the tiled ones, or the plain ones (same bits) while those compile.
RECURRENT = tuple(d[:2] for d in _RECURRENT)
#: The training driver per cell in scikit-learn's convention.
RECURRENT_SKLEARN = tuple(d[2] for d in _RECURRENT)


def recurrent_tables(front, dt, training):
    """(cell, relu, the arrays tuple of the recurrent driver): flat buffers, placeholders where absent."""
    cell, relu, _, arrays = front
    (x, h0, c0, w_ih, w_hh, b_ih, b_hh, out, cellb, gates, hn, work, go, _, _, _, gh0, gc0,
     gw_ih, gw_hh, gb_ih, gb_hh) = arrays  # fmt: skip
    none1, none2 = np.empty(0, dt), np.empty((0, 0), dt)

    def one(a):
        return none1 if a is None else a

    ra = (
        x, h0, one(c0), w_ih, w_hh, b_ih, b_hh, out, one(cellb), one(gates), one(hn), one(work), one(go), one(gh0),
        one(gc0), none2 if gw_ih is None else gw_ih, none2 if gw_hh is None else gw_hh,
        gb_ih if training else None, gb_hh if training else None,
    )  # fmt: skip
    return int(cell), bool(relu), ra
