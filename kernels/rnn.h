/* The elementwise part of a recurrent time step, for one dtype: the cells of
 * the RNN, LSTM and GRU and their backward steps (the matrix products of a
 * step are the small GEMM's; the time loop is the Cython driver's). The
 * gates use the library's one sigmoid and tanh (vmath.h).
 *
 * Layouts (row-major): a step's hidden state is (B, H); gate blocks are
 * (B, G*H) with the G blocks side by side in PyTorch's order. The arrays of
 * one call never overlap (the ops layer checks the buffers).
 */

/* h = f(a) in place; relu keeps NaN (NaN <= 0 is false). */
static void FN(rnn_act)(FNN_T *FNN_RESTRICT a, fnn_idx n, int relu)
{
    if (relu) {
        for (fnn_idx i = 0; i < n; i++) a[i] = (a[i] <= 0) ? (FNN_T)0 : a[i];
    } else {
        for (fnn_idx i = 0; i < n; i++) a[i] = FN(fnn_tanh)(a[i]);
    }
}

/* delta = (go + grec) f'(h), f' through the output h. */
static void FN(rnn_delta)(const FNN_T *FNN_RESTRICT go, const FNN_T *FNN_RESTRICT grec, const FNN_T *FNN_RESTRICT h,
                          FNN_T *FNN_RESTRICT d, fnn_idx n, int relu)
{
    if (relu) {
        for (fnn_idx i = 0; i < n; i++) d[i] = (go[i] + grec[i]) * (FNN_T)(h[i] > 0);
    } else {
        for (fnn_idx i = 0; i < n; i++) d[i] = (go[i] + grec[i]) * (1 - h[i] * h[i]);
    }
}

/* LSTM step: z (B, 4H) pre-activations in, activated gates out; c, h (B, H) out. */
static void FN(lstm_cell)(FNN_T *FNN_RESTRICT z, const FNN_T *FNN_RESTRICT c_prev, FNN_T *FNN_RESTRICT c,
                          FNN_T *FNN_RESTRICT h, fnn_idx nb, fnn_idx hs)
{
    for (fnn_idx b = 0; b < nb; b++) {
        FNN_T *zi = z + b * 4 * hs, *zf = zi + hs, *zg = zi + 2 * hs, *zo = zi + 3 * hs;
        const FNN_T *cp = c_prev + b * hs;
        FNN_T *cb = c + b * hs, *hb = h + b * hs;
        for (fnn_idx j = 0; j < hs; j++) {
            FNN_T i = FN(fnn_sigmoid)(zi[j]), f = FN(fnn_sigmoid)(zf[j]);
            FNN_T g = FN(fnn_tanh)(zg[j]), o = FN(fnn_sigmoid)(zo[j]);
            zi[j] = i; zf[j] = f; zg[j] = g; zo[j] = o;
            FNN_T cc = f * cp[j] + i * g;
            cb[j] = cc;
            hb[j] = o * FN(fnn_tanh)(cc);
        }
    }
}

/* LSTM backward step: writes delta (B, 4H), updates gamma = dL/dc to dL/dc_prev. */
static void FN(lstm_delta)(const FNN_T *FNN_RESTRICT go, const FNN_T *FNN_RESTRICT grec, FNN_T *FNN_RESTRICT gamma,
                           const FNN_T *FNN_RESTRICT gates, const FNN_T *FNN_RESTRICT c,
                           const FNN_T *FNN_RESTRICT c_prev, FNN_T *FNN_RESTRICT d, fnn_idx nb, fnn_idx hs)
{
    for (fnn_idx b = 0; b < nb; b++) {
        const FNN_T *gi = gates + b * 4 * hs, *gf = gi + hs, *gg = gi + 2 * hs, *go_ = gi + 3 * hs;
        FNN_T *di = d + b * 4 * hs, *df = di + hs, *dg = di + 2 * hs, *d_o = di + 3 * hs;
        const FNN_T *gob = go + b * hs, *grb = grec + b * hs, *cb = c + b * hs, *cp = c_prev + b * hs;
        FNN_T *gm = gamma + b * hs;
        for (fnn_idx j = 0; j < hs; j++) {
            FNN_T i = gi[j], f = gf[j], g = gg[j], o = go_[j];
            FNN_T tc = FN(fnn_tanh)(cb[j]);
            FNN_T dh = gob[j] + grb[j];
            FNN_T gam = gm[j] + dh * o * (1 - tc * tc);
            di[j] = gam * g * i * (1 - i);
            df[j] = gam * cp[j] * f * (1 - f);
            dg[j] = gam * i * (1 - g * g);
            d_o[j] = dh * tc * o * (1 - o);
            gm[j] = gam * f;
        }
    }
}

/* GRU step: gi (B, 3H) input projection in, gates r, z, n out; gh (B, 3H) = h W_hhᵀ;
 * bhh (3H) the hidden bias (zeros if none); hn (B, H) = W_hn h + b_hn; h (B, H) out. */
static void FN(gru_cell)(FNN_T *FNN_RESTRICT gi, const FNN_T *FNN_RESTRICT gh, const FNN_T *FNN_RESTRICT bhh,
                         const FNN_T *FNN_RESTRICT h_prev, FNN_T *FNN_RESTRICT hn, FNN_T *FNN_RESTRICT h,
                         fnn_idx nb, fnn_idx hs)
{
    for (fnn_idx b = 0; b < nb; b++) {
        FNN_T *xr = gi + b * 3 * hs, *xz = xr + hs, *xn = xr + 2 * hs;
        const FNN_T *hr = gh + b * 3 * hs, *hz = hr + hs, *hnn = hr + 2 * hs;
        const FNN_T *hp = h_prev + b * hs;
        FNN_T *hnb = hn + b * hs, *hb = h + b * hs;
        for (fnn_idx j = 0; j < hs; j++) {
            FNN_T r = FN(fnn_sigmoid)(xr[j] + (hr[j] + bhh[j]));
            FNN_T z = FN(fnn_sigmoid)(xz[j] + (hz[j] + bhh[hs + j]));
            FNN_T m = hnn[j] + bhh[2 * hs + j];
            FNN_T n = FN(fnn_tanh)(xn[j] + r * m);
            xr[j] = r; xz[j] = z; xn[j] = n;
            hnb[j] = m;
            hb[j] = (1 - z) * n + z * hp[j];
        }
    }
}

/* GRU backward step: g = go + grec; writes w (B, 6H) = [dr dz dn | dr dz dn*r]
 * and grec = g z (the direct path to h_prev; the caller adds w[:, 3H:] W_hh). */
static void FN(gru_delta)(const FNN_T *FNN_RESTRICT go, FNN_T *FNN_RESTRICT grec, const FNN_T *FNN_RESTRICT gates,
                          const FNN_T *FNN_RESTRICT hn, const FNN_T *FNN_RESTRICT h_prev, FNN_T *FNN_RESTRICT w,
                          fnn_idx nb, fnn_idx hs)
{
    for (fnn_idx b = 0; b < nb; b++) {
        const FNN_T *gr = gates + b * 3 * hs, *gz = gr + hs, *gn = gr + 2 * hs;
        FNN_T *w0 = w + b * 6 * hs;
        const FNN_T *gob = go + b * hs, *hnb = hn + b * hs, *hp = h_prev + b * hs;
        FNN_T *grb = grec + b * hs;
        for (fnn_idx j = 0; j < hs; j++) {
            FNN_T r = gr[j], z = gz[j], n = gn[j];
            FNN_T g = gob[j] + grb[j];
            FNN_T dn = g * (1 - z) * (1 - n * n);
            FNN_T dr = dn * hnb[j] * r * (1 - r);
            FNN_T dz = g * (hp[j] - n) * z * (1 - z);
            w0[j] = dr; w0[hs + j] = dz; w0[2 * hs + j] = dn;
            w0[3 * hs + j] = dr; w0[4 * hs + j] = dz; w0[5 * hs + j] = dn * r;
            grb[j] = g * z;
        }
    }
}
