/* The instruction-set layer: vector types, loads and stores, and register
 * tile shapes for the one instruction set this translation unit is built for.
 *
 * kernels/lib/isa_<name>.c defines FNN_ISA and is compiled with that ISA's
 * flags (setup.py); every kernel above this layer is written once over
 * fnn_v_f32 / fnn_v_f64, whose width comes from here, so each build gets
 * vectors that fit its registers (a 64-byte vector in a 16-register AVX2
 * build is lowered through the stack).
 */
#ifndef FNN_ISA_H
#define FNN_ISA_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fnn.h"

#if !defined(__GNUC__)
#error "fastnn's kernels need GCC-compatible vector extensions (gcc or clang)"
#endif

#ifndef FNN_ISA
#error "define FNN_ISA (kernels/lib/isa_*.c) before including isa.h"
#endif

#if FNN_ISA == FNN_ISA_AVX512
#if !defined(__AVX512F__) || !defined(__AVX512VL__) || !defined(__FMA__)
#error "the AVX-512 kernels must be compiled with AVX-512 F/VL and FMA enabled"
#endif
#define FNN_VBYTES 64
#define FNN_LANES_F32 16
#define FNN_LANES_F64 8
#define FNN_MR 8         /* small-product tile: 8 rows x 2 vectors, 16 of 32 registers */
#define FNN_PACK_MR 12   /* packed GEMM tile: 12 x 2 vectors */
#define FNN_WG_O 4       /* convolution weight gradient: 4 x 4 dot products */
#define FNN_WG_K 4
#define FNN_KC 256
#define FNN_MC 96
#define FNN_NC 1024
#elif FNN_ISA == FNN_ISA_AVX2
#if !defined(__AVX2__) || !defined(__FMA__)
#error "the AVX2 kernels must be compiled with AVX2 and FMA enabled"
#endif
#define FNN_VBYTES 32
#define FNN_LANES_F32 8
#define FNN_LANES_F64 4
#define FNN_MR 6         /* 6 x 2 vectors: 12 accumulators, 2 B vectors, 1 broadcast of 16 registers */
#define FNN_PACK_MR 6
#define FNN_WG_O 4       /* 12 accumulators, 3 vectors of pixels, 1 of gradient */
#define FNN_WG_K 3
#define FNN_KC 256
#define FNN_MC 120
#define FNN_NC 3072
#else
#define FNN_VBYTES 16
#define FNN_LANES_F32 4
#define FNN_LANES_F64 2
#define FNN_MR 4         /* no FMA: a product needs a temporary register */
#define FNN_PACK_MR 4
#define FNN_WG_O 3
#define FNN_WG_K 3
#define FNN_KC 256
#define FNN_MC 96
#define FNN_NC 2048
#endif
#define FNN_NV 2         /* vectors per tile row */

#define FNN_INLINE static inline __attribute__((always_inline))
#define FNN_UNUSED __attribute__((unused))
#define FNN_RESTRICT __restrict__
#define FNN_CAT_(a, b) a##b
#define FNN_CAT(a, b) FNN_CAT_(a, b)
#define FNN_STR_(x) #x
#define FNN_PRAGMA(x) _Pragma(FNN_STR_(x))

/* "omp simd" reductions vectorise (several partial sums) without -ffast-math;
 * the build adds -fopenmp-simd where it has no OpenMP. */
#if defined(_OPENMP) || defined(FNN_OPENMP_SIMD)
#define FNN_SIMD_REDUCTION(r) FNN_PRAGMA(omp simd reduction(r))
#else
#define FNN_SIMD_REDUCTION(r)
#endif

#if FNN_ISA != FNN_ISA_SSE2
#include <immintrin.h>
#endif
#ifdef _OPENMP
#include <omp.h>
#endif

typedef float fnn_v_f32 __attribute__((vector_size(FNN_VBYTES)));
typedef double fnn_v_f64 __attribute__((vector_size(FNN_VBYTES)));
typedef int32_t fnn_vi_f32 __attribute__((vector_size(FNN_VBYTES)));   /* lane masks */
typedef int64_t fnn_vi_f64 __attribute__((vector_size(FNN_VBYTES)));

/* In-register transpose of an N x N block r[0..N) of vectors (GCC's
 * __builtin_shuffle; N a literal lane count). Stage s swaps the s x s
 * off-diagonal blocks of every 2s x 2s block: row i (bit s clear) takes row
 * i+s's low lanes into its high half, row i+s takes row i's high lanes. */
#define FNN_TLO(N, s, l) (((l) & (s)) ? (N) + (l) - (s) : (l))
#define FNN_THI(N, s, l) (((l) & (s)) ? (N) + (l) : (l) + (s))
#define FNN_TM2(F, N, s) F(N, s, 0), F(N, s, 1)
#define FNN_TM4(F, N, s) FNN_TM2(F, N, s), F(N, s, 2), F(N, s, 3)
#define FNN_TM8(F, N, s) FNN_TM4(F, N, s), F(N, s, 4), F(N, s, 5), F(N, s, 6), F(N, s, 7)
#define FNN_TM16(F, N, s) FNN_TM8(F, N, s), F(N, s, 8), F(N, s, 9), F(N, s, 10), F(N, s, 11), \
                          F(N, s, 12), F(N, s, 13), F(N, s, 14), F(N, s, 15)
#define FNN_TSTAGE(IV, N, s, r)                                                       \
    do {                                                                              \
        if ((s) < (N)) {                                                              \
            const IV lo_ = {FNN_CAT(FNN_TM, N)(FNN_TLO, N, s)};                       \
            const IV hi_ = {FNN_CAT(FNN_TM, N)(FNN_THI, N, s)};                       \
            _Pragma("GCC unroll 16")                                                  \
            for (int i_ = 0; i_ < (N); i_++) {                                        \
                if (i_ & (s))                                                         \
                    continue;                                                         \
                __typeof__(r[0]) x_ = r[i_], y_ = r[(i_ + (s)) % (N)];                \
                r[i_] = __builtin_shuffle(x_, y_, lo_);                               \
                r[(i_ + (s)) % (N)] = __builtin_shuffle(x_, y_, hi_);                 \
            }                                                                         \
        }                                                                             \
    } while (0)
#define FNN_TRANSPOSE_BLOCK(IV, N, r)                                                 \
    do {                                                                              \
        FNN_TSTAGE(IV, N, 8, r);                                                      \
        FNN_TSTAGE(IV, N, 4, r);                                                      \
        FNN_TSTAGE(IV, N, 2, r);                                                      \
        FNN_TSTAGE(IV, N, 1, r);                                                      \
    } while (0)

/* Unaligned whole-vector loads and stores (memcpy: no aliasing or alignment claims). */
FNN_INLINE fnn_v_f32 fnn_load_f32(const float *p) { fnn_v_f32 v; memcpy(&v, p, sizeof v); return v; }
FNN_INLINE fnn_v_f64 fnn_load_f64(const double *p) { fnn_v_f64 v; memcpy(&v, p, sizeof v); return v; }
FNN_INLINE void fnn_store_f32(float *p, fnn_v_f32 v) { memcpy(p, &v, sizeof v); }
FNN_INLINE void fnn_store_f64(double *p, fnn_v_f64 v) { memcpy(p, &v, sizeof v); }

/* The first n lanes (0 < n <= lanes) from / to memory, nothing past them
 * touched; the other lanes load as zero. Masked moves where the ISA has them. */
#if FNN_ISA == FNN_ISA_AVX512
FNN_INLINE fnn_v_f32 fnn_loadn_f32(const float *p, int n)
{ return (fnn_v_f32)_mm512_maskz_loadu_ps((__mmask16)((1u << n) - 1), p); }
FNN_INLINE fnn_v_f64 fnn_loadn_f64(const double *p, int n)
{ return (fnn_v_f64)_mm512_maskz_loadu_pd((__mmask8)((1u << n) - 1), p); }
FNN_INLINE void fnn_storen_f32(float *p, fnn_v_f32 v, int n)
{ _mm512_mask_storeu_ps(p, (__mmask16)((1u << n) - 1), (__m512)v); }
FNN_INLINE void fnn_storen_f64(double *p, fnn_v_f64 v, int n)
{ _mm512_mask_storeu_pd(p, (__mmask8)((1u << n) - 1), (__m512d)v); }
#elif FNN_ISA == FNN_ISA_AVX2
FNN_INLINE fnn_vi_f32 fnn_mask_f32(int n)
{ const fnn_vi_f32 iota = {0, 1, 2, 3, 4, 5, 6, 7}; return iota < n; }
FNN_INLINE fnn_vi_f64 fnn_mask_f64(int n)
{ const fnn_vi_f64 iota = {0, 1, 2, 3}; return iota < n; }
FNN_INLINE fnn_v_f32 fnn_loadn_f32(const float *p, int n)
{ return (fnn_v_f32)_mm256_maskload_ps(p, (__m256i)fnn_mask_f32(n)); }
FNN_INLINE fnn_v_f64 fnn_loadn_f64(const double *p, int n)
{ return (fnn_v_f64)_mm256_maskload_pd(p, (__m256i)fnn_mask_f64(n)); }
FNN_INLINE void fnn_storen_f32(float *p, fnn_v_f32 v, int n)
{ _mm256_maskstore_ps(p, (__m256i)fnn_mask_f32(n), (__m256)v); }
FNN_INLINE void fnn_storen_f64(double *p, fnn_v_f64 v, int n)
{ _mm256_maskstore_pd(p, (__m256i)fnn_mask_f64(n), (__m256d)v); }
#else
FNN_INLINE fnn_v_f32 fnn_loadn_f32(const float *p, int n)
{ fnn_v_f32 v = {0}; for (int l = 0; l < n; l++) v[l] = p[l]; return v; }
FNN_INLINE fnn_v_f64 fnn_loadn_f64(const double *p, int n)
{ fnn_v_f64 v = {0}; for (int l = 0; l < n; l++) v[l] = p[l]; return v; }
FNN_INLINE void fnn_storen_f32(float *p, fnn_v_f32 v, int n) { for (int l = 0; l < n; l++) p[l] = v[l]; }
FNN_INLINE void fnn_storen_f64(double *p, fnn_v_f64 v, int n) { for (int l = 0; l < n; l++) p[l] = v[l]; }
#endif

/* Per-thread scratch, grown on demand and kept for the thread's life up to
 * fnn_tune.gemm_scratch_keep_bytes (a malloc per call costs a measurable part
 * of a microsecond-sized product); larger requests are allocated per call and
 * returned with *owned = 1. Slot 0: packed B, 1: packed A, 2: small-GEMM B. */
#define FNN_SCRATCH_SLOTS 3
static __thread void *fnn_scratch_buf[FNN_SCRATCH_SLOTS];
static __thread size_t fnn_scratch_cap[FNN_SCRATCH_SLOTS];

FNN_UNUSED static void *fnn_scratch(int slot, size_t bytes, int *owned)
{
    *owned = 0;
    if (bytes <= fnn_scratch_cap[slot])
        return fnn_scratch_buf[slot];
    if ((double)bytes > fnn_tune.gemm_scratch_keep_bytes) {
        void *p = NULL;
        *owned = 1;
        return posix_memalign(&p, 64, bytes) == 0 ? p : NULL;
    }
    void *p = NULL;
    size_t want = bytes + bytes / 4 + 4096;
    if (posix_memalign(&p, 64, want) != 0)
        return NULL;
    free(fnn_scratch_buf[slot]);
    fnn_scratch_buf[slot] = p;
    fnn_scratch_cap[slot] = want;
    return p;
}

#endif /* FNN_ISA_H */
