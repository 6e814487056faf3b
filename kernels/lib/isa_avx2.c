/* The kernels built for AVX2 with FMA: 8 float lanes, 16 vector registers (compile flags: setup.py). */
#define FNN_ISA FNN_ISA_AVX2
#define FNN_ISA_NAME avx2
#include "../body.h"
