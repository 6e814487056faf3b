"""The NumPy reference backend: the executable specification of every kernel.

Each kernel here is written to be read: it states the math of the forward
pass or of backpropagation in NumPy, with the shapes in the docstring. The
compiled backends must agree with these functions (the test-suite checks it,
per dtype), and fall back to them for anything they do not implement.

Kernels receive arrays already checked by :mod:`fastnn.ops` (float32 or
float64, C-contiguous, consistent shapes and dtypes, output buffers
allocated) and write their results into the given buffers.
"""

BACKEND_INFO = {"description": "pure NumPy reference (the specification and the fallback)"}
