/* The kernels of one instruction set: every family, both dtypes, and the
 * table that exports them. Included once by each kernels/lib/isa_<name>.c,
 * which defines FNN_ISA and FNN_ISA_NAME and is compiled with that ISA's
 * flags; everything in here is static, so the builds never clash.
 */
#include "isa.h"

/* libm where a kernel needs it (bce, adam's sqrt, the vector maths' fabs and copysign), by dtype suffix. */
FNN_INLINE float fnn_libm_exp_f32(float x) { return expf(x); }
FNN_INLINE double fnn_libm_exp_f64(double x) { return exp(x); }
FNN_INLINE float fnn_libm_log1p_f32(float x) { return log1pf(x); }
FNN_INLINE double fnn_libm_log1p_f64(double x) { return log1p(x); }
FNN_INLINE float fnn_libm_fabs_f32(float x) { return fabsf(x); }
FNN_INLINE double fnn_libm_fabs_f64(double x) { return fabs(x); }
FNN_INLINE float fnn_libm_sqrt_f32(float x) { return sqrtf(x); }
FNN_INLINE double fnn_libm_sqrt_f64(double x) { return sqrt(x); }
FNN_INLINE float fnn_libm_copysign_f32(float x, float s) { return copysignf(x, s); }
FNN_INLINE double fnn_libm_copysign_f64(double x, double s) { return copysign(x, s); }

/* The family templates, once per dtype: FNN_T the element type, FN(name)
 * appends its suffix (_f32 / _f64), FNN_V / FNN_VI its vector and lane-mask
 * types, FNN_L its lane count. */
#define FN(name) FNN_CAT(name, FNN_CAT(_, FNN_SUF))

#define FNN_T float
#define FNN_SUF f32
#define FNN_IS_F32 1
#define FNN_V fnn_v_f32
#define FNN_VI fnn_vi_f32
#define FNN_L FNN_LANES_F32
#define FNN_UINT uint32_t
#define FNN_EXP_MASK 0x7f800000u
#include "vmath.h"
#include "elementwise.h"
#include "norm.h"
#include "gemm.h"
#include "gemm_packed.h"
#include "conv.h"
#include "rnn.h"
#undef FNN_T
#undef FNN_SUF
#undef FNN_IS_F32
#undef FNN_V
#undef FNN_VI
#undef FNN_L
#undef FNN_UINT
#undef FNN_EXP_MASK

#define FNN_T double
#define FNN_SUF f64
#define FNN_IS_F32 0
#define FNN_V fnn_v_f64
#define FNN_VI fnn_vi_f64
#define FNN_L FNN_LANES_F64
#define FNN_UINT uint64_t
#define FNN_EXP_MASK 0x7ff0000000000000ull
#include "vmath.h"
#include "elementwise.h"
#include "norm.h"
#include "gemm.h"
#include "gemm_packed.h"
#include "conv.h"
#include "rnn.h"

#define FNN_BOTH(name) .name##_f32 = name##_f32, .name##_f64 = name##_f64

const fnn_kernel_set FNN_CAT(fnn_kernels_, FNN_ISA_NAME) = {
    .isa = FNN_ISA,
    .elementwise = {
        .isa = FNN_ISA,
        FNN_BOTH(act_fwd), FNN_BOTH(act_bwd), FNN_BOTH(softmax_rows), FNN_BOTH(softmax_bwd_rows),
        FNN_BOTH(xent_rows), FNN_BOTH(mse), FNN_BOTH(bce), FNN_BOTH(sgd), FNN_BOTH(adam), FNN_BOTH(dact_colsum),
        FNN_BOTH(transpose), FNN_BOTH(all_finite), FNN_BOTH(bn_fwd), FNN_BOTH(bn_bwd),
        FNN_BOTH(ln_fwd_rows), FNN_BOTH(ln_bwd_rows),
    },
    .gemm = {
        .isa = FNN_ISA, .mr = FNN_MR, .lanes_f32 = FNN_LANES_F32, .lanes_f64 = FNN_LANES_F64,
        .small_f32 = gemm_small_f32, .small_f64 = gemm_small_f64,
        .team_f32 = gemm_small_team_f32, .team_f64 = gemm_small_team_f64,
        .packed_f32 = gemm_packed_f32, .packed_f64 = gemm_packed_f64,
        .nr_f32 = FNN_NV * FNN_LANES_F32, .nr_f64 = FNN_NV * FNN_LANES_F64,
        .pack_b_f32 = gemm_pack_b_f32, .pack_b_f64 = gemm_pack_b_f64,
        .prepacked_f32 = gemm_prepacked_f32, .prepacked_f64 = gemm_prepacked_f64,
    },
    .conv = {
        .isa = FNN_ISA, .shift_f32 = conv_shift_f32, .wgrad_f32 = conv_wgrad_f32,
        .wino_in_f32 = wino_in_f32, .wino_out_f32 = wino_out_f32, .wino_gout_f32 = wino_gout_f32,
        FNN_BOTH(maxpool2x2),
        FNN_BOTH(relu_maxpool2x2),
    },
    .rnn = {
        .isa = FNN_ISA, FNN_BOTH(rnn_act), FNN_BOTH(rnn_delta), FNN_BOTH(lstm_cell), FNN_BOTH(lstm_delta),
        FNN_BOTH(gru_cell), FNN_BOTH(gru_delta),
    },
};
