"""Kernels of the Cython backend that run the NumPy reference for now.

The ops below have no compiled C version yet. They are registered here, in
one place, so that the Cython backend's table is complete (every op works
under ``use_backend("cython")``) and so that the list of what is still
interpreted is explicit. The reference is used rather than the Numba
kernels so that this backend neither needs Numba nor starts its thread pool.
"""

# The compiled C versions of these kernels come with the kernel library.
from ..reference.adaptive_pool import adaptive_avg_pool2d_backward, adaptive_avg_pool2d_forward
from ..reference.dropout import dropout_backward, dropout_forward
from ..reference.embedding import embedding_backward, embedding_forward
from ..reference.norm import batch_norm_backward, batch_norm_forward, layer_norm_backward, layer_norm_forward

__all__ = ["dropout_forward", "dropout_backward", "batch_norm_forward", "batch_norm_backward",
           "layer_norm_forward", "layer_norm_backward", "embedding_forward", "embedding_backward",
           "adaptive_avg_pool2d_forward", "adaptive_avg_pool2d_backward"]
