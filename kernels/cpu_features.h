/* Run-time CPU facts shared by the C kernels.
 *
 * The hot loops are target clones (AVX-512 / AVX2 / baseline), so the
 * compiler cannot know which register file the running clone has; code that
 * picks a tile shape by register count asks here, once per process.
 */
#ifndef FASTNN_CPU_FEATURES_H
#define FASTNN_CPU_FEATURES_H

/* 1 when the CPU has AVX-512 (32 vector registers): tiles of 16 accumulators
 * fit. Racing first calls all store the same value. */
static int fnn_wide_regs_flag = -1;
__attribute__((unused)) static int fnn_cpu_wide_regs(void)
{
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
    if (fnn_wide_regs_flag < 0) {
        __builtin_cpu_init();
        fnn_wide_regs_flag = __builtin_cpu_supports("avx512f") ? 1 : 0;
    }
    return fnn_wide_regs_flag;
#else
    return 0;
#endif
}

#endif
