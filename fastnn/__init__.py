"""fastnn: train small and mid-sized neural networks fast on the CPU.

Every kernel exists three times behind one API: a NumPy reference, a Numba
backend and a Cython backend. Switch with :func:`set_backend`, the
``FASTNN_BACKEND`` variable or the :func:`use_backend` context manager.

Importing fastnn is cheap: it imports neither Numba nor the compiled
extension; a backend loads the first time it is used.

Quick start::

    import fastnn
    from fastnn import nn, optim
    model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))
    history = fastnn.fit(model, X, y, loss=nn.CrossEntropyLoss(),
                         optimizer=optim.SGD(model.parameters(), lr=0.1, momentum=0.9),
                         epochs=20, batch_size=32)
    fastnn.save(model, "model.npz")
"""

from . import gemm, nn, ops, optim
from ._config import active_threads, adaptive_threads, get_num_threads, set_adaptive_threads, set_num_threads
from .backends import (
    BackendUnavailable,
    available_backends,
    backend_status,
    get_backend,
    set_backend,
    use_backend,
)
from .export import export_onnx, export_safetensors
from .gemm import get_gemm, set_gemm, use_gemm
from .grad_mode import enable_grad, inference_mode, is_grad_enabled, no_grad
from .gradcheck import GradcheckError, gradcheck
from .io import ModelFileError, load, load_checkpoint, save, save_checkpoint
from .nn.init import manual_seed
from .train import EarlyStopping, History, NonFiniteLossError, evaluate, fit, make_train_step, predict
from .workspace import Workspace, workspace

__version__ = "0.1.0"

__all__ = [
    "__version__",
    "BackendUnavailable",
    "available_backends",
    "backend_status",
    "get_backend",
    "set_backend",
    "use_backend",
    "get_num_threads",
    "set_num_threads",
    "active_threads",
    "adaptive_threads",
    "set_adaptive_threads",
    "ops",
    "gemm",
    "get_gemm",
    "set_gemm",
    "use_gemm",
    "nn",
    "optim",
    "manual_seed",
    "no_grad",
    "enable_grad",
    "inference_mode",
    "is_grad_enabled",
    "Workspace",
    "workspace",
    "fit",
    "make_train_step",
    "NonFiniteLossError",
    "predict",
    "evaluate",
    "History",
    "EarlyStopping",
    "save",
    "load",
    "save_checkpoint",
    "load_checkpoint",
    "ModelFileError",
    "gradcheck",
    "GradcheckError",
    "export_onnx",
    "export_safetensors",
]
