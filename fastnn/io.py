"""Save and load models: architecture and weights in one file, no pickle.

File format (version 1): a NumPy ``.npz`` archive (a zip file) written with
``allow_pickle=False`` and read back the same way, holding

``__fastnn__``
    uint8 array with UTF-8 JSON: ``format``, ``version``, ``architecture``
    (nested ``{"type": name, "config": {...}, "children": {...}}``),
    ``params`` (name → shape, dtype) and ``sha256``, the digest of every
    parameter's name, dtype, shape and bytes in order.
``param/<name>``
    one array per parameter, keyed by its ``state_dict`` name.

Loading rebuilds each layer by looking its ``type`` up in the layer registry
(:func:`fastnn.nn.register_module`); a name that is not registered is an
error. Nothing in a file is ever imported or executed. Any problem with a
file (truncated, corrupted, checksum mismatch, unknown layer, parameters not
matching the architecture) raises :class:`ModelFileError`, a ``ValueError``.

Saving is atomic: the file is written to a temporary file in the same
directory, flushed and fsynced, then renamed over the target with
``os.replace``; a crash during ``save`` leaves any previous file intact.

A layer class of your own becomes saveable by decorating it with
``@fastnn.nn.register_module`` and implementing ``get_config()`` (fastnn's own
layers are registered that way).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import zipfile

import numpy as np

from .nn.module import MODULE_REGISTRY, Module, register_module

__all__ = ["save", "load", "ModelFileError", "register_module", "FORMAT_NAME", "FORMAT_VERSION"]

FORMAT_NAME = "fastnn-model"
FORMAT_VERSION = 1
_HEADER = "__fastnn__"
_PREFIX = "param/"


class ModelFileError(ValueError):
    """A model file is truncated, corrupted, of another format, or does not match its architecture."""


def _architecture(module: Module) -> dict:
    name = getattr(type(module), "_registered_name", None)
    if name is None or MODULE_REGISTRY.get(name) is not type(module):
        raise TypeError(f"{type(module).__name__} is not registered: decorate it with "
                        f"@fastnn.nn.register_module (and implement get_config) to save it")
    config = module.get_config()
    try:
        json.dumps(config, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{type(module).__name__}.get_config() must return JSON-serialisable values: {exc}") from None
    return {"type": name, "config": config,
            "children": {k: _architecture(c) for k, c in module._modules.items()}}


def _digest(names_arrays) -> str:
    h = hashlib.sha256()
    for name, arr in names_arrays:
        h.update(name.encode())
        h.update(b"\0")
        h.update(arr.dtype.str.encode())
        h.update(repr(tuple(arr.shape)).encode())
        h.update(np.ascontiguousarray(arr).tobytes())
    return h.hexdigest()


def save(model: Module, path) -> None:
    """Write ``model`` (architecture and weights) to ``path``, atomically.

    Parameters
    ----------
    model : Module
        Every module in it must be registered and implement ``get_config``.
    path : str or os.PathLike
        Written as given (no suffix is added).
    """
    if not isinstance(model, Module):
        raise TypeError(f"save expects a fastnn Module, got {type(model).__name__}")
    arch = _architecture(model)
    state = model.state_dict()
    header = {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "architecture": arch,
        "params": {k: {"shape": list(v.shape), "dtype": v.dtype.str} for k, v in state.items()},
        "sha256": _digest(state.items()),
    }
    arrays = {_HEADER: np.frombuffer(json.dumps(header).encode("utf-8"), dtype=np.uint8)}
    for k, v in state.items():
        arrays[_PREFIX + k] = v
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix="." + os.path.basename(path) + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, allow_pickle=False, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    try:  # make the rename itself durable
        dfd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:  # pragma: no cover - e.g. file systems that refuse fsync on directories
        pass


def _build(spec, where="model"):
    if not isinstance(spec, dict) or not isinstance(spec.get("type"), str):
        raise ModelFileError(f"{where}: malformed architecture entry")
    name = spec["type"]
    cls = MODULE_REGISTRY.get(name)
    if cls is None:
        raise ModelFileError(f"{where}: unknown layer type {name!r} (not registered; known: {sorted(MODULE_REGISTRY)})")
    config = spec.get("config", {})
    children_spec = spec.get("children", {})
    if not isinstance(config, dict) or not isinstance(children_spec, dict):
        raise ModelFileError(f"{where}: malformed config of {name}")
    children = {k: _build(v, f"{where}.{k}") for k, v in children_spec.items()}
    try:
        module = cls.from_config(config, children)
    except (TypeError, ValueError, KeyError) as exc:
        raise ModelFileError(f"{where}: cannot build {name} from {config}: {exc}") from None
    if list(module._modules) != list(children_spec):
        raise ModelFileError(f"{where}: {name} has children {list(module._modules)}, the file says "
                             f"{list(children_spec)}")
    return module


def load(path) -> Module:
    """Read a model written by :func:`save`.

    Parameters
    ----------
    path : str or os.PathLike

    Returns
    -------
    Module
        A new model with the saved architecture and exactly the saved weights.

    Raises
    ------
    ModelFileError
        For a truncated, corrupted or foreign file, a checksum mismatch, an
        unknown layer type, or weights that do not fit the architecture.
    FileNotFoundError
        If ``path`` does not exist.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(path)
    try:
        with np.load(path, allow_pickle=False) as archive:
            names = list(archive.files)
            if _HEADER not in names:
                raise ModelFileError(f"{path}: not a fastnn model file (no {_HEADER} entry)")
            header = json.loads(archive[_HEADER].tobytes().decode("utf-8"))
            arrays = {n[len(_PREFIX):]: archive[n] for n in names if n.startswith(_PREFIX)}
    except ModelFileError:
        raise
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, KeyError, UnicodeDecodeError,
            json.JSONDecodeError, RuntimeError) as exc:
        raise ModelFileError(f"{path}: unreadable or corrupted model file ({type(exc).__name__}: {exc})") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT_NAME:
        raise ModelFileError(f"{path}: not a fastnn model file")
    if header.get("version") != FORMAT_VERSION:
        raise ModelFileError(f"{path}: file format version {header.get('version')!r}, this fastnn reads "
                             f"version {FORMAT_VERSION}")
    declared = header.get("params")
    if not isinstance(declared, dict) or list(declared) != list(arrays):
        raise ModelFileError(f"{path}: parameter list {sorted(arrays)} does not match the header")
    for k, meta in declared.items():
        a = arrays[k]
        if list(a.shape) != list(meta.get("shape", [])) or a.dtype.str != meta.get("dtype"):
            raise ModelFileError(f"{path}: parameter {k} has shape {a.shape} {a.dtype}, header says "
                                 f"{meta.get('shape')} {meta.get('dtype')}")
    if _digest(arrays.items()) != header.get("sha256"):
        raise ModelFileError(f"{path}: checksum mismatch: the weights are corrupted")
    model = _build(header.get("architecture"))
    own = dict(model.named_parameters())
    if list(own) != list(arrays):
        raise ModelFileError(f"{path}: weights {list(arrays)} do not match the architecture's parameters {list(own)}")
    for k, p in own.items():
        a = arrays[k]
        if a.shape != p.data.shape or a.dtype != p.data.dtype:
            raise ModelFileError(f"{path}: parameter {k} is {a.shape} {a.dtype} in the file but the architecture "
                                 f"makes {p.data.shape} {p.data.dtype}")
        p.data[...] = a
    return model
