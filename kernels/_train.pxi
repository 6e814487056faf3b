# Whole training steps of a dense network in one call (fastnn.ops.TrainPlan):
# gather the minibatch by an index array, forward, loss, backward, update, for
# K steps, with no Python object touched between them. Every stage calls the
# same routine the per-kernel entry points call (_dense_fwd, _dense_bwd,
# _xent, _pair, _sgd, _adam), in the same order as fastnn's per-step loop, so
# a step here gives the loop's bits.
#
# A recurrent layer in front (RNN, LSTM or GRU, then its last time step)
# runs through _rnn.pxi's seq_forward and seq_backward, the routines its
# per-kernel entry points call, on the binding's own pointer table: the rows
# are gathered time-major, the layer runs from zero states, and its BPTT gets
# dL/d(out) zero but at the last step, where the first dense layer's dL/dx
# is written straight in.
#
# Image stages in front (convolution, max and average pooling, activation,
# then the flattened output into the dense layers) run _conv.pxi's and
# _elementwise.pxi's routines in the per-step loop's order; the first stage
# forms no dL/dx, as there. A ReLU followed by a 2x2, stride-2 max pooling
# runs as one pass (relu_maxpool2x2: the values and indices the two give)
# and, backwards, as one scatter: dL/d(ReLU input) at each window's argmax is
# (0 + g)·[max > 0], zero elsewhere, the bits unpooling then the ReLU's
# backward give. The ReLU's output is never stored.
#
# Float32 stages of direct convolutions and fused ReLU + max poolings only
# (W5's kind) run image by image instead (see "the image-by-image path"
# below): one parallel region forward and one backward per step, each thread
# carrying its own images through every stage. What equals what:
#   * plan = per-step loop, bit for bit, at the same thread count: the
#     images go to the threads in the static blocks the direct backward
#     kernel gives them, each thread adds its images' weight-gradient
#     partials into its own lane slots, and both add the slots in one fixed
#     order (_direct_wgrad_sum); the bias gradient is per-image sums added
#     in image order in both (_bias_image, _bias_sum); the forward values
#     do not depend on the thread;
#   * K steps per call = K calls of one step, bit for bit; the same thread
#     count gives the same bits run to run;
#   * different thread counts give dW to rounding (the blocks, hence the
#     partial sums, differ), as the per-step loop's kernels do;
#   * the NumPy specification (fastnn.backends.reference.train) to rounding.
# tests/test_compiled_plan_cnn.py checks each of these on teams of 1-3.

from libc.math cimport isfinite, log, pow

# loss and optimizer codes (fastnn.ops.train_plan names them)
cdef enum:
    _LOSS_XENT = 0
    _LOSS_MSE = 1
    _LOSS_BCE = 2
    _OPT_SGD = 0
    _OPT_ADAM = 1
    _RED_SUM = 0
    _RED_MEAN = 1
    _RED_SKLEARN = 2   # scikit-learn's MLP convention (fastnn.backends.reference.train)


cdef struct _Layer:
    fnn_idx nin, nout
    int act            # FNN_ACT_*; leaky ReLU runs as its own pass after the product
    double slope       # leaky ReLU's negative slope
    void *w            # (nout, nin)
    void *b            # (nout,) or NULL
    void *gw
    void *gb
    void *y            # (bmax, nout): this layer's output
    void *delta        # (bmax, nout): g act'(y), NULL for the identity
    void *gin          # (bmax, nin): dL/dx, NULL for the first layer


cdef struct _Update:
    void *p
    void *g
    void *s1           # velocity, or Adam's first moment (NULL: plain SGD)
    void *s2           # Adam's second moment
    double decay       # 1: the weight decay applies, 0: it does not (scikit-learn's intercepts)
    fnn_idx n


# image stage codes (fastnn.ops.train_plan.FEATURE_CODES)
cdef enum:
    _ST_CONV = 0
    _ST_ACT = 1
    _ST_MAX = 2
    _ST_AVG = 3


cdef struct _Stage:
    int code
    int act            # FNN_ACT_* of an activation stage
    double slope
    Geom g             # one image's geometry (g.B set per step); pools: C = O planes per image
    bint cip           # average pooling's count_include_pad
    void *w            # (O, C, kH, kW), convolutions
    void *b            # (O,) or NULL
    void *gw
    void *gb
    void *y            # (bmax, nout): this stage's output
    long long *idx     # (bmax, nout): max pooling's argmax per output
    void *gin          # (bmax, nin): dL/dx, NULL for the first stage
    fnn_idx nin, nout  # values per image in and out
    bint fused         # a ReLU run inside the 2x2 max pooling after it (set on both stages)


cdef struct _ConvWs:
    # one convolution stage of the image-by-image path: its packed operands, and scratch per thread
    DirectConv d
    float *xbuf        # (threads, d.xlen): the padded image; the borders stay zero
    float *obuf        # (threads, d.OP·d.Q): the forward product
    float *gbuf        # (threads, O·d.gplane): G at row width Wp; zero but where G is written
    float *ibuf        # (threads, d.CP·d.QI): dL/dx's product (stages that form dL/dx)
    float *gwt         # (threads, O·K·FNN_WGRAD_SLOTS): the weight-gradient partials (training)
    double *bsum       # (bmax, O): the bias gradient's sums per image (training, with a bias)


cdef class TrainBinding:
    """The C view of one bound network: layer and update tables, and the workspace they use.

    Built by fastnn.ops.TrainPlan from arrays it has validated; it keeps
    them alive. Tables: ``layers`` = ((w, b, gw, gb, act, slope, y, delta,
    gin), ...), ``updates`` = ((p, g, s1, s2, decay), ...), ``xb`` the gathered
    batch (bmax, nin), ``tb`` the gathered targets (labels or values),
    ``gz`` dL/d(output) (bmax, nout).
    """
    cdef _Layer *layers
    cdef _Update *updates
    cdef int nl, nu
    cdef fnn_idx bmax
    cdef bint f32
    cdef void *xb
    cdef void *tb
    cdef void *gz
    cdef object keep
    # the recurrent layer in front (rec), its sizes (seq.B set per step) and its pointer table
    cdef bint rec
    cdef Seq seq
    cdef void *fp[S_NSLOTS]
    cdef fnn_idx go_rows   # the batch size whose layout go's zeros are laid out for (-1: none yet)
    # the image stages in front (ns of them)
    cdef _Stage *stages
    cdef int ns
    # the image-by-image path (float32 convolutions on the direct kernels, and fused ReLU + pooling)
    cdef bint by_image     # the stages are of that kind
    cdef _ConvWs *cws      # per stage (convolutions only), NULL until the first such step
    cdef int cws_nt        # the threads the scratch is laid out for
    cdef float *gscr       # (threads, 2, gmax): each thread's dL/dx of its image, stage to stage (training)
    cdef fnn_idx gmax      # the largest dL/dx of one image
    cdef readonly long long by_image_steps   # training steps whose stages ran image by image (tests read it)

    def __cinit__(self, tuple layers, tuple updates, cnp.ndarray xb, cnp.ndarray tb, cnp.ndarray gz,
                  tuple front=None, tuple stages=None):
        cdef int i
        cdef tuple t, geom
        cdef _Stage *S
        self.nl = len(layers)
        self.nu = len(updates)
        if self.nl < 1:
            raise ValueError("TrainBinding needs at least one layer")
        self.layers = <_Layer*>calloc(self.nl, sizeof(_Layer))
        self.updates = <_Update*>calloc(max(self.nu, 1), sizeof(_Update))
        if self.layers == NULL or self.updates == NULL:
            raise MemoryError()
        self.keep = (layers, updates, xb, tb, gz, front, stages)
        self.f32 = _f32(xb)
        memset(self.fp, 0, sizeof(self.fp))
        self.go_rows = -1
        self.rec = front is not None
        if self.rec:   # (cell, relu, T, arrays by slot), validated by fastnn.ops.TrainPlan
            self.seq.cell, self.seq.relu, self.seq.T = front[0], front[1], front[2]
            t = front[3]
            if len(t) != S_NARRAYS:
                raise ValueError("the recurrent table needs one entry per slot")
            self.seq.H = cnp.PyArray_DIM(<cnp.ndarray>t[S_W_HH], 1)
            self.seq.nin = cnp.PyArray_DIM(<cnp.ndarray>t[S_W_IH], 1)
            self.seq.G = 4 if self.seq.cell == CELL_LSTM else (3 if self.seq.cell == CELL_GRU else 1)
            self.seq.W = (6 if self.seq.cell == CELL_GRU else self.seq.G) * self.seq.H
            self.seq.DH = 3 * self.seq.H if self.seq.cell == CELL_GRU else 0
            self.seq.B = 0
            _fill(self.fp, t)
        self.ns = 0 if stages is None else len(stages)
        if self.ns:   # ((code, act, slope, w, b, gw, gb, geom, y, idx, gin), ...), validated by TrainPlan
            self.stages = <_Stage*>calloc(self.ns, sizeof(_Stage))
            if self.stages == NULL:
                raise MemoryError()
            for i in range(self.ns):
                t = stages[i]
                S = &self.stages[i]
                S.code, S.act, S.slope = t[0], t[1], t[2]
                S.w, S.b, S.gw, S.gb = _data(t[3]), _data(t[4]), _data(t[5]), _data(t[6])
                geom = t[7]
                S.g.B = 0
                S.g.C, S.g.H, S.g.W, S.g.O, S.g.kh, S.g.kw, S.g.ho, S.g.wo = geom[:8]
                S.g.sh, S.g.sw, S.g.ph, S.g.pw, S.g.dh, S.g.dw = geom[8:14]
                S.cip = geom[14]
                S.y, S.idx, S.gin = _data(t[8]), <long long*>_data(t[9]), _data(t[10])
                S.nin = S.g.C * S.g.H * S.g.W
                S.nout = S.g.O * S.g.ho * S.g.wo
            for i in range(1, self.ns - 1):   # ReLU then 2x2 / stride 2 max pooling (not the first stage)
                S = &self.stages[i]
                if S.code == _ST_ACT and S.act == FNN_ACT_RELU and self.stages[i + 1].code == _ST_MAX \
                        and _pool2x2(&self.stages[i + 1].g):
                    S.fused = True
                    self.stages[i + 1].fused = True
            self.by_image = _f32(xb)
            for i in range(self.ns):
                if not (self.stages[i].code == _ST_CONV or self.stages[i].fused):
                    self.by_image = False
        self.bmax = cnp.PyArray_DIM(xb, 0)
        self.xb = _data(xb)
        self.tb = _data(tb)
        self.gz = _data(gz)
        for i in range(self.nl):
            t = layers[i]
            self.layers[i].nout = cnp.PyArray_DIM(<cnp.ndarray>t[0], 0)
            self.layers[i].nin = cnp.PyArray_DIM(<cnp.ndarray>t[0], 1)
            self.layers[i].act = <int>t[4]
            self.layers[i].slope = <double>t[5]
            self.layers[i].w = _data(t[0])
            self.layers[i].b = _data(t[1])
            self.layers[i].gw = _data(t[2])
            self.layers[i].gb = _data(t[3])
            self.layers[i].y = _data(t[6])
            self.layers[i].delta = _data(t[7])
            self.layers[i].gin = _data(t[8])
        for i in range(self.nu):
            t = updates[i]
            self.updates[i].p = _data(t[0])
            self.updates[i].g = _data(t[1])
            self.updates[i].s1 = _data(t[2])
            self.updates[i].s2 = _data(t[3])
            self.updates[i].decay = <double>t[4]
            self.updates[i].n = cnp.PyArray_SIZE(<cnp.ndarray>t[0])

    def __dealloc__(self):
        _free_conv_ws(self.cws, self.ns)
        free(self.gscr)
        free(self.layers)
        free(self.updates)
        free(self.stages)


cdef struct _Run:
    fnn_idx nrows             # rows of x (and of the targets)
    fnn_idx nfeat, ncols      # features per sample, targets per sample (1 for labels)
    const fnn_idx *index      # rows of x, in step order
    fnn_idx nindex, bs
    int loss
    int reduction
    int opt
    double lr, h1, h2, wd, eps   # SGD: momentum, nesterov; Adam: beta1, beta2
    bint decoupled
    long long step0              # Adam's step count before the first step
    double *losses               # one per step
    fnn_idx *pred_i              # argmax per sample (or NULL)
    cnp.npy_bool *pred_b         # logit > 0 per target (or NULL)


cdef int _forward(TrainBinding bd, const real *x, fnn_idx nb) noexcept nogil:
    """Every layer's output for the nb rows at x."""
    cdef int l
    cdef _Layer *L
    cdef const real *inp = x
    for l in range(bd.nl):
        L = &bd.layers[l]
        if L.act == FNN_ACT_LEAKY_RELU:
            if _dense_fwd(inp, <real*>L.w, <real*>L.b, <real*>L.y, nb, L.nin, L.nout, FNN_ACT_IDENTITY) != 0:
                return -1
            _unary(FNN_ACT_LEAKY_RELU, <real*>L.y, <const real*>NULL, <real*>L.y, nb * L.nout, L.slope)
        elif _dense_fwd(inp, <real*>L.w, <real*>L.b, <real*>L.y, nb, L.nin, L.nout, L.act) != 0:
            return -1
        inp = <real*>L.y
    return 0


cdef int _backward(TrainBinding bd, const real *x, fnn_idx nb) noexcept nogil:
    """Every parameter gradient from dL/d(output) in bd.gz (dL/dx of the first layer is not formed)."""
    cdef int l
    cdef _Layer *L
    cdef const real *g = <real*>bd.gz
    cdef const real *xin
    for l in range(bd.nl - 1, -1, -1):
        L = &bd.layers[l]
        xin = x if l == 0 else <real*>bd.layers[l - 1].y
        if L.act == FNN_ACT_LEAKY_RELU:
            _binary(FNN_ACT_LEAKY_RELU, g, <real*>L.y, <real*>L.delta, nb * L.nout, L.slope)
            if _dense_bwd(<real*>L.delta, xin, <real*>L.w, <real*>L.y, <real*>NULL, <real*>L.gin, <real*>L.gw,
                          <real*>L.gb, nb, L.nin, L.nout, FNN_ACT_IDENTITY) != 0:
                return -1
        elif _dense_bwd(g, xin, <real*>L.w, <real*>L.y, <real*>L.delta, <real*>L.gin, <real*>L.gw, <real*>L.gb,
                        nb, L.nin, L.nout, L.act) != 0:
            return -1
        g = <real*>L.gin
    return 0


cdef inline real *_last_hidden(TrainBinding bd, fnn_idx nb, const real *dtype_of) noexcept nogil:
    """h_T of a step of nb rows: the last (nb, H) block of the recurrent output."""
    return <real*>bd.fp[S_OUT] + (bd.seq.T - 1) * nb * bd.seq.H


cdef int _rec_forward(TrainBinding bd, fnn_idx nb, const real *dtype_of) noexcept nogil:
    """The recurrent layer over the gathered sequence (T, nb, I), from zero states."""
    cdef Seq s = bd.seq
    cdef void *p[S_NSLOTS]
    s.B = nb
    s.threads = _num_threads   # the team now (the adaptive cap may change it between calls)
    memcpy(p, bd.fp, sizeof(p))   # seq_forward uses the scratch slots (NULL here) and frees them
    return seq_forward(&s, <real**>p)


cdef int _rec_backward(TrainBinding bd, fnn_idx nb, const real *dtype_of) noexcept nogil:
    """BPTT of the recurrent layer; go's last step holds dL/dh_T (written by the first dense layer)."""
    cdef Seq s = bd.seq
    cdef void *p[S_NSLOTS]
    s.B = nb
    s.threads = _num_threads
    memcpy(p, bd.fp, sizeof(p))
    return seq_backward(&s, <real**>p)


cdef inline void _rec_grad_out(TrainBinding bd, fnn_idx nb, const real *dtype_of) noexcept nogil:
    """Point the first dense layer's dL/dx at go's last step; zero the steps before it when the
    batch size (the layout) changed since they were last zeroed (nothing else writes them)."""
    cdef fnn_idx before = (bd.seq.T - 1) * nb * bd.seq.H
    if bd.go_rows != nb:
        memset(bd.fp[S_GO], 0, before * sizeof(real))
        bd.go_rows = nb
    bd.layers[0].gin = <real*>bd.fp[S_GO] + before


cdef inline bint _pool2x2(const Geom *g) noexcept nogil:
    """Whether _max_pool_plane runs this pooling as maxpool2x2 (2x2 windows, stride 2, no padding)."""
    return g.kh == 2 and g.kw == 2 and g.sh == 2 and g.sw == 2 and g.ph == 0 and g.pw == 0


cdef void _relu_max_pool(const real *xp, real *op, long long *ip, fnn_idx planes, fnn_idx H, fnn_idx W,
                         fnn_idx ho, fnn_idx wo) noexcept nogil:
    """_max_pool (2x2, stride 2) of relu(xp), planes over the team as there."""
    cdef fnn_idx r
    for r in prange(planes, nogil=True, schedule="static", num_threads=_threads_for(<double>planes * H * W)):
        relu_maxpool2x2(xp + r * H * W, W, ho, wo, op + r * ho * wo, ip + r * ho * wo)


cdef inline void _relu_max_unpool_plane(const real *gp, const real *yp, const long long *ip, real *plane,
                                        fnn_idx HW, fnn_idx n_out) noexcept nogil:
    """One plane of _relu_max_unpool."""
    cdef fnn_idx p
    memset(plane, 0, HW * sizeof(real))
    for p in range(n_out):
        plane[ip[p]] = (<real>0 + gp[p]) * (1 if yp[p] > 0 else 0)


cdef void _relu_max_unpool(const real *gp, const real *yp, const long long *ip, real *dp, fnn_idx planes,
                           fnn_idx HW, fnn_idx n_out) noexcept nogil:
    """dL/d(ReLU input): (0 + dy)·[y > 0] at each argmax (indices from this plan's own forward pass), zero
    elsewhere: unpooling's 0 + dy, then the ReLU's backward g·(y > 0 ? 1 : 0) with y the pooled maximum."""
    cdef fnn_idx r
    for r in prange(planes, nogil=True, schedule="static", num_threads=_threads_for(<double>planes * HW)):
        _relu_max_unpool_plane(gp + r * n_out, yp + r * n_out, ip + r * n_out, dp + r * HW, HW, n_out)


cdef int _stages_forward(TrainBinding bd, const real *x, fnn_idx nb) noexcept nogil:
    """Every image stage's output for the nb images at x (the conv stages as conv2d_forward runs them)."""
    cdef int i, rc = 0
    cdef _Stage *S
    cdef const real *inp = x
    cdef bint direct
    for i in range(bd.ns):
        S = &bd.stages[i]
        S.g.B = nb
        if S.code == _ST_CONV:
            if real is float:
                direct = _direct_geom(True, &S.g)
            else:
                direct = False
            if direct:
                rc = _conv_fwd_direct(<const float*>inp, <float*>S.w, <float*>S.b, <float*>S.y, &S.g)
            else:
                rc = _conv_fwd_cols(inp, <real*>S.w, <real*>S.b, <real*>S.y, &S.g)
            if rc != 0:
                return -1
        elif S.code == _ST_ACT:
            if S.fused:
                continue   # run by the pooling after it, from this stage's input
            _unary(S.act, inp, <const real*>NULL, <real*>S.y, nb * S.nout, S.slope)
        elif S.code == _ST_MAX and S.fused:
            _relu_max_pool(inp, <real*>S.y, S.idx, nb * S.g.C, S.g.H, S.g.W, S.g.ho, S.g.wo)
        elif S.code == _ST_MAX:
            _max_pool(inp, <real*>S.y, S.idx, nb * S.g.C, S.g.H, S.g.W, S.g.ho, S.g.wo, S.g.kh, S.g.kw, S.g.sh,
                      S.g.sw, S.g.ph, S.g.pw)
        else:
            _avg_pool(inp, <real*>S.y, <const real*>NULL, <real*>NULL, nb * S.g.C, S.g.H, S.g.W, S.g.ho, S.g.wo,
                      S.g.kh, S.g.kw, S.g.sh, S.g.sw, S.g.ph, S.g.pw, S.cip)
        inp = <real*>S.y
    return 0


cdef int _stages_backward(TrainBinding bd, const real *x, const real *g, fnn_idx nb) noexcept nogil:
    """The stages' backward passes from g = dL/d(last stage's output), last to first; the first stage
    forms no dL/dx (a convolution there writes its weight gradients only)."""
    cdef int i, rc = 0
    cdef _Stage *S
    cdef const real *xin
    cdef bint direct
    for i in range(bd.ns - 1, -1, -1):
        S = &bd.stages[i]
        xin = x if i == 0 else <real*>bd.stages[i - 1].y
        if S.code == _ST_CONV:
            # conv2d_backward's choice: the direct kernel only on finite inputs and weights
            if real is float:
                direct = _direct_geom(True, &S.g) and all_finite(xin, nb * S.nin) \
                    and all_finite(<real*>S.w, S.g.O * S.g.C * S.g.kh * S.g.kw)
            else:
                direct = False
            if direct:
                rc = _conv_bwd_direct(<const float*>g, <const float*>xin, <float*>S.w, <float*>S.gin, <float*>S.gw,
                                      <float*>S.gb, &S.g)
            else:
                rc = _conv_bwd_cols(g, xin, <real*>S.w, <real*>S.gin, <real*>S.gw, <real*>S.gb, &S.g)
            if rc != 0:
                return -1
        elif i == 0:
            break   # nothing below needs dL/dx
        elif S.code == _ST_MAX and S.fused:   # into the ReLU's dL/dx; the ReLU stage then passes it on
            _relu_max_unpool(g, <real*>S.y, S.idx, <real*>bd.stages[i - 1].gin, nb * S.g.C, S.g.H * S.g.W,
                             S.g.ho * S.g.wo)
        elif S.code == _ST_ACT and S.fused:
            pass
        elif S.code == _ST_ACT:
            _binary(S.act, g, <real*>S.y, <real*>S.gin, nb * S.nout, S.slope)
        elif S.code == _ST_MAX:
            _max_unpool(g, S.idx, <real*>S.gin, nb * S.g.C, S.g.H * S.g.W, S.g.ho * S.g.wo)
        else:
            _avg_pool(<const real*>NULL, <real*>NULL, g, <real*>S.gin, nb * S.g.C, S.g.H, S.g.W, S.g.ho, S.g.wo,
                      S.g.kh, S.g.kw, S.g.sh, S.g.sw, S.g.ph, S.g.pw, S.cip)
        g = <real*>S.gin
    return 0


# ---- the image-by-image path ----
# Float32 stages of direct convolutions and fused ReLU + 2x2 max poolings
# (W5's kind) run as two parallel regions per step instead of one or two per
# stage: each thread carries its own images through every stage forward,
# then (after the dense layers) back, on the per-image routines the
# convolution kernels themselves run (_conv.pxi: _direct_fwd_image,
# _direct_bwd_image) and the same pooling routines, with scratch kept
# between steps (padded images and G rows whose zeros are never rewritten).
# The images go to the threads in the static blocks the backward kernel
# gives them, each thread adds its images' weight-gradient partials into its
# own lane slots, and the slots are added in the kernel's fixed order: so
# this path gives the per-stage path's bits (and the per-step loop's). It
# runs when every convolution's backward kernel would take the same team
# (_direct_team) and no convolution takes Winograd (_wino_geom: it has no
# per-image routines here); otherwise, and when an input or weight is not
# finite (the direct backward's condition), the step runs stage by stage.

cdef void _free_conv_ws(_ConvWs *cws, int ns) noexcept nogil:
    cdef int i
    if cws == NULL:
        return
    for i in range(ns):
        _direct_free(&cws[i].d)
        free(cws[i].xbuf)
        free(cws[i].obuf)
        free(cws[i].gbuf)
        free(cws[i].ibuf)
        free(cws[i].gwt)
        free(cws[i].bsum)
    free(cws)


cdef int _conv_ws(TrainBinding bd, int nt) noexcept nogil:
    """Lay out the convolutions' operands (once) and their scratch for nt threads (again when more
    threads come); -1 when out of memory."""
    cdef int i
    cdef _Stage *S
    cdef _ConvWs *w
    cdef bint train
    if bd.cws != NULL and bd.cws_nt >= nt:
        return 0
    if bd.cws == NULL:
        bd.cws = <_ConvWs*>calloc(bd.ns, sizeof(_ConvWs))
        if bd.cws == NULL:
            return -1
        for i in range(bd.ns):
            S = &bd.stages[i]
            if S.code == _ST_CONV:
                _direct_sizes(&S.g, &bd.cws[i].d)
                if S.gw != NULL and S.b != NULL:
                    bd.cws[i].bsum = <double*>malloc(bd.bmax * S.g.O * sizeof(double))
                if _direct_alloc(&bd.cws[i].d, True, S.gin != NULL) != 0 \
                        or (S.gw != NULL and S.b != NULL and bd.cws[i].bsum == NULL):
                    _free_conv_ws(bd.cws, bd.ns)
                    bd.cws = NULL
                    return -1
    free(bd.gscr)
    bd.gscr = NULL
    bd.gmax = 0
    for i in range(1, bd.ns):
        bd.gmax = max(bd.gmax, bd.stages[i].nin)
    if bd.stages[0].gw != NULL:   # a training binding (the first stage is a convolution)
        bd.gscr = <float*>malloc(nt * 2 * max(bd.gmax, 1) * sizeof(float))
        if bd.gscr == NULL:
            bd.cws_nt = 0
            return -1
    for i in range(bd.ns):
        S = &bd.stages[i]
        w = &bd.cws[i]
        if S.code != _ST_CONV:
            continue
        free(w.xbuf)
        free(w.obuf)
        free(w.gbuf)
        free(w.ibuf)
        free(w.gwt)
        train = S.gw != NULL
        w.xbuf = <float*>calloc(nt * w.d.xlen, sizeof(float))
        w.obuf = <float*>malloc(nt * w.d.OP * w.d.Q * sizeof(float))
        w.gbuf = <float*>calloc(nt * S.g.O * w.d.gplane, sizeof(float)) if train else NULL
        w.gwt = <float*>malloc(nt * S.g.O * w.d.K * FNN_WGRAD_SLOTS * sizeof(float)) if train else NULL
        w.ibuf = <float*>malloc(nt * w.d.CP * w.d.QI * sizeof(float)) if train and S.gin != NULL else NULL
        if w.xbuf == NULL or w.obuf == NULL or (train and (w.gbuf == NULL or w.gwt == NULL)) \
                or (train and S.gin != NULL and w.ibuf == NULL):
            bd.cws_nt = 0
            return -1
    bd.cws_nt = nt
    return 0


cdef int _by_image_team(TrainBinding bd, fnn_idx nb) noexcept nogil:
    """The team of a step of nb images on the image-by-image path, 0 when the step runs stage by stage."""
    cdef int i, nt = 0, t
    cdef _Stage *S
    if not bd.by_image:
        return 0
    for i in range(bd.ns):
        S = &bd.stages[i]
        S.g.B = nb
        if S.code == _ST_CONV:
            if not _direct_geom(True, &S.g) or _wino_geom(&S.g):   # Winograd runs stage by stage
                return 0
            t = _direct_team(&S.g)
            if nt != 0 and t != nt:
                return 0
            nt = t
    return nt


cdef void _conv_relu_pool(const DirectConv *d, const float *bias, float *ob, const _Stage *P, float *y,
                          long long *idx) noexcept nogil:
    """A convolution's product ob (d.OP·d.Q, rows of width d.Wp) through bias, ReLU and the 2x2 max pooling
    P into y and idx: the bits of writing out = ob + bias, then relu_maxpool2x2 of out (the same sums, in
    place; the pooling reads the rows at stride Wp and its indices are moved to rows of width Wo)."""
    cdef fnn_idx o, q, i, j, k, r, Wp = d.Wp, Wo = d.g.wo, rows = d.g.ho * d.Wp, pout = P.g.ho * P.g.wo
    cdef float bo
    cdef float *row
    cdef long long *ip
    for o in range(d.g.O):
        bo = bias[o] if bias != NULL else 0
        row = ob + o * d.Q
        for q in range(rows):
            row[q] = row[q] + bo
        ip = idx + o * pout
        relu_maxpool2x2(row, Wp, P.g.ho, P.g.wo, y + o * pout, ip)
        for i in range(P.g.ho):   # the window's pixel row r: 2i, or 2i + 1 when its index lies a row further
            for j in range(P.g.wo):
                k = i * P.g.wo + j
                r = 2 * i + (1 if ip[k] - (2 * i * Wp + 2 * j) >= Wp else 0)
                ip[k] = ip[k] - r * (Wp - Wo)


cdef void _image_forward(const _Stage *st, _ConvWs *cws, int ns, const float *x, fnn_idx b, int t) noexcept nogil:
    """Image b through every stage, on thread t's scratch. A convolution followed by a fused ReLU and
    pooling goes from its product straight into the pooling (its own output is never stored: nothing
    reads it)."""
    cdef int i = 0
    cdef fnn_idx c, pin, pout
    cdef const _Stage *S
    cdef _ConvWs *w
    cdef const float *inp = x + b * st[0].nin
    cdef float *y
    cdef float *ob
    while i < ns:
        S = &st[i]
        y = <float*>S.y + b * S.nout
        if S.code == _ST_CONV:
            w = &cws[i]
            ob = w.obuf + t * w.d.OP * w.d.Q
            if i + 2 < ns and st[i + 1].fused:
                _direct_fwd_product(&w.d, inp, w.xbuf + t * w.d.xlen, ob)
                i += 2
                S = &st[i]
                y = <float*>S.y + b * S.nout
                _conv_relu_pool(&w.d, <const float*>st[i - 2].b, ob, S, y, S.idx + b * S.nout)
            else:
                _direct_fwd_image(&w.d, inp, <const float*>S.b, y, w.xbuf + t * w.d.xlen, ob)
        elif S.code == _ST_ACT:
            i += 1
            continue   # run by the pooling after it, from this stage's input
        else:
            pin = S.g.H * S.g.W
            pout = S.g.ho * S.g.wo
            for c in range(S.g.C):
                relu_maxpool2x2(inp + c * pin, S.g.W, S.g.ho, S.g.wo, y + c * pout, S.idx + b * S.nout + c * pout)
        inp = y
        i += 1


cdef void _image_backward(const _Stage *st, _ConvWs *cws, int ns, const float *x, const float *gout, fnn_idx b,
                          int t, float *scr, fnn_idx gmax) noexcept nogil:
    """Image b's backward pass through every stage from gout = dL/d(last stage's output), on thread t's
    scratch; the convolutions' weight-gradient partials go to thread t's slots. The image's dL/dx go
    from stage to stage through the thread's two buffers at scr (2·gmax; the stages' own dL/dx arrays
    are for the stage-by-stage path: nothing else reads them here)."""
    cdef int i, k = 0
    cdef fnn_idx c, pin, pout
    cdef const _Stage *S
    cdef _ConvWs *w
    cdef const float *g = gout + b * st[ns - 1].nout
    cdef const float *xin
    cdef float *gx
    for i in range(ns - 1, -1, -1):
        S = &st[i]
        if S.code == _ST_CONV:
            gx = scr + k * gmax if S.gin != NULL else NULL
            k = 1 - k
            w = &cws[i]
            xin = (x if i == 0 else <const float*>st[i - 1].y) + b * S.nin
            _direct_bwd_image(&w.d, g, xin, gx, w.xbuf + t * w.d.xlen, w.gbuf + t * S.g.O * w.d.gplane,
                              w.ibuf + t * w.d.CP * w.d.QI if w.ibuf != NULL else NULL,
                              w.gwt + t * S.g.O * w.d.K * FNN_WGRAD_SLOTS,
                              w.bsum + b * S.g.O if w.bsum != NULL else NULL)
            g = gx
        elif i == 0:
            break
        elif S.code == _ST_MAX:   # dL/d(the fused ReLU's input); the ReLU stage then passes it on
            gx = scr + k * gmax
            k = 1 - k
            pin = S.g.H * S.g.W
            pout = S.g.ho * S.g.wo
            for c in range(S.g.C):
                _relu_max_unpool_plane(g + c * pout, <const float*>S.y + b * S.nout + c * pout,
                                       S.idx + b * S.nout + c * pout, gx + c * pin, pin, pout)
            g = gx


cdef int _by_image_forward(TrainBinding bd, const float *x, fnn_idx nb, int nt) noexcept nogil:
    """Every stage's output for the nb images at x, on nt threads; -1 when out of memory."""
    cdef int i, t
    cdef fnn_idx b
    cdef _Stage *st = bd.stages
    cdef _ConvWs *cws
    cdef int ns = bd.ns
    if _conv_ws(bd, nt) != 0:
        return -1
    cws = bd.cws
    for i in range(ns):
        if st[i].code == _ST_CONV:
            _direct_pack(&cws[i].d, <const float*>st[i].w)
    for b in prange(nb, nogil=True, schedule="static", num_threads=nt):
        t = threadid()
        _image_forward(st, cws, ns, x, b, t)
    return 0


cdef bint _by_image_backward(TrainBinding bd, const float *x, const float *g, fnn_idx nb, int nt) noexcept nogil:
    """The stages' backward pass for a step _by_image_forward ran on nt threads; False (nothing done)
    when an input or weight of a convolution is not finite."""
    cdef int i, t
    cdef fnn_idx b
    cdef _Stage *S
    cdef _Stage *st = bd.stages
    cdef _ConvWs *cws = bd.cws
    cdef int ns = bd.ns
    for i in range(ns):
        S = &st[i]
        if S.code == _ST_CONV and not (all_finite(x if i == 0 else <const float*>st[i - 1].y, nb * S.nin)
                                       and all_finite(<const float*>S.w, S.g.O * S.g.C * S.g.kh * S.g.kw)):
            return False
    for i in range(ns):
        if st[i].code == _ST_CONV:
            memset(cws[i].gwt, 0, nt * st[i].g.O * cws[i].d.K * FNN_WGRAD_SLOTS * sizeof(float))
    for b in prange(nb, nogil=True, schedule="static", num_threads=nt):
        t = threadid()
        _image_backward(st, cws, ns, x, g, b, t, bd.gscr + t * 2 * bd.gmax, bd.gmax)
    bd.by_image_steps += 1
    for i in range(ns):
        S = &st[i]
        if S.code == _ST_CONV:
            _direct_wgrad_sum(&cws[i].d, cws[i].gwt, nt, <float*>S.gw)
            if cws[i].bsum != NULL:
                _bias_sum(cws[i].bsum, nb, S.g.O, <float*>S.gb)
    return True


cdef int _stages_fwd_step(TrainBinding bd, const real *x, fnn_idx nb) noexcept nogil:
    """The stages' forward pass of a step: its team on the image-by-image path, 0 when it ran stage by
    stage, -1 when out of memory."""
    cdef int nt = 0
    if real is float:
        nt = _by_image_team(bd, nb)
    if nt > 0:
        return -1 if _by_image_forward(bd, <const float*>x, nb, nt) != 0 else nt
    return _stages_forward(bd, x, nb)


cdef int _stages_bwd_step(TrainBinding bd, const real *x, const real *g, fnn_idx nb, int nt) noexcept nogil:
    """The stages' backward pass of a step whose forward pass _stages_fwd_step ran on team nt (0: stage by
    stage)."""
    if real is float:
        if nt > 0 and _by_image_backward(bd, <const float*>x, <const float*>g, nb, nt):
            return 0
    return _stages_backward(bd, x, g, nb)


cdef void _update(TrainBinding bd, _Run *r, long long step, fnn_idx nb, const real *dtype_of) noexcept nogil:
    """The optimizer step on every bound parameter (Adam's factors for step number `step`, a step of
    nb rows); dtype_of only picks the dtype."""
    cdef int i
    cdef _Update *u
    cdef double bc1, bc2, step_size, isb, eps = r.eps
    cdef double wd = r.wd / nb if r.reduction == _RED_SKLEARN else r.wd   # scikit-learn: alpha per row
    if r.opt == _OPT_SGD:
        for i in range(bd.nu):
            u = &bd.updates[i]
            _sgd(<real*>u.p, <real*>u.g, <real*>u.s1, u.n, r.lr, r.h1, <int>r.h2, wd * u.decay)
        return
    bc1 = 1.0 - pow(r.h1, <double>step)
    bc2 = 1.0 - pow(r.h2, <double>step)
    step_size = r.lr / bc1
    isb = 1.0 / sqrt(bc2)
    if r.reduction == _RED_SKLEARN:
        eps = r.eps / sqrt(bc2)   # scikit-learn adds eps after the bias correction of v
    for i in range(bd.nu):
        u = &bd.updates[i]
        if r.decoupled:
            _adam(<real*>u.p, <real*>u.g, <real*>u.s1, <real*>u.s2, u.n, 1.0 - r.lr * wd * u.decay, 0.0, r.h1, r.h2,
                  step_size, isb, eps)
        else:
            _adam(<real*>u.p, <real*>u.g, <real*>u.s1, <real*>u.s2, u.n, 1.0, wd * u.decay, r.h1, r.h2, step_size,
                  isb, eps)


cdef double _sklearn_loss(int loss, const real *z, const fnn_idx *labels, const real *t, real *g, fnn_idx nb,
                          fnn_idx nout) noexcept nogil:
    """scikit-learn's loss of the raw outputs z summed over the nb rows (float64), and
    g = (act(z) - y) / nb: softmax and log-loss, identity and half the squared error averaged over
    the outputs, logistic and binary log-loss; log-loss probabilities clipped to [eps, 1 - eps]."""
    cdef fnn_idx i, n = nb * nout
    cdef double total = 0.0, eps = 2.220446049250313e-16 if real is double else 1.1920928955078125e-07
    cdef real p, lo = <real>eps, hi = <real>(1.0 - eps), inv = <real>(1.0 / nb)
    if loss == _LOSS_XENT:
        softmax_rows(z, g, nb, nout)
        for i in range(nb):
            p = g[i * nout + labels[i]]
            g[i * nout + labels[i]] = p - 1
            total -= log(<double>min(max(p, lo), hi))
    elif loss == _LOSS_BCE:
        act_fwd(FNN_ACT_SIGMOID, z, <const real*>NULL, g, n, 0.0)
        for i in range(n):
            p = min(max(g[i], lo), hi)
            total -= log(<double>(p if t[i] != 0 else 1 - p))
            g[i] = g[i] - t[i]
    else:
        for i in range(n):
            g[i] = z[i] - t[i]
            total += <double>(g[i] * g[i])
        total *= 0.5 / nout
    for i in range(n):
        g[i] = g[i] * inv
    return total


cdef double _penalty(TrainBinding bd, const real *dtype_of) noexcept nogil:
    """Σ‖p‖² over the updates that decay, in float64."""
    cdef int i
    cdef fnn_idx j
    cdef const real *p
    cdef double total = 0.0
    for i in range(bd.nu):
        if bd.updates[i].decay != 0:
            p = <const real*>bd.updates[i].p
            for j in range(bd.updates[i].n):
                total += <double>p[j] * <double>p[j]
    return total


cdef enum:   # how _steps ended
    _DONE = 0
    _NONFINITE = 1
    _BAD_INDEX = 2
    _BAD_LABEL = 3
    _NO_MEMORY = 4


cdef int _steps(TrainBinding bd, const real *x, const void *target, _Run *r, fnn_idx nsteps,
                fnn_idx *done) noexcept nogil:
    """Run up to nsteps steps; *done = the number run, the return value says why it stopped.

    Indices and labels are checked here, where they are used: an index
    outside [0, nrows) or a label outside [0, classes) stops the run before
    the step that holds it. A step whose loss is not finite writes that loss
    and stops before its backward pass (the model is left as the step found
    it); it counts as not run.
    """
    cdef fnn_idx s, i, j, lo, nb, nout, n, row
    cdef real *xb = <real*>bd.xb
    cdef real *z
    cdef fnn_idx *lb = <fnn_idx*>bd.tb
    cdef real *tb = <real*>bd.tb
    cdef const fnn_idx *labels = <const fnn_idx*>target
    cdef const real *values = <const real*>target
    cdef double value, scale
    cdef fnn_idx best, t, T = bd.seq.T, nin = bd.seq.nin
    cdef const real *inp = xb
    cdef int team = 0
    nout = bd.layers[bd.nl - 1].nout
    z = <real*>bd.layers[bd.nl - 1].y
    for s in range(nsteps):
        done[0] = s
        lo = s * r.bs
        nb = min(r.bs, r.nindex - lo)
        for i in range(nb):   # the minibatch: rows of x by the index
            row = r.index[lo + i]
            if <size_t>row >= <size_t>r.nrows:
                return _BAD_INDEX
            if bd.rec:   # sample i's steps into rows i of the time-major (T, nb, I) sequence
                for t in range(T):
                    memcpy(xb + (t * nb + i) * nin, x + row * r.nfeat + t * nin, nin * sizeof(real))
            else:
                memcpy(xb + i * r.nfeat, x + row * r.nfeat, r.nfeat * sizeof(real))
        n = nb * nout
        if r.loss == _LOSS_XENT:
            for i in range(nb):
                lb[i] = labels[r.index[lo + i]]
                if <size_t>lb[i] >= <size_t>nout:
                    return _BAD_LABEL
        else:
            for i in range(nb):
                memcpy(tb + i * r.ncols, values + r.index[lo + i] * r.ncols, r.ncols * sizeof(real))
        if bd.rec:
            if _rec_forward(bd, nb, x) != 0:
                return _NO_MEMORY
            inp = _last_hidden(bd, nb, x)
        elif bd.ns:
            team = _stages_fwd_step(bd, xb, nb)
            if team < 0:
                return _NO_MEMORY
            inp = <real*>bd.stages[bd.ns - 1].y
        if _forward(bd, inp, nb) != 0:
            return _NO_MEMORY
        if r.reduction == _RED_SKLEARN:
            value = _sklearn_loss(r.loss, z, lb, tb, <real*>bd.gz, nb, nout) / nb
            if r.wd != 0:
                value += 0.5 * r.wd * _penalty(bd, x) / nb
        elif r.loss == _LOSS_XENT:
            scale = 1.0 / nb if r.reduction == _RED_MEAN else 1.0
            value = _xent(z, lb, <real*>bd.gz, nb, nout, scale) * scale
        else:
            scale = 1.0 / n if r.reduction == _RED_MEAN else 1.0
            if r.loss == _LOSS_MSE:
                value = _pair(True, z, tb, <real*>bd.gz, n, 2.0 * scale) * scale
            else:
                value = _pair(False, z, tb, <real*>bd.gz, n, scale) * scale
        r.losses[s] = value
        if not isfinite(value):
            return _NONFINITE
        if r.pred_i != NULL:   # argmax, the first of equal maxima (NumPy's rule; NaN wins)
            for i in range(nb):
                best = 0
                for j in range(1, nout):
                    if z[i * nout + j] > z[i * nout + best] or (z[i * nout + j] != z[i * nout + j]
                                                                and z[i * nout + best] == z[i * nout + best]):
                        best = j
                r.pred_i[lo + i] = best
        elif r.pred_b != NULL:
            for i in range(n):
                r.pred_b[lo * nout + i] = z[i] > 0
        if bd.rec:
            _rec_grad_out(bd, nb, x)
        if _backward(bd, inp, nb) != 0 or (bd.rec and _rec_backward(bd, nb, x) != 0) \
                or (bd.ns and _stages_bwd_step(bd, xb, <real*>bd.layers[0].gin, nb, team) != 0):
            return _NO_MEMORY
        _update(bd, r, r.step0 + s + 1, nb, x)
    done[0] = nsteps
    return _DONE


def train_steps(TrainBinding bd, cnp.ndarray x, cnp.ndarray target, cnp.ndarray index, fnn_idx batch_size,
                int loss, int reduction, int opt, tuple hyper, long long step0, cnp.ndarray losses, cnp.ndarray pred):
    """Run len(losses) training steps over the rows index[s*batch_size : (s+1)*batch_size].

    Returns ``(steps run, status)``: status 0 all ran, 1 the loss of step
    ``steps run`` is not finite (in ``losses``; that step changed nothing),
    2 an index outside [0, N), 3 a label outside [0, C) in that step.
    fastnn.ops.TrainPlan validates the rest: x (N, F) and target (N, ...)
    C-contiguous in the binding's dtype (labels: intp), the binding's
    workspace at least batch_size rows, reduction 0 sum, 1 mean, 2
    scikit-learn's convention, hyper = (lr, momentum, nesterov,
    weight_decay, 0, 0) for SGD, (lr, beta1, beta2, weight_decay, eps,
    decoupled) for Adam; pred: intp argmax per sample, bool logit > 0 per
    target, or None.
    """
    cdef _Run r
    cdef fnn_idx nsteps = cnp.PyArray_SIZE(losses), done = 0
    cdef void *px = cnp.PyArray_DATA(x)
    cdef void *pt = cnp.PyArray_DATA(target)
    cdef int status
    cdef fnn_idx need = (nsteps - 1) * batch_size + 1 if nsteps > 0 else 0
    if batch_size < 1 or batch_size > bd.bmax:
        raise ValueError(f"batch_size must be in [1, {bd.bmax}]")
    if cnp.PyArray_SIZE(index) < need or cnp.PyArray_TYPE(index) != cnp.NPY_INTP:
        raise ValueError("index must be intp and hold a row for every step")
    if _f32(x) != bd.f32:
        raise TypeError("x does not have the network's dtype")
    if bd.rec and (cnp.PyArray_NDIM(x) != 3 or x.shape[1] != bd.seq.T or x.shape[2] != bd.seq.nin):
        raise ValueError("x must hold sequences of the binding's length and features")
    if bd.ns and cnp.PyArray_SIZE(x) != cnp.PyArray_DIM(x, 0) * bd.stages[0].nin:
        raise ValueError("x must hold images of the binding's shape")
    if pred is not None and cnp.PyArray_SIZE(pred) < cnp.PyArray_SIZE(index) * (
            1 if cnp.PyArray_TYPE(pred) == cnp.NPY_INTP else bd.layers[bd.nl - 1].nout):
        raise ValueError("pred is too short")
    r.nrows = cnp.PyArray_DIM(x, 0)
    r.nfeat = cnp.PyArray_SIZE(x) // max(r.nrows, 1)
    r.ncols = cnp.PyArray_SIZE(target) // max(cnp.PyArray_DIM(target, 0), 1)
    r.index = <const fnn_idx*>cnp.PyArray_DATA(index)
    r.nindex = min(cnp.PyArray_SIZE(index), nsteps * batch_size)
    r.bs = batch_size
    r.loss = loss
    r.reduction = reduction
    r.opt = opt
    r.lr, r.h1, r.h2, r.wd, r.eps, r.decoupled = hyper
    r.step0 = step0
    r.losses = <double*>cnp.PyArray_DATA(losses)
    r.pred_i = NULL
    r.pred_b = NULL
    if pred is not None:
        if cnp.PyArray_TYPE(pred) == cnp.NPY_BOOL:
            r.pred_b = <cnp.npy_bool*>cnp.PyArray_DATA(pred)
        else:
            r.pred_i = <fnn_idx*>cnp.PyArray_DATA(pred)
    with nogil:
        if bd.f32:
            status = _steps(bd, <float*>px, pt, &r, nsteps, &done)
        else:
            status = _steps(bd, <double*>px, pt, &r, nsteps, &done)
    if status == _NO_MEMORY:
        raise MemoryError(f"training step {done + 1}: out of memory")
    return done, status


cdef int _predict_batch(TrainBinding bd, const real *x, fnn_idx nb, fnn_idx nfeat) noexcept nogil:
    """The network's output for the nb contiguous rows at x (through the recurrent layer, if any)."""
    cdef fnn_idx i, t, T = bd.seq.T, nin = bd.seq.nin
    cdef real *xs = <real*>bd.xb
    if bd.ns:
        if _stages_fwd_step(bd, x, nb) < 0:
            return -1
        return _forward(bd, <real*>bd.stages[bd.ns - 1].y, nb)
    if not bd.rec:
        return _forward(bd, x, nb)
    for i in range(nb):
        for t in range(T):
            memcpy(xs + (t * nb + i) * nin, x + i * nfeat + t * nin, nin * sizeof(real))
    if _rec_forward(bd, nb, x) != 0:
        return -1
    return _forward(bd, _last_hidden(bd, nb, x), nb)


def predict_rows(TrainBinding bd, cnp.ndarray x, fnn_idx batch_size, cnp.ndarray out):
    """out = the network's output for every row of x, batch_size rows per pass.

    x (N, F) and out (N, outputs) are validated by the caller, and the
    binding is the call's own: its last layer writes straight into out's
    rows while this runs.
    """
    cdef fnn_idx n = cnp.PyArray_DIM(x, 0), lo, nb, nout = bd.layers[bd.nl - 1].nout
    cdef fnn_idx nfeat = cnp.PyArray_SIZE(x) // max(n, 1)
    cdef void *px = cnp.PyArray_DATA(x)
    cdef void *po = cnp.PyArray_DATA(out)
    cdef int rc = 0
    cdef _Layer *last = &bd.layers[bd.nl - 1]
    cdef void *keep_y = last.y
    if batch_size < 1 or batch_size > bd.bmax:
        raise ValueError(f"batch_size must be in [1, {bd.bmax}]")
    if _f32(x) != bd.f32 or _f32(out) != bd.f32:
        raise TypeError("x and out must have the network's dtype")
    if bd.rec and (cnp.PyArray_NDIM(x) != 3 or x.shape[1] != bd.seq.T or x.shape[2] != bd.seq.nin):
        raise ValueError("x must hold sequences of the binding's length and features")
    if bd.ns and cnp.PyArray_SIZE(x) != cnp.PyArray_DIM(x, 0) * bd.stages[0].nin:
        raise ValueError("x must hold images of the binding's shape")
    with nogil:
        lo = 0
        while lo < n and rc == 0:
            nb = min(batch_size, n - lo)
            # the last layer writes straight into out's rows (contiguous rows, no copy)
            if bd.f32:
                last.y = <float*>po + lo * nout
                rc = _predict_batch(bd, <float*>px + lo * nfeat, nb, nfeat)
            else:
                last.y = <double*>po + lo * nout
                rc = _predict_batch(bd, <double*>px + lo * nfeat, nb, nfeat)
            lo += nb
        last.y = keep_y
    if rc != 0:
        raise MemoryError("predict: out of memory")
    return out


def train_bind(tuple layers, tuple updates, cnp.ndarray xb, cnp.ndarray tb, cnp.ndarray gz, tuple front=None,
               tuple stages=None):
    """A TrainBinding of validated arrays (see fastnn.backends.reference.train.train_bind)."""
    return TrainBinding(layers, updates, xb, tb, gz, front, stages)
