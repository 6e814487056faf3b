"""The public kernels: validated, then run by the active backend.

Every function here checks its arguments (:mod:`fastnn._validation`),
allocates any output not given, and calls the kernel of the same name on
:func:`fastnn.backends.current`. Layers use these, never a backend directly,
so ``fastnn.set_backend`` switches everything at once.

Output buffers: every op accepts ``out=`` (or ``grad=`` ...) to reuse memory
across training steps; results are written there and returned.
"""

from . import activations as _activations
from . import adaptive_pool as _adaptive_pool
from . import conv as _conv
from . import dense as _dense
from . import dropout as _dropout
from . import embedding as _embedding
from . import losses as _losses
from . import norm as _norm
from . import optim as _optim
from . import rnn as _rnn
from . import train_plan as _train_plan
from .activations import *  # noqa: F403
from .adaptive_pool import *  # noqa: F403
from .conv import *  # noqa: F403
from .dense import *  # noqa: F403
from .dropout import *  # noqa: F403
from .embedding import *  # noqa: F403
from .losses import *  # noqa: F403
from .norm import *  # noqa: F403
from .optim import *  # noqa: F403
from .rnn import *  # noqa: F403
from .train_plan import *  # noqa: F403

# The families' lists, spliced (ruff cannot read starred entries).
__all__ = [  # noqa: PLE0604
    *_activations.__all__,
    *_conv.__all__,
    *_dense.__all__,
    *_losses.__all__,
    *_optim.__all__,
    *_rnn.__all__,
    *_norm.__all__,
    *_dropout.__all__,
    *_embedding.__all__,
    *_adaptive_pool.__all__,
    *_train_plan.__all__,
]
