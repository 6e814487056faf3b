/* The kernels built for the architecture's baseline (SSE2 on x86-64): 4 float lanes, no FMA (compile flags: setup.py). */
#define FNN_ISA FNN_ISA_SSE2
#define FNN_ISA_NAME sse2
#include "../body.h"
