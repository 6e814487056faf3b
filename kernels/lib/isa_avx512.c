/* The kernels built for AVX-512 (F, VL, DQ, BW) with FMA: 16 float lanes, 32 vector registers (compile flags: setup.py). */
#define FNN_ISA FNN_ISA_AVX512
#define FNN_ISA_NAME avx512
#include "../body.h"
