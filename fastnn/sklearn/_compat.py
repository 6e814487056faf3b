"""The scikit-learn helpers this package needs, across the versions it supports (1.3 and later)."""

from __future__ import annotations

import numpy as np

try:  # scikit-learn >= 1.6
    from sklearn.utils.validation import validate_data
except ImportError:  # pragma: no cover - older scikit-learn

    def validate_data(estimator, *args, **kwargs):
        """``estimator._validate_data``, the method form of scikit-learn < 1.6."""
        return estimator._validate_data(*args, **kwargs)


try:
    from sklearn.utils.validation import _check_sample_weight
except ImportError:  # pragma: no cover - a future scikit-learn without it
    _check_sample_weight = None

__all__ = ["validate_data", "check_sample_weight", "store_init_params"]


def store_init_params(estimator, values):
    """Set every named parameter of ``type(estimator).__init__`` from ``values`` (its ``locals()``).

    scikit-learn's convention: ``__init__`` stores each argument unchanged
    under its own name and validates nothing; checks happen in ``fit``.
    """
    import inspect

    for name, param in inspect.signature(type(estimator).__init__).parameters.items():
        if name != "self" and param.kind not in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            setattr(estimator, name, values[name])


def check_sample_weight(sample_weight, X):
    """``sample_weight`` as a float64 array of shape (n_samples,), checked as scikit-learn checks it."""
    if _check_sample_weight is not None:
        return _check_sample_weight(sample_weight, X, dtype=np.float64)
    n = X.shape[0]
    if np.isscalar(sample_weight):
        return np.full(n, float(sample_weight))
    sw = np.asarray(sample_weight, dtype=np.float64)
    if sw.shape != (n,):
        raise ValueError(f"sample_weight.shape == {sw.shape}, expected ({n},)!")
    if not np.isfinite(sw).all():
        raise ValueError("sample_weight contains NaN or infinity")
    return sw


#: Key under which :func:`pack_parts` keeps an estimator's fastnn objects in its pickled state.
PARTS_KEY = "_fastnn_parts"


def pack_parts(state, names):
    """Move ``state``'s fastnn objects (networks, optimizers) into one pickled ``bytes`` entry.

    joblib loads large arrays of a pickle as read-only memory maps
    (``joblib.load(mmap_mode="r")``, and its workers' arguments), which a
    fastnn ``Parameter`` refuses as its data. Inside ``bytes`` the arrays
    are invisible to that, and come back as ordinary arrays.
    """
    import pickle

    parts = {name: state.pop(name) for name in names if name in state}
    if parts:
        state[PARTS_KEY] = pickle.dumps(parts, protocol=pickle.HIGHEST_PROTOCOL)
    return state


def unpack_parts(state):
    """Undo :func:`pack_parts` on a state dict (in place); returns it."""
    import pickle

    packed = state.pop(PARTS_KEY, None)
    if packed is not None:
        state.update(pickle.loads(bytes(packed)))
    return state
