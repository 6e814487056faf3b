/* fastnn's own GEMM: BLIS-style packing + register-tile micro-kernels.
 *
 * The same C source (gemm_kernel.h) is compiled three times per element type:
 * for AVX-512, for AVX2+FMA and for the baseline instruction set (SSE2 on
 * x86-64), each under `#pragma GCC target`, and the best one the CPU
 * supports is picked at run time with __builtin_cpu_supports. The extension
 * itself stays portable (no -march=native needed). Compilers without GCC's
 * target pragmas get only the baseline kernel.
 *
 * Entry points:
 *   fnn_sgemm / fnn_dgemm(M, N, K, a, rsa, csa, b, rsb, csb, c, ldc, bias, act, nthreads)
 *     (sizes, strides and offsets are ptrdiff_t: no product of them wraps)
 *   fnn_gemm_set_isa(level)   force a kernel set (-1 = best available)
 *   fnn_gemm_isa()            the kernel set in use (0 generic, 1 avx2, 2 avx512)
 */
#ifndef FASTNN_GEMM_H
#define FASTNN_GEMM_H

#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#if !defined(__GNUC__)
#error "fastnn's GEMM needs GCC-compatible vector extensions (gcc or clang)"
#endif

enum { FNN_ACT_IDENTITY = 0, FNN_ACT_RELU = 1, FNN_ACT_SIGMOID = 2, FNN_ACT_TANH = 3 };

/* Below this many multiply-adds one thread does the whole product: starting
 * the team costs more than it saves. */
#ifndef FNN_PARALLEL_MIN_FLOPS
#define FNN_PARALLEL_MIN_FLOPS (192.0 * 192.0 * 192.0)
#endif
/* From this many multiply-adds on, threads share one packed B block (a few
 * barriers per KC step); below it each thread works alone on a slab of C. */
#ifndef FNN_SHARED_MIN_FLOPS
#define FNN_SHARED_MIN_FLOPS (768.0 * 768.0 * 768.0)
#endif

/* Per-thread packing buffers, grown on demand and kept for the thread's
 * life: allocating (and page-faulting) a fresh buffer on every call would
 * cost more than a small product. Slot 0: packed B, slot 1: packed A. */
static __thread void *fnn_tls_buf[2];
static __thread size_t fnn_tls_cap[2];

static void *fnn_tls_buffer(int slot, size_t bytes)
{
    if (bytes > fnn_tls_cap[slot]) {
        void *p = NULL;
        size_t want = bytes + bytes / 4 + 4096;
        free(fnn_tls_buf[slot]);
        fnn_tls_buf[slot] = NULL;
        fnn_tls_cap[slot] = 0;
        if (posix_memalign(&p, 64, want) != 0)
            return NULL;
        fnn_tls_buf[slot] = p;
        fnn_tls_cap[slot] = want;
    }
    return fnn_tls_buf[slot];
}

/* Activations that need exp: applied to a finished tile while it is in L1. */
static void fnn_act_tile_s(float *c, ptrdiff_t ldc, int m, int n, int act)
{
    for (int i = 0; i < m; ++i) {
        float *r = c + i * ldc;
        if (act == FNN_ACT_SIGMOID) {
            for (int j = 0; j < n; ++j)
                r[j] = 1.0f / (1.0f + expf(-r[j]));
        } else {
            for (int j = 0; j < n; ++j)
                r[j] = tanhf(r[j]);
        }
    }
}

static void fnn_act_tile_d(double *c, ptrdiff_t ldc, int m, int n, int act)
{
    for (int i = 0; i < m; ++i) {
        double *r = c + i * ldc;
        if (act == FNN_ACT_SIGMOID) {
            for (int j = 0; j < n; ++j)
                r[j] = 1.0 / (1.0 + exp(-r[j]));
        } else {
            for (int j = 0; j < n; ++j)
                r[j] = tanh(r[j]);
        }
    }
}

/* ---- baseline kernels (SSE2 on x86-64, whatever 16-byte vectors are elsewhere) */
#define FNN_KC 256
#define FNN_MC 96
#define FNN_NC 2048

#define FNN_T float
#define FNN_IS_DOUBLE 0
#define FNN_TSFX _s
#define FNN_SFX _s_generic
#define FNN_VBYTES 16
#define FNN_MR 4
#define FNN_NV 2
#include "gemm_kernel.h"
#undef FNN_T
#undef FNN_IS_DOUBLE
#undef FNN_TSFX
#undef FNN_SFX
#undef FNN_VBYTES
#undef FNN_MR
#undef FNN_NV

#define FNN_T double
#define FNN_IS_DOUBLE 1
#define FNN_TSFX _d
#define FNN_SFX _d_generic
#define FNN_VBYTES 16
#define FNN_MR 4
#define FNN_NV 2
#include "gemm_kernel.h"
#undef FNN_T
#undef FNN_IS_DOUBLE
#undef FNN_TSFX
#undef FNN_SFX
#undef FNN_VBYTES
#undef FNN_MR
#undef FNN_NV
#undef FNN_KC
#undef FNN_MC
#undef FNN_NC

#if (defined(__x86_64__) || defined(__i386__)) && !defined(FASTNN_GEMM_GENERIC_ONLY)
#define FNN_HAVE_X86_KERNELS 1

/* ---- AVX2 + FMA: 16 ymm registers, 6 x 2 accumulators */
#pragma GCC push_options
#pragma GCC target("avx2,fma")
#ifdef __clang__
#pragma clang attribute push(__attribute__((target("avx2,fma"))), apply_to = function)
#endif
#define FNN_KC 256
#define FNN_MC 120
#define FNN_NC 3072

#define FNN_T float
#define FNN_IS_DOUBLE 0
#define FNN_TSFX _s
#define FNN_SFX _s_avx2
#define FNN_VBYTES 32
#define FNN_MR 6
#define FNN_NV 2
#include "gemm_kernel.h"
#undef FNN_T
#undef FNN_IS_DOUBLE
#undef FNN_TSFX
#undef FNN_SFX
#undef FNN_VBYTES
#undef FNN_MR
#undef FNN_NV

#define FNN_T double
#define FNN_IS_DOUBLE 1
#define FNN_TSFX _d
#define FNN_SFX _d_avx2
#define FNN_VBYTES 32
#define FNN_MR 6
#define FNN_NV 2
#include "gemm_kernel.h"
#undef FNN_T
#undef FNN_IS_DOUBLE
#undef FNN_TSFX
#undef FNN_SFX
#undef FNN_VBYTES
#undef FNN_MR
#undef FNN_NV
#undef FNN_KC
#undef FNN_MC
#undef FNN_NC
#ifdef __clang__
#pragma clang attribute pop
#endif
#pragma GCC pop_options

/* ---- AVX-512: 32 zmm registers */
#pragma GCC push_options
#pragma GCC target("avx512f,avx512vl,avx512dq,avx2,fma")
#ifdef __clang__
#pragma clang attribute push(__attribute__((target("avx512f,avx512vl,avx512dq,avx2,fma"))), apply_to = function)
#endif
#ifndef FNN_AVX512_KC
#define FNN_AVX512_KC 256
#endif
#ifndef FNN_AVX512_MC
#define FNN_AVX512_MC 96
#endif
#ifndef FNN_AVX512_MR
#define FNN_AVX512_MR 12
#endif
#ifndef FNN_AVX512_NV
#define FNN_AVX512_NV 2
#endif
#ifndef FNN_AVX512_NC
#define FNN_AVX512_NC 1024
#endif
#define FNN_KC FNN_AVX512_KC
#define FNN_MC FNN_AVX512_MC
#define FNN_NC FNN_AVX512_NC

#define FNN_T float
#define FNN_IS_DOUBLE 0
#define FNN_TSFX _s
#define FNN_SFX _s_avx512
#define FNN_VBYTES 64
#define FNN_MR FNN_AVX512_MR
#define FNN_NV FNN_AVX512_NV
#include "gemm_kernel.h"
#undef FNN_T
#undef FNN_IS_DOUBLE
#undef FNN_TSFX
#undef FNN_SFX
#undef FNN_VBYTES
#undef FNN_MR
#undef FNN_NV

#define FNN_T double
#define FNN_IS_DOUBLE 1
#define FNN_TSFX _d
#define FNN_SFX _d_avx512
#define FNN_VBYTES 64
#define FNN_MR FNN_AVX512_MR
#define FNN_NV FNN_AVX512_NV
#include "gemm_kernel.h"
#undef FNN_T
#undef FNN_IS_DOUBLE
#undef FNN_TSFX
#undef FNN_SFX
#undef FNN_VBYTES
#undef FNN_MR
#undef FNN_NV
#undef FNN_KC
#undef FNN_MC
#undef FNN_NC
#ifdef __clang__
#pragma clang attribute pop
#endif
#pragma GCC pop_options
#endif /* x86 */

/* ---- run-time dispatch */
static int fnn_isa_forced = -1;
static int fnn_isa_detected = -1;

static int fnn_gemm_best_isa(void)
{
    if (fnn_isa_detected < 0) {
        int level = 0;
#ifdef FNN_HAVE_X86_KERNELS
        __builtin_cpu_init();
        if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
            level = 1;
        if (level == 1 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
            __builtin_cpu_supports("avx512dq"))
            level = 2;
#endif
        fnn_isa_detected = level;
    }
    return fnn_isa_detected;
}

/* The kernel set in use: 0 generic, 1 avx2, 2 avx512. */
static int fnn_gemm_isa(void)
{
    int best = fnn_gemm_best_isa();
    if (fnn_isa_forced >= 0 && fnn_isa_forced < best)
        return fnn_isa_forced;
    return best;
}

/* Force a kernel set (capped at what the CPU has); -1 restores the best. */
static int fnn_gemm_set_isa(int level)
{
    fnn_isa_forced = level;
    return fnn_gemm_isa();
}

static int fnn_sgemm(ptrdiff_t M, ptrdiff_t N, ptrdiff_t K, const float *a, ptrdiff_t rsa, ptrdiff_t csa,
                     const float *b, ptrdiff_t rsb, ptrdiff_t csb, float *c, ptrdiff_t ldc, const float *bias, int act,
                     int nthreads)
{
    int level = fnn_gemm_isa();
    /* A narrow product (a 10-class output layer) would waste most of a
     * 32-column AVX-512 tile: the 16-column AVX2 tile does less work. */
    if (level == 2 && N <= 16)
        level = 1;
    switch (level) {
#ifdef FNN_HAVE_X86_KERNELS
    case 2:
        return fnn_gemm_s_avx512(M, N, K, a, rsa, csa, b, rsb, csb, c, ldc, bias, act, nthreads);
    case 1:
        return fnn_gemm_s_avx2(M, N, K, a, rsa, csa, b, rsb, csb, c, ldc, bias, act, nthreads);
#endif
    default:
        return fnn_gemm_s_generic(M, N, K, a, rsa, csa, b, rsb, csb, c, ldc, bias, act, nthreads);
    }
}

static int fnn_dgemm(ptrdiff_t M, ptrdiff_t N, ptrdiff_t K, const double *a, ptrdiff_t rsa, ptrdiff_t csa,
                     const double *b, ptrdiff_t rsb, ptrdiff_t csb, double *c, ptrdiff_t ldc, const double *bias,
                     int act, int nthreads)
{
    int level = fnn_gemm_isa();
    if (level == 2 && N <= 8)
        level = 1;
    switch (level) {
#ifdef FNN_HAVE_X86_KERNELS
    case 2:
        return fnn_gemm_d_avx512(M, N, K, a, rsa, csa, b, rsb, csb, c, ldc, bias, act, nthreads);
    case 1:
        return fnn_gemm_d_avx2(M, N, K, a, rsa, csa, b, rsb, csb, c, ldc, bias, act, nthreads);
#endif
    default:
        return fnn_gemm_d_generic(M, N, K, a, rsa, csa, b, rsb, csb, c, ldc, bias, act, nthreads);
    }
}

#endif /* FASTNN_GEMM_H */
