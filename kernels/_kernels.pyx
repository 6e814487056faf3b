# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
# cython: nonecheck=False, binding=True, embedsignature=True
"""fastnn's compiled kernels: the Cython glue over the C kernel library.

One extension module. The C library (kernels/lib: every kernel built once
per instruction set) is linked into it once, and seen from here through
fnn.pxd. The glue takes the raw data pointers of arrays that fastnn.ops has
validated (C-contiguous, one float dtype, shapes and sizes checked; inputs
are only read, so read-only arrays are fine), splits large work over the
OpenMP team and runs every matrix product through one router (gemm_run).
Sizes and offsets are fnn_idx (ptrdiff_t). Layout: kernels/README.md.
"""

include "_common.pxi"
include "_runtime.pxi"
include "_elementwise.pxi"
include "_dense.pxi"
include "_conv.pxi"
include "_rnn.pxi"
include "_layers.pxi"
include "_train.pxi"
