/* The library's run time: which instruction set each kernel family runs,
 * the tunables, and the GEMM policy's one decision. Compiled for the
 * baseline (no ISA flags): it must run on every CPU before dispatch. */
#include <stdint.h>
#include <string.h>

#include "../fnn.h"

/* The kernel sets built (setup.py leaves out an ISA its compiler cannot build). */
extern const fnn_kernel_set fnn_kernels_sse2;
#if defined(__x86_64__)
#define FNN_X86 1
#if !defined(FNN_NO_AVX2)
#define FNN_HAVE_AVX2 1
extern const fnn_kernel_set fnn_kernels_avx2;
#if !defined(FNN_NO_AVX512)
#define FNN_HAVE_AVX512 1
extern const fnn_kernel_set fnn_kernels_avx512;
#endif
#endif
#endif

const fnn_elementwise_ops *fnn_ew = &fnn_kernels_sse2.elementwise;
const fnn_gemm_ops *fnn_mm = &fnn_kernels_sse2.gemm;
const fnn_conv_ops *fnn_cv = &fnn_kernels_sse2.conv;
const fnn_rnn_ops *fnn_rn = &fnn_kernels_sse2.rnn;

static const fnn_kernel_set *fnn_set(int isa)
{
#ifdef FNN_HAVE_AVX512
    if (isa == FNN_ISA_AVX512)
        return &fnn_kernels_avx512;
#endif
#ifdef FNN_HAVE_AVX2
    if (isa == FNN_ISA_AVX2)
        return &fnn_kernels_avx2;
#endif
    (void)isa;
    return &fnn_kernels_sse2;
}

static int fnn_best = -1;

int fnn_best_isa(void)
{
    if (fnn_best < 0) {
        int level = FNN_ISA_SSE2;
#if defined(FNN_HAVE_AVX2) && defined(__GNUC__)
        __builtin_cpu_init();
        if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
            level = FNN_ISA_AVX2;
#if defined(FNN_HAVE_AVX512)
        if (level == FNN_ISA_AVX2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl")
            && __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512bw"))
            level = FNN_ISA_AVX512;
#endif
#endif
        fnn_best = level;
    }
    return fnn_best;
}

int fnn_family_isa(int family)
{
    switch (family) {
    case FNN_FAMILY_ELEMENTWISE: return fnn_ew->isa;
    case FNN_FAMILY_GEMM: return fnn_mm->isa;
    case FNN_FAMILY_CONV: return fnn_cv->isa;
    case FNN_FAMILY_RNN: return fnn_rn->isa;
    default: return -1;
    }
}

int fnn_select_isa(int family, int isa)
{
    int best = fnn_best_isa();
    if (isa < 0 || isa > best)
        isa = best;
    const fnn_kernel_set *s = fnn_set(isa);
    if (family < 0 || family == FNN_FAMILY_ELEMENTWISE) fnn_ew = &s->elementwise;
    if (family < 0 || family == FNN_FAMILY_GEMM) fnn_mm = &s->gemm;
    if (family < 0 || family == FNN_FAMILY_CONV) fnn_cv = &s->conv;
    if (family < 0 || family == FNN_FAMILY_RNN) fnn_rn = &s->rnn;
    return s->isa;
}

void fnn_init(void)
{
    static int done = 0;
    if (!done) {
        fnn_select_isa(-1, -1);
        done = 1;
    }
}

const char *fnn_isa_name(int isa)
{
#ifdef FNN_X86
    static const char *names[FNN_ISA_COUNT] = {"sse2", "avx2", "avx512"};
#else
    static const char *names[FNN_ISA_COUNT] = {"generic", "avx2", "avx512"};
#endif
    return isa >= 0 && isa < FNN_ISA_COUNT ? names[isa] : "unknown";
}

/* ---- tunables: the values are fastnn.backends.tuning's, pushed at load ---- */

fnn_tunables fnn_tune = {
    .parallel_min_elements = 1 << 19,
    .parallel_min_elements_cheap = 1 << 21,
    .chunk_elements = 32768,
    .nogil_min_elements = 8192,
    .gemm_parallel_min_flops = 192.0 * 192.0 * 192.0,
    .gemm_shared_min_flops = 768.0 * 768.0 * 768.0,
    .gemm_small_parallel_min_flops = 1 << 21,
    .gemm_scratch_keep_bytes = 1 << 23,
    .conv_cols_budget = 1 << 20,
    .conv_direct_max_buffer = 1 << 27,
    .conv_parallel_min_work = 1 << 19,
    .conv_winograd_min_channels = 32,
    .rnn_parallel_min_work = 6 << 20,
    .rnn_small_elements = 1 << 18,
    .rnn_spin_seconds = 50e-6,
    .gemm_mode = FNN_GEMM_AUTO,
    .gemm_small_max_f32 = 192.0 * 192.0 * 192.0,
    .gemm_small_max_f64 = 192.0 * 192.0 * 192.0,
    .gemm_packed_max_f32 = 1e300,
    .gemm_packed_max_f64 = 1e300,
    .gemm_packed_min_n = 16,
    .gemm_own_min_flops = 0,
};

enum { FNN_TUNE_IDX, FNN_TUNE_DOUBLE, FNN_TUNE_INT };
static const struct {
    const char *name;
    size_t offset;
    int kind;
} fnn_tune_fields[] = {
#define FNN_FIELD(name, kind) {#name, offsetof(fnn_tunables, name), kind}
    FNN_FIELD(parallel_min_elements, FNN_TUNE_IDX),
    FNN_FIELD(parallel_min_elements_cheap, FNN_TUNE_IDX),
    FNN_FIELD(chunk_elements, FNN_TUNE_IDX),
    FNN_FIELD(nogil_min_elements, FNN_TUNE_IDX),
    FNN_FIELD(gemm_parallel_min_flops, FNN_TUNE_DOUBLE),
    FNN_FIELD(gemm_shared_min_flops, FNN_TUNE_DOUBLE),
    FNN_FIELD(gemm_small_parallel_min_flops, FNN_TUNE_DOUBLE),
    FNN_FIELD(gemm_scratch_keep_bytes, FNN_TUNE_DOUBLE),
    FNN_FIELD(conv_cols_budget, FNN_TUNE_IDX),
    FNN_FIELD(conv_direct_max_buffer, FNN_TUNE_IDX),
    FNN_FIELD(conv_parallel_min_work, FNN_TUNE_IDX),
    FNN_FIELD(conv_winograd_min_channels, FNN_TUNE_IDX),
    FNN_FIELD(rnn_parallel_min_work, FNN_TUNE_DOUBLE),
    FNN_FIELD(rnn_small_elements, FNN_TUNE_IDX),
    FNN_FIELD(rnn_spin_seconds, FNN_TUNE_DOUBLE),
    FNN_FIELD(gemm_mode, FNN_TUNE_INT),
    FNN_FIELD(gemm_small_max_f32, FNN_TUNE_DOUBLE),
    FNN_FIELD(gemm_small_max_f64, FNN_TUNE_DOUBLE),
    FNN_FIELD(gemm_packed_max_f32, FNN_TUNE_DOUBLE),
    FNN_FIELD(gemm_packed_max_f64, FNN_TUNE_DOUBLE),
    FNN_FIELD(gemm_packed_min_n, FNN_TUNE_IDX),
    FNN_FIELD(gemm_own_min_flops, FNN_TUNE_DOUBLE),
#undef FNN_FIELD
};
#define FNN_NFIELDS ((int)(sizeof fnn_tune_fields / sizeof fnn_tune_fields[0]))

static int fnn_tune_find(const char *name)
{
    for (int i = 0; i < FNN_NFIELDS; i++)
        if (strcmp(fnn_tune_fields[i].name, name) == 0)
            return i;
    return -1;
}

int fnn_tune_set(const char *name, double value)
{
    int i = fnn_tune_find(name);
    if (i < 0)
        return -1;
    char *field = (char *)&fnn_tune + fnn_tune_fields[i].offset;
    switch (fnn_tune_fields[i].kind) {
    case FNN_TUNE_IDX: *(fnn_idx *)field = (fnn_idx)value; break;
    case FNN_TUNE_INT: *(int *)field = (int)value; break;
    default: *(double *)field = value; break;
    }
    return 0;
}

int fnn_tune_get(const char *name, double *value)
{
    int i = fnn_tune_find(name);
    if (i < 0)
        return -1;
    const char *field = (const char *)&fnn_tune + fnn_tune_fields[i].offset;
    switch (fnn_tune_fields[i].kind) {
    case FNN_TUNE_IDX: *value = (double)*(const fnn_idx *)field; break;
    case FNN_TUNE_INT: *value = (double)*(const int *)field; break;
    default: *value = *(const double *)field; break;
    }
    return 0;
}

const char *fnn_tune_name(int i)
{
    return i >= 0 && i < FNN_NFIELDS ? fnn_tune_fields[i].name : NULL;
}

/* ---- the GEMM policy ---- */

int fnn_gemm_route(fnn_idx m, fnn_idx n, fnn_idx k, int is_f64)
{
    return fnn_gemm_route_mode(fnn_tune.gemm_mode, m, n, k, is_f64);
}

int fnn_gemm_route_mode(int mode, fnn_idx m, fnn_idx n, fnn_idx k, int is_f64)
{
    /* the volume in double: m n k of three 31-bit sizes can pass 2^63 */
    double volume = (double)m * (double)n * (double)k;
    double small_max = is_f64 ? fnn_tune.gemm_small_max_f64 : fnn_tune.gemm_small_max_f32;
    double packed_max = is_f64 ? fnn_tune.gemm_packed_max_f64 : fnn_tune.gemm_packed_max_f32;
    switch (mode) {
    case FNN_GEMM_BLAS:
        return FNN_ROUTE_BLAS;
    case FNN_GEMM_OWN: /* the small kernel up to where the packed GEMM would use threads */
        return volume <= fnn_tune.gemm_parallel_min_flops ? FNN_ROUTE_SMALL : FNN_ROUTE_PACKED;
    default:
        if (volume < fnn_tune.gemm_own_min_flops)
            return FNN_ROUTE_BLAS;
        if (volume <= small_max)
            return FNN_ROUTE_SMALL;
        if (volume <= packed_max && n >= fnn_tune.gemm_packed_min_n)
            return FNN_ROUTE_PACKED;
        return FNN_ROUTE_BLAS;
    }
}

static long long fnn_routes[FNN_ROUTE_COUNT];

void fnn_route_taken(int route)
{
    if (route >= 0 && route < FNN_ROUTE_COUNT)
        __atomic_fetch_add(&fnn_routes[route], 1, __ATOMIC_RELAXED);
}

long long fnn_route_count(int route)
{
    return route >= 0 && route < FNN_ROUTE_COUNT ? __atomic_load_n(&fnn_routes[route], __ATOMIC_RELAXED) : -1;
}
