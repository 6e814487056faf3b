"""Save and load models: architecture and weights in one file, no pickle.

File format (version 1): a NumPy ``.npz`` archive (a zip file) written with
``allow_pickle=False``, holding

``__fastnn__``
    uint8 array with UTF-8 JSON: ``format``, ``version``, ``architecture``
    (nested ``{"type": name, "config": {...}, "children": {...}}``),
    ``params`` (name → shape, dtype) and ``sha256``, the digest of every
    parameter's name, dtype, shape and bytes in order.
``param/<name>``
    one array per ``state_dict`` entry, keyed by its name: every parameter
    and every persistent buffer (running statistics; ``num_batches_tracked``
    is the one int64 array a file may hold, and only where the architecture
    makes an int64 buffer).

Loading
-------
A model file is untrusted input. Nothing in it is ever imported or executed:
each layer's ``type`` is looked up in the layer registry
(:func:`fastnn.nn.register_module`) and nowhere else. :func:`load` reads the
archive with its own reader, which checks, before any layer is built or any
weight array allocated:

* the zip directory: members stored or deflated (other compression methods
  are refused), no duplicate, overlapping or encrypted members, sizes that
  the file can physically hold, nothing but the header and the declared
  parameters;
* the header: JSON of bounded size, item count and nesting
  (:data:`MAX_HEADER_BYTES`, :data:`MAX_LAYERS`, :data:`MAX_DEPTH`), every
  field of the right type;
* each parameter's ``.npy`` header (bounded, parsed without ``eval``):
  dtype and shape equal to the header's, byte size equal to the size the zip
  directory declares; the total at most ``max_bytes``;
* the architecture: every layer's config is checked as strictly as its
  constructor checks arguments (``"batch_first": "false"`` is an error, not
  ``True``; unknown and missing keys are errors), and the parameters it would
  create (:meth:`fastnn.nn.Module.parameters_from_config`) must be exactly the
  file's, by name, shape and dtype.

Then the weights are streamed once (never inflating a member past its
declared size) to verify every member's CRC-32, the ``sha256`` digest and
that every weight is finite, and only then is the model built and filled.

Any problem with a file raises :class:`ModelFileError` (a ``ValueError``)
with a message saying what is wrong; a path that does not exist raises
``FileNotFoundError``.

Layers of your own
    A registered class that does not override ``parameters_from_config``
    cannot say what it allocates, so ``load`` builds it from the file's
    config as it is, but only after the rest of the file has passed every
    check above, including ``max_bytes`` on the file's own sizes; its
    parameters are compared with the file's afterwards. Its constructor is
    therefore the one place that must check its config. Such a class that
    subclasses a fastnn layer does not inherit the layer's declaration.
Non-finite weights
    are an error by default: a NaN or infinity in a saved model is almost
    always a diverged run or damage, and loading it would only move the
    failure to the first prediction. ``load(..., allow_nonfinite=True)``
    loads such a file, e.g. to inspect a diverged run.

Saving
------
:func:`save` writes a temporary file in the target's directory, fsyncs it and
renames it over the target with ``os.replace``: a crash or an interrupt
(``KeyboardInterrupt`` included) during ``save`` leaves any previous file
intact, and the temporary file is removed whenever ``save`` fails. The new
file keeps the permission bits of the file it replaces (a new file gets the
usual ``0o666`` less the umask); its owner is the saving user. If ``path`` is
a symbolic link, ``save`` follows it, as ``open(path, "w")`` would: the file
it points to is replaced and the link stays.

A layer class of your own becomes saveable by decorating it with
``@fastnn.nn.register_module`` and implementing ``get_config()`` (fastnn's own
layers are registered that way).
"""

from __future__ import annotations

import errno
import hashlib
import json
import math
import os
import re
import secrets
import stat
import struct
import zlib
from collections.abc import Callable, Iterable, Sequence
from typing import Any, NoReturn

import numpy as np

from . import _validation as _v
from ._typing import NDArray, ParameterSpec
from .nn.module import MODULE_REGISTRY, Module, register_module

__all__ = [
    "save",
    "load",
    "save_checkpoint",
    "load_checkpoint",
    "ModelFileError",
    "CHECKPOINT_FORMAT",
    "register_module",
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "DEFAULT_MAX_BYTES",
    "MAX_HEADER_BYTES",
    "MAX_LAYERS",
    "MAX_DEPTH",
    "MAX_PARAMS",
]

FORMAT_NAME = "fastnn-model"
FORMAT_VERSION = 1
_HEADER = "__fastnn__"
_PREFIX = "param/"
_STATE = "state/"  # a checkpoint's optimizer (and training) arrays
CHECKPOINT_FORMAT = "fastnn-checkpoint"
_HEADER_MEMBER = _HEADER + ".npy"  # np.savez appends ".npy" to every name

#: Default of ``load(max_bytes=...)``: the most weight data a file may hold.
DEFAULT_MAX_BYTES = 4 << 30
#: Largest header (the JSON text) a file may have.
MAX_HEADER_BYTES = 4 << 20
#: Most layers (modules, containers included) in one architecture.
MAX_LAYERS = 1 << 14
#: Deepest nesting of containers in an architecture.
MAX_DEPTH = 32
#: Most parameters (weight arrays) in one file.
MAX_PARAMS = (1 << 16) - 1

# Every value the JSON parser creates costs at most ~100 bytes and needs one of
# these characters before it, so counting them bounds the parse's memory (~50 MB).
_MAX_HEADER_ITEMS = 1 << 19
_MAX_NAME_BYTES = 1024  # a member name in the zip directory
_MAX_DIRECTORY_BYTES = 16 << 20
_MAX_NPY_HEADER = 4096  # NumPy writes ~120 bytes; it refuses more than 10000 itself
_MAX_NDIM = 32
_DEFLATE_MAX_RATIO = 1032  # deflate cannot expand its input more than this
_CHUNK = 1 << 20  # streaming buffer (weights are read through it once)
_DTYPES = {s: np.dtype(s) for s in ("<f4", "<f8", ">f4", ">f8", "<i8", ">i8")}  # int64: buffer counters
_METHOD_NAMES = {
    1: "shrink",
    6: "implode",
    9: "deflate64",
    12: "bzip2",
    14: "lzma",
    19: "lz77",
    93: "zstandard",
    95: "xz",
    96: "jpeg",
    97: "wavpack",
    98: "ppmd",
    99: "AES encryption",
}
_HEX64 = re.compile(r"[0-9a-f]{64}")


class ModelFileError(ValueError):
    """A model file is truncated, corrupted, of another format, or does not match its architecture."""


class _Bad(Exception):
    """What is wrong with the file being loaded (``load`` adds the path and raises ModelFileError)."""


def _clip(text: object, limit: int = 300) -> str:
    """A message part built from file content, cut short (it may be megabytes long)."""
    text = str(text)
    return text if len(text) <= limit else text[: limit - 3] + "..."


# -- saving -------------------------------------------------------------------


def _architecture(module: Module, count: list, depth: int = 0) -> dict:
    name = getattr(type(module), "_registered_name", None)
    if name is None or MODULE_REGISTRY.get(name) is not type(module):
        raise TypeError(
            f"{type(module).__name__} is not registered: decorate it with "
            f"@fastnn.nn.register_module (and implement get_config) to save it"
        )
    count[0] += 1
    if depth > MAX_DEPTH:
        raise ValueError(f"cannot save a model whose containers nest more than {MAX_DEPTH} deep")
    config = module.get_config()
    try:
        json.dumps(config, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{type(module).__name__}.get_config() must return JSON-serialisable values: {exc}") from None
    return {
        "type": name,
        "config": config,
        "children": {k: _architecture(c, count, depth + 1) for k, c in module._modules.items()},
    }


def _digest(names_arrays: Iterable[tuple[str, NDArray[Any]]]) -> str:
    h = hashlib.sha256()
    for name, arr in names_arrays:
        h.update(name.encode())
        h.update(b"\0")
        h.update(arr.dtype.str.encode())
        h.update(repr(tuple(arr.shape)).encode())
        h.update(np.ascontiguousarray(arr).tobytes())
    return h.hexdigest()


def _target(path: str) -> str:
    """The file ``save`` replaces: ``path``, or the file a symbolic link at ``path`` points to."""
    if not os.path.islink(path):
        return path
    real = os.path.realpath(path)
    if os.path.islink(real):  # realpath stops inside a loop of links
        raise OSError(errno.ELOOP, "cannot save through a loop of symbolic links", path)
    return real


def _save_error(exc: OSError, path: str, directory: str, what: str = "the model") -> OSError:
    """``exc`` (about the temporary file) restated about the path the caller gave."""
    if exc.errno == errno.ENOENT:
        return FileNotFoundError(errno.ENOENT, f"cannot save {what}: directory {directory!r} does not exist", path)
    return OSError(exc.errno, f"cannot save {what}: {exc.strerror}", path)


def save(model: Module, path: str | os.PathLike[str]) -> None:
    """Write ``model`` (architecture and weights) to ``path``, atomically.

    Parameters
    ----------
    model : Module
        Every module in it must be registered and implement ``get_config``.
    path : str or os.PathLike
        Written as given (no suffix is added). A symbolic link is followed:
        the file it points to is replaced, the link stays.

    Raises
    ------
    TypeError
        If a module is not registered or its config is not JSON.
    ValueError
        If the model exceeds what a file may hold (:data:`MAX_LAYERS`,
        :data:`MAX_DEPTH`, :data:`MAX_PARAMS`, :data:`MAX_HEADER_BYTES`):
        :func:`load` would refuse the file.
    OSError
        If the file cannot be written; ``FileNotFoundError`` names ``path``
        when its directory does not exist.

    Notes
    -----
    The file is written to a temporary file next to the target, fsynced and
    renamed over it, so a crash leaves any previous file intact; the
    temporary file is removed if ``save`` fails or is interrupted. The new
    file keeps the permission bits of the file it replaces; a new file gets
    ``0o666`` less the umask. Non-finite weights are saved as they are, and
    :func:`load` refuses them unless ``allow_nonfinite=True``.
    """
    if not isinstance(model, Module):
        raise TypeError(f"save expects a fastnn Module, got {type(model).__name__}")
    _write(path, *_model_arrays(model, FORMAT_NAME))


def _model_arrays(
    model: Module, fmt: str, extra: dict[str, Any] | None = None, states: dict[str, NDArray[Any]] | None = None
) -> tuple[dict[str, NDArray[Any]], str]:
    """The archive's arrays (header first) and what it holds; ``extra``/``states`` make a checkpoint."""
    count = [0]
    arch = _architecture(model, count)
    state = model.state_dict()
    header = {
        "format": fmt,
        "version": FORMAT_VERSION,
        "architecture": arch,
        "params": {k: {"shape": list(v.shape), "dtype": v.dtype.str} for k, v in state.items()},
        "sha256": _digest(list(state.items()) + [(_STATE + k, v) for k, v in (states or {}).items()]),
    }
    if extra is not None:
        header["checkpoint"] = extra
        header["state"] = {k: {"shape": list(v.shape), "dtype": v.dtype.str} for k, v in (states or {}).items()}
    try:
        text = json.dumps(header, allow_nan=False)
    except ValueError:
        raise ValueError("cannot save a checkpoint whose metrics or settings are NaN or infinite") from None
    size = len(text.encode())
    limits = [  # load refuses files beyond these: do not write one
        (count[0] > MAX_LAYERS, f"{count[0]} layers (at most {MAX_LAYERS})"),
        (len(state) > MAX_PARAMS, f"{len(state)} parameters (at most {MAX_PARAMS})"),
        (
            size > MAX_HEADER_BYTES or _items(text) > _MAX_HEADER_ITEMS,
            f"a {size}-byte header (at most {MAX_HEADER_BYTES} bytes and {_MAX_HEADER_ITEMS} JSON items)",
        ),
        (
            any(len(k.encode()) > _MAX_NAME_BYTES - 10 for k in state),
            f"a parameter name of more than {_MAX_NAME_BYTES - 10} bytes",
        ),
    ]
    too_big = [what for over, what in limits if over]
    if too_big:
        raise ValueError(f"cannot save this model: {', '.join(too_big)} is more than a model file may hold")
    arrays = {_HEADER: np.frombuffer(text.encode("utf-8"), dtype=np.uint8)}
    for k, v in state.items():
        arrays[_PREFIX + k] = v
    for k, v in (states or {}).items():
        arrays[_STATE + k] = v
    return arrays, "the model" if extra is None else "the checkpoint"


def _write(path: str | os.PathLike[str], arrays: dict[str, NDArray[Any]], what: str) -> None:
    """Write ``arrays`` as an .npz archive at ``path``, atomically (see :func:`save`)."""
    path = os.fsdecode(os.fspath(path))
    target = _target(path)
    directory = os.path.dirname(target) or os.curdir
    try:
        st = os.stat(target)
    except FileNotFoundError:
        st = None
    except OSError as exc:
        raise _save_error(exc, path, directory, what) from None
    if st is not None and stat.S_ISDIR(st.st_mode):
        raise IsADirectoryError(errno.EISDIR, f"cannot save {what} over a directory", path)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    prefix = "." + os.path.basename(target)[:50] + "."  # at most 200 bytes: within NAME_MAX
    tmp = None
    try:
        for _ in range(100):
            tmp = os.path.join(directory, prefix + secrets.token_hex(6) + ".tmp")
            try:
                fd = os.open(tmp, flags, 0o666)  # 0o666 less the umask, as open() gives
                break
            except FileExistsError:
                tmp = None  # someone else's file: never remove it
            except OSError as exc:
                tmp = None
                raise _save_error(exc, path, directory, what) from None
        else:
            raise FileExistsError(errno.EEXIST, f"cannot save {what}: no free temporary file name", path)
        with os.fdopen(fd, "wb") as f:
            if st is not None:
                os.fchmod(f.fileno(), stat.S_IMODE(st.st_mode))
            np.savez(f, allow_pickle=False, **arrays)
            f.flush()
            os.fsync(f.fileno())
        try:
            os.replace(tmp, target)
        except OSError as exc:
            raise _save_error(exc, path, directory, what) from None
        tmp = None
    finally:
        if tmp is not None:  # failed or interrupted: leave nothing behind
            try:
                os.unlink(tmp)
            except OSError:
                pass
    try:  # make the rename itself durable
        dfd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:  # pragma: no cover - e.g. file systems that refuse fsync on directories
        pass


# -- the zip archive, read with bounds --------------------------------------------


class _Member:
    """One zip member, as the central directory declares it."""

    __slots__ = ("name", "raw", "method", "crc", "csize", "usize", "offset", "data")

    name: str
    raw: bytes
    method: int
    crc: int
    csize: int
    usize: int
    offset: int
    #: where the member's bytes start in the file: None until :func:`_locate` reads its local header
    data: int


def _pread(fd: int, n: int, offset: int) -> bytes:
    data = os.pread(fd, n, offset)
    if len(data) != n:
        raise _Bad("the file is truncated")
    return data


def _preadinto(fd: int, buf: memoryview, offset: int) -> int:
    """Read into ``buf`` at ``offset``: straight into the weights where the OS can."""
    if hasattr(os, "preadv"):
        return os.preadv(fd, [buf], offset)
    data = os.pread(fd, len(buf), offset)
    buf[: len(data)] = data
    return len(data)


def _zip64(extra: bytes, fields: list, name: str) -> list:
    """``fields`` (unpacked size, packed size, offset) with those marked 0xFFFFFFFF read from the zip64 extra."""
    i = 0
    while i + 4 <= len(extra):
        tag, size = struct.unpack_from("<HH", extra, i)
        if tag == 1:
            values, j = extra[i + 4 : i + 4 + size], 0
            for k in range(3):
                if fields[k] == 0xFFFFFFFF:
                    if j + 8 > len(values):
                        break
                    fields[k] = struct.unpack_from("<Q", values, j)[0]
                    j += 8
            else:
                return fields
            break
        i += 4 + size
    raise _Bad(f"the zip directory entry of {name!r} lacks its zip64 sizes")


def _directory(fd: int, size: int) -> tuple[dict, int]:
    """Parse the zip directory: ``({name: _Member}, offset where member data must end)``."""
    if size < 22:
        raise _Bad("not a fastnn model file (too short to be a zip archive)")
    n = min(size, 22 + 0xFFFF)
    tail = _pread(fd, n, size - n)
    i = tail.rfind(b"PK\x05\x06")
    while i >= 0 and (i + 22 > n or i + 22 + struct.unpack_from("<H", tail, i + 20)[0] != n):
        i = tail.rfind(b"PK\x05\x06", 0, i)  # the end record's comment must end the file
    if i < 0:
        raise _Bad("not a fastnn model file (not a zip archive)")
    end = size - n + i
    disk, cd_disk, count_here, count, cd_size, cd_offset = struct.unpack_from("<HHHHII", tail, i + 4)
    if 0xFFFF in (count_here, count) or 0xFFFFFFFF in (cd_size, cd_offset):
        locator = _pread(fd, 20, end - 20) if end >= 20 else b""
        if locator[:4] != b"PK\x06\x07" or struct.unpack_from("<Q", locator, 8)[0] + 56 > end - 20:
            raise _Bad("the zip64 end record is missing")
        record_at = struct.unpack_from("<Q", locator, 8)[0]
        record = _pread(fd, 56, record_at)
        if record[:4] != b"PK\x06\x06":
            raise _Bad("the zip64 end record is corrupted")
        disk, cd_disk, count_here, count, cd_size, cd_offset = struct.unpack_from("<IIQQQQ", record, 16)
        end = record_at
    if disk or cd_disk or count_here != count:
        raise _Bad("multi-volume zip archives are not model files")
    if count > MAX_PARAMS + 1:
        raise _Bad(f"the archive has {count} members; a model file holds at most {MAX_PARAMS + 1}")
    if cd_size > _MAX_DIRECTORY_BYTES or cd_offset + cd_size != end:
        raise _Bad("the zip directory is corrupted (its size or place does not fit the file)")
    cd = _pread(fd, cd_size, cd_offset)
    members = {}
    pos = 0
    for _ in range(count):
        if pos + 46 > cd_size or cd[pos : pos + 4] != b"PK\x01\x02":
            raise _Bad("the zip directory is corrupted")
        (flags, method, crc, csize, usize, name_len, extra_len, comment_len, disk_start, offset) = struct.unpack_from(
            "<8xHH4xIIIHHHH6xI", cd, pos
        )
        raw = cd[pos + 46 : pos + 46 + name_len]
        extra = cd[pos + 46 + name_len : pos + 46 + name_len + extra_len]
        pos += 46 + name_len + extra_len + comment_len
        if pos > cd_size or name_len > _MAX_NAME_BYTES:
            raise _Bad("the zip directory is corrupted")
        try:
            name = raw.decode("utf-8" if flags & 0x800 else "cp437")
        except UnicodeDecodeError:
            raise _Bad(f"a member name in the zip directory is not UTF-8 ({_clip(raw, 60)})") from None
        if 0xFFFFFFFF in (usize, csize, offset):
            usize, csize, offset = _zip64(extra, [usize, csize, offset], name)
        if disk_start not in (0, 0xFFFF):
            raise _Bad("multi-volume zip archives are not model files")
        if flags & 0x2041:
            raise _Bad(f"member {name!r} is encrypted")
        if method not in (0, 8):
            raise _Bad(
                f"member {name!r} uses compression method {method} "
                f"({_METHOD_NAMES.get(method, 'unknown')}); model files are stored or deflated"
            )
        # sizes the file can physically hold (nothing is ever allocated from a size before this)
        if method == 0 and csize != usize:
            raise _Bad(f"member {name!r} is stored but declares {csize} bytes in the file and {usize} unpacked")
        if method == 8 and usize > _DEFLATE_MAX_RATIO * max(csize, 1):
            raise _Bad(
                f"member {name!r} declares {usize} bytes from {csize} deflated bytes, more than deflate can produce"
            )
        if offset + 30 + name_len + csize > cd_offset:
            raise _Bad(f"member {name!r} runs past the end of the archive's data")
        if name in members:
            raise _Bad(f"the archive holds {name!r} twice")
        m = members[name] = _Member()
        m.name, m.raw, m.method, m.crc, m.csize, m.usize, m.offset, m.data = (
            name,
            raw,
            method,
            crc,
            csize,
            usize,
            offset,
            None,  # type: ignore[assignment]  # see _Member.data
        )
    if pos != cd_size:
        raise _Bad("the zip directory is corrupted (bytes after its last entry)")
    return members, cd_offset


def _locate(fd: int, m: _Member, limit: int) -> None:
    """Find where ``m``'s data starts, from its local header (which must name it as the directory does)."""
    head = _pread(fd, 30 + len(m.raw), m.offset)
    name_len, extra_len = struct.unpack_from("<HH", head, 26)
    if head[:4] != b"PK\x03\x04" or name_len != len(m.raw) or head[30:] != m.raw:
        raise _Bad(f"the local header of member {m.name!r} does not match the zip directory")
    m.data = m.offset + 30 + name_len + extra_len
    if m.data + m.csize > limit:
        raise _Bad(f"member {m.name!r} runs past the end of the archive's data")


def _no_overlap(members: Iterable[_Member]) -> None:
    spans = sorted((m.offset, m.data + m.csize, m.name) for m in members)
    for (_, end, a), (start, _, b) in zip(spans, spans[1:]):
        if start < end:
            raise _Bad(f"members {a!r} and {b!r} overlap")


class _Reader:
    """The unpacked bytes of one member, never more than the zip directory declares."""

    __slots__ = ("fd", "m", "pos", "end", "left", "crc", "inflater", "tail")

    def __init__(self, fd: int, m: _Member):
        self.fd, self.m = fd, m
        self.pos, self.end = m.data, m.data + m.csize
        self.left = m.usize
        self.crc = 0
        self.inflater = zlib.decompressobj(-15) if m.method == 8 else None
        self.tail = b""  # compressed bytes read, not yet inflated

    def _input(self) -> bytes:
        if not self.tail:
            if self.pos >= self.end:
                raise _Bad(f"member {self.m.name!r} is truncated (its deflate stream ends early)")
            self.tail = _pread(self.fd, min(_CHUNK, self.end - self.pos), self.pos)
            self.pos += len(self.tail)
        return self.tail

    def readinto(self, buf: memoryview) -> None:
        """Fill ``buf`` (a byte view) completely with the member's next bytes."""
        n = len(buf)
        if n > self.left:
            raise _Bad(f"member {self.m.name!r} is shorter than its contents need")
        got = 0
        if self.inflater is None:
            while got < n:
                k = _preadinto(self.fd, buf[got:], self.pos)
                if k <= 0:
                    raise _Bad("the file is truncated")
                got += k
                self.pos += k
        else:
            z = self.inflater
            while got < n:
                out = z.decompress(self._input(), n - got)  # max_length: never more than asked for
                self.tail = z.unconsumed_tail
                if out:
                    buf[got : got + len(out)] = out
                    got += len(out)
                elif z.eof:
                    raise _Bad(f"member {self.m.name!r} inflates to fewer bytes than the zip directory declares")
        self.crc = zlib.crc32(buf, self.crc)
        self.left -= n

    def skip(self, n: int) -> None:
        self.readinto(memoryview(bytearray(n)))

    def finish(self) -> None:
        """Check that the member ends exactly where declared and that its CRC-32 matches."""
        z = self.inflater
        if z is not None:
            while not z.eof:
                if z.decompress(self._input(), 1):
                    raise _Bad(
                        f"member {self.m.name!r} inflates to more than the {self.m.usize} bytes the zip "
                        f"directory declares"
                    )
                self.tail = z.unconsumed_tail
        if self.crc != self.m.crc:
            raise _Bad(f"member {self.m.name!r} is corrupted (CRC-32 mismatch)")


# -- .npy headers, parsed without eval ----------------------------------------------

_NPY_TOKEN = re.compile(r"""\s*(?:'([^'\\]*)'|"([^"\\]*)"|(True|False)|(\d{1,30})|([{}(),:]))""")


def _npy_dict(text: str, where: str) -> dict:
    """The ``{'descr': str, 'fortran_order': bool, 'shape': (int, ...)}`` of a .npy header."""
    tokens: list[tuple[str, str | int | bool | None]] = []
    pos, n = 0, len(text.rstrip())
    while pos < n:
        t = _NPY_TOKEN.match(text, pos)
        if t is None:
            raise _Bad(f"{where}: malformed .npy header")
        pos = t.end()
        s1, s2, flag, num, punct = t.groups()
        if punct:
            tokens.append((punct, None))
        elif num:
            tokens.append(("int", int(num)))
        elif flag:
            tokens.append(("bool", flag == "True"))
        else:
            tokens.append(("str", s1 if s1 is not None else s2))
    tokens.append(("end", None))
    at = 0

    def take(kind: str) -> Any:  # the token's value: its type follows kind
        nonlocal at
        if tokens[at][0] != kind:
            raise _Bad(f"{where}: malformed .npy header")
        at += 1
        return tokens[at - 1][1]

    take("{")
    d = {}
    while tokens[at][0] != "}":
        key = take("str")
        take(":")
        if tokens[at][0] in ("str", "bool"):
            value = take(tokens[at][0])
        else:
            take("(")
            dims = []
            while tokens[at][0] != ")":
                dims.append(take("int"))
                if tokens[at][0] != ")":
                    take(",")
            take(")")
            value = tuple(dims)
        if key in d:
            raise _Bad(f"{where}: the .npy header repeats {key!r}")
        d[key] = value
        if tokens[at][0] != "}":
            take(",")
    take("}")
    take("end")
    if (
        set(d) != {"descr", "fortran_order", "shape"}
        or not isinstance(d["descr"], str)
        or not isinstance(d["fortran_order"], bool)
        or not isinstance(d["shape"], tuple)
        or len(d["shape"]) > _MAX_NDIM
    ):
        raise _Bad(f"{where}: malformed .npy header")
    return d


def _npy_header(r: _Reader, m: _Member) -> tuple[str, tuple, int]:
    """Read the .npy header at the start of ``m``: ``(descr, shape, header bytes)``."""
    where = f"member {m.name!r}"
    if m.usize < 10:
        raise _Bad(f"{where} is not a NumPy array (too short)")
    head = bytearray(8)
    r.readinto(memoryview(head))
    if head[:6] != b"\x93NUMPY" or head[6] not in (1, 2, 3) or head[7] != 0:
        raise _Bad(f"{where} is not a NumPy .npy array of a known format version")
    size = bytearray(2 if head[6] == 1 else 4)
    if 8 + len(size) > m.usize:
        raise _Bad(f"{where} is not a NumPy array (too short)")
    r.readinto(memoryview(size))
    length = int.from_bytes(size, "little")
    start = 8 + len(size)
    if length > _MAX_NPY_HEADER:
        raise _Bad(f"{where} has an oversized .npy header ({length} bytes; at most {_MAX_NPY_HEADER})")
    if start + length > m.usize:
        raise _Bad(f"{where}: the .npy header runs past the member's end")
    text = bytearray(length)
    r.readinto(memoryview(text))
    try:
        d = _npy_dict(text.decode("utf-8" if head[6] == 3 else "latin-1"), where)
    except UnicodeDecodeError:
        raise _Bad(f"{where}: the .npy header is not text") from None
    if d["fortran_order"]:
        raise _Bad(f"{where} is stored in Fortran order, which fastnn never writes")
    return d["descr"], d["shape"], start + length


# -- the JSON header ----------------------------------------------------------------


def _items(text: str) -> int:
    """An upper bound on the values in a JSON text: each but the first follows one of these."""
    return text.count(",") + text.count(":") + text.count("[") + text.count("{")


def _json_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    d = dict(pairs)
    if len(d) != len(pairs):
        seen = set()
        for k, _ in pairs:
            if k in seen:
                raise _Bad(f"the header repeats the key {_clip(repr(k), 60)}")
            seen.add(k)
    return d


def _json_constant(name: str) -> NoReturn:
    raise _Bad(f"the header holds {name}, which JSON does not allow")


def _parse_header(raw: bytes) -> dict:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _Bad(f"the header is not UTF-8 text (byte {exc.start})") from None
    if _items(text) > _MAX_HEADER_ITEMS:
        raise _Bad(f"the header holds more than {_MAX_HEADER_ITEMS} JSON items")
    try:
        header = json.loads(text, object_pairs_hook=_json_object, parse_constant=_json_constant)
    except RecursionError:
        raise _Bad("the header's JSON is nested too deeply") from None
    except json.JSONDecodeError as exc:
        raise _Bad(f"the header is not valid JSON ({exc.msg} at character {exc.pos})") from None
    except ValueError:  # an integer with thousands of digits
        raise _Bad("the header holds a number too long to read") from None
    if not isinstance(header, dict) or header.get("format") not in (FORMAT_NAME, CHECKPOINT_FORMAT):
        raise _Bad("not a fastnn model file")
    version = header.get("version")
    if type(version) is not int or version != FORMAT_VERSION:
        raise _Bad(f"file format version {_clip(repr(version), 40)}, this fastnn reads version {FORMAT_VERSION}")
    keys: tuple[str, ...] = ("format", "version", "architecture", "params", "sha256")
    if header["format"] == CHECKPOINT_FORMAT:  # a model file plus training state (see save_checkpoint)
        keys += ("checkpoint", "state")
        if not isinstance(header.get("checkpoint"), dict):
            raise _Bad("the checkpoint's training state is not an object")
    if set(header) != set(keys):
        raise _Bad(f"the header has keys {_clip(sorted(header), 200)}; a version-1 header has {list(keys)}")
    if not isinstance(header["sha256"], str) or not _HEX64.fullmatch(header["sha256"]):
        raise _Bad("the header's sha256 is not a SHA-256 hex digest")
    return header


def _declared_params(params: object) -> list[tuple[str, tuple, np.dtype]]:
    """The header's ``params``: ``[(name, shape, dtype)]``, each checked."""
    if not isinstance(params, dict):
        raise _Bad("the header's params is not an object")
    if len(params) > MAX_PARAMS:
        raise _Bad(f"the header declares {len(params)} parameters; a model file holds at most {MAX_PARAMS}")
    out = []
    for name, meta in params.items():
        where = f"parameter {_clip(repr(name), 80)}"
        if not name or len((_PREFIX + name + ".npy").encode("utf-8", "replace")) > _MAX_NAME_BYTES:
            raise _Bad(f"{where}: bad parameter name")
        if not isinstance(meta, dict) or set(meta) != {"shape", "dtype"}:
            raise _Bad(f"{where}: its entry must hold exactly shape and dtype")
        shape, dtype = meta["shape"], meta["dtype"]
        if not isinstance(shape, list) or len(shape) > _MAX_NDIM or any(type(d) is not int or d < 0 for d in shape):
            raise _Bad(f"{where}: shape {_clip(repr(shape), 80)} is not a list of sizes")
        if not isinstance(dtype, str) or dtype not in _DTYPES:
            raise _Bad(
                f"{where}: dtype {_clip(repr(dtype), 40)} is not float32 or float64 (nor int64, which "
                f"counters such as num_batches_tracked have)"
            )
        out.append((name, tuple(shape), _DTYPES[dtype]))
    return out


# -- the architecture, checked without building it ----------------------------------

_OPAQUE = object()  # marks a layer that cannot say which parameters it makes


def _declaration(cls: type[Module]) -> Callable[[dict[str, Any], tuple[str, ...]], list[ParameterSpec] | None] | None:
    """``cls.parameters_from_config`` if it describes ``cls`` itself, else None."""
    owner = next(k for k in cls.__mro__ if "parameters_from_config" in k.__dict__)
    if owner is Module or (owner is not cls and not cls.__module__.startswith("fastnn.")):
        return None  # the default, or a user's subclass inheriting a fastnn layer's declaration
    return cls.parameters_from_config


def _expected(spec: object, where: str, prefix: str, depth: int, count: list, out: list) -> None:
    """Append the parameters ``spec`` would make, ``(name, shape, dtype name)``, to ``out``."""
    count[0] += 1
    if count[0] > MAX_LAYERS:
        raise _Bad(f"the architecture has more than {MAX_LAYERS} layers")
    if depth > MAX_DEPTH:
        raise _Bad(f"{_clip(where, 100)}: containers nest more than {MAX_DEPTH} deep")
    if not isinstance(spec, dict) or set(spec) != {"type", "config", "children"}:
        raise _Bad(
            f"{_clip(where, 100)}: malformed architecture entry (it must hold exactly type, config and children)"
        )
    name, config, children = spec["type"], spec["config"], spec["children"]
    if not isinstance(name, str):
        raise _Bad(f"{_clip(where, 100)}: malformed architecture entry (type {_clip(repr(name), 40)} is not a name)")
    cls = MODULE_REGISTRY.get(name)
    if cls is None:
        raise _Bad(
            f"{_clip(where, 100)}: unknown layer type {_clip(repr(name), 80)} (not registered; "
            f"known: {sorted(MODULE_REGISTRY)})"
        )
    if not isinstance(config, dict) or not isinstance(children, dict):
        raise _Bad(f"{_clip(where, 100)}: malformed config of {name}")
    declare = _declaration(cls)
    own = None
    if declare is not None:
        try:
            own = declare(config, tuple(children))
        except (TypeError, ValueError, KeyError) as exc:
            raise _Bad(
                f"{_clip(where, 100)}: cannot build {name} from config {_clip(repr(config), 120)}: {_clip(exc)}"
            ) from None
    if own is None:
        out.append((_OPAQUE, prefix))
    else:
        out.extend((prefix + n, tuple(s), d) for n, s, d in own)
    for key, child in children.items():
        if len(key) > _MAX_NAME_BYTES:  # no parameter name could start with it; and names nest into each other
            raise _Bad(f"{_clip(where, 100)}: child name {_clip(repr(key), 40)} is longer than {_MAX_NAME_BYTES}")
        _expected(child, f"{where}.{key}", f"{prefix}{key}.", depth + 1, count, out if own is not None else [])


def _match(expected: list, params: list) -> None:
    """The architecture's parameters must be the file's, in order (a layer that cannot tell takes its prefix's)."""
    i, n = 0, len(params)
    for item in expected:
        if item[0] is _OPAQUE:
            while i < n and params[i][0].startswith(item[1]):
                i += 1
            continue
        name, shape, dtype = item
        if i >= n or params[i][0] != name:
            held = f"holds {_clip(repr(params[i][0]), 80)} there" if i < n else "holds no more parameters"
            raise _Bad(
                f"the architecture makes parameter {name!r} {shape} {dtype} as its parameter {i}, the file {held}"
            )
        if params[i][2].kind != "f" and dtype != params[i][2].name:
            raise _Bad(
                f"parameter {name!r} holds {params[i][2].name} values in the file, not float32 or float64 as "
                f"the architecture makes ({shape} {dtype})"
            )
        if params[i][1] != shape or params[i][2].name != dtype:
            raise _Bad(
                f"parameter {name!r} is {params[i][1]} {params[i][2].name} in the file, but the "
                f"architecture makes {shape} {dtype}"
            )
        i += 1
    if i != n:
        raise _Bad(
            f"the file holds parameters the architecture does not make: {_clip([p[0] for p in params[i : i + 5]], 200)}"
        )


def _build(spec: dict[str, Any], where: str = "model") -> Module:
    name = spec["type"]
    cls = MODULE_REGISTRY[name]
    children = {k: _build(v, f"{where}.{k}") for k, v in spec["children"].items()}
    try:
        module = cls.from_config(spec["config"], children)
    except Exception as exc:  # a layer of the user's checks its own config
        raise _Bad(
            f"{_clip(where, 100)}: cannot build {name} from config {_clip(repr(spec['config']), 120)}: "
            f"{type(exc).__name__}: {_clip(exc)}"
        ) from exc
    if not isinstance(module, Module) or list(module._modules) != list(spec["children"]):
        got = list(module._modules) if isinstance(module, Module) else type(module).__name__
        raise _Bad(
            f"{_clip(where, 100)}: {name} has children {_clip(got, 100)}, the file says "
            f"{_clip(list(spec['children']), 100)}"
        )
    return module


# -- loading ------------------------------------------------------------------------------


def _open(path: str, shown: str) -> tuple[int, int]:
    """Open a regular file for reading: ``(fd, size)``."""
    try:
        # O_NONBLOCK: opening a FIFO must not wait for a writer (it is refused below)
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise ModelFileError(f"{shown}: cannot open the file ({exc.strerror})") from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        kind = "a directory" if stat.S_ISDIR(st.st_mode) else "not a regular file"
        raise ModelFileError(f"{shown}: is {kind}, not a model file")
    return fd, st.st_size


def _load_path(
    path: str | os.PathLike[str], max_bytes: int, allow_nonfinite: bool, checkpoint: bool = False
) -> tuple[str, Any]:
    """``(the path as shown in errors, what :func:`_load` reads from the file)``; any failure is a ModelFileError."""
    path = os.fspath(path)
    shown = os.fsdecode(path)
    fd, size = _open(path, shown)
    try:
        return shown, _load(fd, size, max_bytes, allow_nonfinite, checkpoint)
    except _Bad as exc:
        raise ModelFileError(f"{shown}: {exc}") from exc.__cause__
    except zlib.error:
        raise ModelFileError(f"{shown}: corrupted deflate data") from None
    except OSError as exc:
        raise ModelFileError(f"{shown}: cannot read the file ({exc.strerror or exc})") from None
    finally:
        os.close(fd)


def _verify(
    fd: int,
    entries: Sequence[tuple[str, tuple[int, ...], np.dtype[Any], _Member, int]],
    digest: str,
    allow_nonfinite: bool,
) -> None:
    """Stream every weight once without keeping it: CRC-32s, the digest, finiteness."""
    h = hashlib.sha256()
    buf = bytearray(_CHUNK)
    view = memoryview(buf)
    nonfinite = []
    for name, shape, dtype, m, start in entries:
        r = _Reader(fd, m)
        r.skip(start)
        h.update(name.encode())
        h.update(b"\0")
        h.update(dtype.str.encode())
        h.update(repr(shape).encode())
        left, bad = m.usize - start, 0
        while left:
            k = min(left, _CHUNK)
            r.readinto(view[:k])
            h.update(view[:k])
            if not allow_nonfinite:
                finite = np.isfinite(np.frombuffer(buf, dtype, k // dtype.itemsize))
                if not finite.all():
                    bad += finite.size - int(np.count_nonzero(finite))
            left -= k
        r.finish()
        if bad:
            nonfinite.append(f"{name!r} ({bad} of {math.prod(shape)})")
    if h.hexdigest() != digest:
        raise _Bad("checksum mismatch: the weights are corrupted")
    if nonfinite:
        raise _Bad(
            f"non-finite weights (NaN or infinity) in {_clip(', '.join(nonfinite), 200)}; "
            f"load(..., allow_nonfinite=True) loads them anyway"
        )


def _fill(fd: int, entries: Sequence[tuple[str, tuple[int, ...], np.dtype[Any], _Member, int]], params: dict) -> None:
    """Read every weight into its array (CRC-32 checked again: the file may have changed)."""
    buf: bytearray | None = None
    for name, _shape, dtype, m, start in entries:
        r = _Reader(fd, m)
        r.skip(start)
        dst = params[name]
        if dst.dtype == dtype and dst.flags.c_contiguous:
            r.readinto(memoryview(dst.reshape(-1)).cast("B"))
        else:  # the other byte order: convert chunk by chunk
            buf = bytearray(_CHUNK) if buf is None else buf
            flat, done, step = dst.reshape(-1), 0, _CHUNK // dtype.itemsize
            while done < flat.size:
                k = min(step, flat.size - done)
                r.readinto(memoryview(buf)[: k * dtype.itemsize])
                flat[done : done + k] = np.frombuffer(buf, dtype, k)
                done += k
        try:
            r.finish()
        except _Bad:
            raise _Bad("the file changed while it was being read") from None


def _load(fd: int, size: int, max_bytes: int, allow_nonfinite: bool, checkpoint: bool = False) -> Any:
    """The model in the file; with ``checkpoint``, ``(model, training state, {name: state array})``."""
    members, data_end = _directory(fd, size)
    hm = members.get(_HEADER_MEMBER)
    if hm is None:
        raise _Bad(f"not a fastnn model file (no {_HEADER} entry)")
    if hm.usize > 12 + _MAX_NPY_HEADER + MAX_HEADER_BYTES:
        raise _Bad(f"the header takes {hm.usize} bytes; at most {MAX_HEADER_BYTES} are allowed")
    _locate(fd, hm, data_end)
    r = _Reader(fd, hm)
    descr, shape, start = _npy_header(r, hm)
    if descr not in ("|u1", "<u1", ">u1") or len(shape) != 1 or start + shape[0] != hm.usize:
        raise _Bad(f"the {_HEADER} entry is not a byte array")
    raw = bytearray(shape[0])
    r.readinto(memoryview(raw))
    r.finish()
    header = _parse_header(bytes(raw))
    del raw

    # the header against the zip directory and the architecture: no I/O, no allocation
    params = _declared_params(header["params"])
    if checkpoint and header["format"] != CHECKPOINT_FORMAT:
        raise _Bad("a model file, not a checkpoint (it holds no training state)")
    states = _declared_params(header["state"]) if header["format"] == CHECKPOINT_FORMAT else []
    wanted = {_PREFIX + name + ".npy" for name, _, _ in params} | {_STATE + name + ".npy" for name, _, _ in states}
    extra = [k for k in members if k != _HEADER_MEMBER and k not in wanted]
    missing = [k for k in wanted if k not in members]
    if extra or missing:
        raise _Bad(
            f"the archive's members do not match the header: missing {_clip(missing[:5], 150)}, "
            f"unexpected {_clip(extra[:5], 150)}"
        )
    total = sum(math.prod(shape) * dtype.itemsize for _, shape, dtype in params + states)
    if total > max_bytes:
        raise _Bad(f"the weights take {total} bytes, more than max_bytes={max_bytes}")
    expected: list[tuple[object, ...]] = []
    _expected(header["architecture"], "model", "", 0, [0], expected)
    _match(expected, params)
    entries: list[tuple[Any, ...]] = []  # (name, shape, dtype, member), then with the data's start
    for name, shape, dtype in params + [(_STATE + name, shape, dtype) for name, shape, dtype in states]:
        m = members[(name if name.startswith(_STATE) else _PREFIX + name) + ".npy"]
        nbytes = math.prod(shape) * dtype.itemsize
        if not 10 <= m.usize - nbytes <= 12 + _MAX_NPY_HEADER:
            raise _Bad(
                f"parameter {name!r}: the zip directory declares {m.usize} bytes, but its shape "
                f"{shape} {dtype.name} takes {nbytes} plus a .npy header"
            )
        entries.append((name, shape, dtype, m))

    # local and .npy headers: a few hundred bytes read per member
    for e in entries:
        _locate(fd, e[3], data_end)
    _no_overlap([hm] + [e[3] for e in entries])
    for i, (name, shape, dtype, m) in enumerate(entries):
        got_descr, got_shape, start = _npy_header(_Reader(fd, m), m)
        if got_descr != dtype.str or got_shape != shape or start + math.prod(shape) * dtype.itemsize != m.usize:
            raise _Bad(
                f"parameter {name!r}: its .npy header says {got_shape} {_clip(repr(got_descr), 20)}, "
                f"the file's header {shape} {dtype.str!r}, the zip directory {m.usize} bytes"
            )
        entries[i] = (name, shape, dtype, m, start)

    _verify(fd, entries, header["sha256"], allow_nonfinite)
    model = _build(header["architecture"])
    own = dict(model._named_state())  # parameters and buffers: the arrays the file fills
    if list(own) != [p[0] for p in params]:
        raise _Bad(
            f"weights {_clip([p[0] for p in params], 150)} do not match the architecture's parameters "
            f"{_clip(list(own), 150)}"
        )
    for name, shape, dtype in params:
        p = own[name]
        if p.shape != shape or p.dtype.name != dtype.name:
            raise _Bad(
                f"parameter {name} is {shape} {dtype.name} in the file but the architecture makes {p.shape} {p.dtype}"
            )
    _fill(fd, entries[: len(params)], own)
    if header["format"] != CHECKPOINT_FORMAT or not checkpoint:
        return model
    arrays = {e[0]: np.empty(e[1], e[2].newbyteorder("=")) for e in entries[len(params) :]}
    _fill(fd, entries[len(params) :], arrays)
    return model, header["checkpoint"], {k[len(_STATE) :]: v for k, v in arrays.items()}


def load(path: str | os.PathLike[str], *, max_bytes: int = DEFAULT_MAX_BYTES, allow_nonfinite: bool = False) -> Module:
    """Read a model written by :func:`save`.

    The file is treated as untrusted: it is checked completely (see
    :mod:`fastnn.io`) before any layer is built or any weight array is
    allocated, and nothing in it is ever executed.

    Parameters
    ----------
    path : str or os.PathLike
    max_bytes : int, default 4 GiB
        Most bytes of weights the file may hold; a file declaring more is
        refused before anything is read or allocated.
    allow_nonfinite : bool, default False
        Load weights that are NaN or infinite instead of refusing the file.

    Returns
    -------
    Module
        A new model with the saved architecture and exactly the saved weights.

    Raises
    ------
    ModelFileError
        For anything wrong with the file: truncated, corrupted or foreign, a
        checksum mismatch, an unknown layer type or a bad config, weights that
        do not fit the architecture or are not finite, more than ``max_bytes``
        of weights; also when ``path`` is a directory or cannot be read.
    FileNotFoundError
        If ``path`` does not exist.
    """
    max_bytes = _v.strict_int(max_bytes, "max_bytes", low=0)
    allow_nonfinite = _v.strict_bool(allow_nonfinite, "allow_nonfinite")
    return _load_path(path, max_bytes, allow_nonfinite)[1]


# -- checkpoints ------------------------------------------------------------------------------


def _rng_state(rng: np.random.Generator | dict[str, Any] | None) -> dict[str, Any] | None:
    if rng is None:
        return None
    if isinstance(rng, np.random.Generator):
        return dict(rng.bit_generator.state)
    if isinstance(rng, dict):
        return rng
    raise TypeError(f"rng must be a numpy Generator or its bit_generator.state, got {type(rng).__name__}")


def save_checkpoint(
    path: str | os.PathLike[str],
    model: Module,
    optimizer: Any,
    epoch: int,
    rng: np.random.Generator | dict[str, Any] | None = None,
    history: Any = None,
    *,
    scheduler: Any = None,
    step: int = 0,
    extra: dict[str, Any] | None = None,
    arrays: dict[str, NDArray[Any]] | None = None,
) -> None:
    """Write a training checkpoint: model, optimizer state, epoch, RNG state and history, atomically.

    The file is a model file (see :mod:`fastnn.io`) of format
    ``"fastnn-checkpoint"`` whose header also holds the training state as
    JSON and whose archive also holds the optimizer's state arrays under
    ``state/``, covered by the same checksum. No pickle; :func:`load_checkpoint`
    validates it exactly as :func:`load` validates a model file, and
    :func:`load` reads the model out of it. Written like :func:`save`: a
    crash leaves the previous checkpoint intact.

    Parameters
    ----------
    path : str or os.PathLike
    model : Module
    optimizer : fastnn.optim.Optimizer
    epoch : int
        Epochs completed (with ``step`` > 0: the epoch in progress).
    rng : numpy.random.Generator or dict, optional
        The shuffling generator, or its ``bit_generator.state``.
    history : fastnn.History or dict, optional
    scheduler : fastnn.optim.LRScheduler, optional
    step : int, default 0
        Optimizer steps already taken in epoch ``epoch`` (0: at an epoch boundary).
    extra : dict, optional
        More JSON values to keep (:func:`fastnn.fit` stores its settings and
        the running totals of the epoch in progress).
    arrays : dict of str to ndarray, optional
        More float arrays to keep (early stopping's best weights).

    Raises
    ------
    TypeError, ValueError, OSError
        As :func:`save`; also for values that are not JSON (NaN metrics).
    """
    from .optim import Optimizer

    if not isinstance(optimizer, Optimizer):
        raise TypeError(f"optimizer must be a fastnn.optim optimizer, got {type(optimizer).__name__}")
    epoch = _v.strict_int(epoch, "epoch", low=0)
    step = _v.strict_int(step, "step", low=0)
    opt = optimizer.state_dict()
    states = {}
    for name, values in opt.pop("state").items():
        for i, a in enumerate(values):
            states[f"optimizer/{name}/{i}"] = a
    opt["state"] = {name: len(a) for name, a in optimizer.state.items()}
    for name, a in (arrays or {}).items():
        states[f"arrays/{name}"] = np.ascontiguousarray(a)
    if history is not None and not isinstance(history, dict):
        history = {
            "history": history.history,
            "lr": history.lr,
            "stopped_early": history.stopped_early,
            "stopped_nonfinite": history.stopped_nonfinite,
            "best_epoch": history.best_epoch,
        }
    info = {
        "epoch": epoch,
        "step": step,
        "rng": _rng_state(rng),
        "history": history,
        "optimizer": opt,
        "scheduler": None if scheduler is None else scheduler.state_dict(),
        "extra": extra,
    }
    _write(path, *_model_arrays(model, CHECKPOINT_FORMAT, info, states))


def load_checkpoint(
    path: str | os.PathLike[str],
    model: Module | None = None,
    optimizer: Any = None,
    scheduler: Any = None,
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` (or by ``fit(..., checkpoint=...)``).

    The file is validated as :func:`load` validates a model file, the
    optimizer arrays included, before anything is restored.

    Parameters
    ----------
    path : str or os.PathLike
    model : Module, optional
        Receives the saved weights in place; it must have exactly the saved
        parameters (names, shapes, dtypes). Without it a new model is built.
    optimizer : fastnn.optim.Optimizer, optional
        Restored with ``load_state_dict``.
    scheduler : fastnn.optim.LRScheduler, optional
        Restored with ``load_state_dict``.
    max_bytes : int, default 4 GiB

    Returns
    -------
    dict
        ``model``, ``epoch``, ``step``, ``rng`` (a ``bit_generator.state`` or
        None), ``history``, ``optimizer`` (a state_dict), ``scheduler``, ``extra``
        and ``arrays``.

    Raises
    ------
    ModelFileError
        Anything wrong with the file, a model file that is not a checkpoint,
        or a ``model``/``optimizer`` that does not match it.
    FileNotFoundError
    """
    max_bytes = _v.strict_int(max_bytes, "max_bytes", low=0)
    shown, (saved, info, states) = _load_path(path, max_bytes, False, checkpoint=True)
    try:
        keys = ("epoch", "step", "rng", "history", "optimizer", "scheduler", "extra")
        if set(info) != set(keys):
            raise ValueError(f"its training state has keys {_clip(sorted(info), 200)}, expected {list(keys)}")
        opt = dict(info["optimizer"]) if isinstance(info["optimizer"], dict) else {}
        counts = opt.get("state")
        if not isinstance(counts, dict) or any(type(c) is not int or c < 0 for c in counts.values()):
            raise ValueError("its optimizer state is malformed")
        opt["state"] = {
            name: [states.pop(f"optimizer/{name}/{i}", None) for i in range(c)] for name, c in counts.items()
        }
        more = {k[len("arrays/") :]: states.pop(k) for k in list(states) if k.startswith("arrays/")}
        if states or any(a is None for arrays in opt["state"].values() for a in arrays):
            raise ValueError("its optimizer arrays do not match its optimizer state")
        for key in ("epoch", "step"):
            if type(info[key]) is not int or info[key] < 0:
                raise ValueError(f"its {key} is not a non-negative integer")
        if model is not None:
            own, theirs = model.state_dict(), saved.state_dict()
            if [(k, v.shape, v.dtype) for k, v in own.items()] != [(k, v.shape, v.dtype) for k, v in theirs.items()]:
                raise ValueError("its parameters do not match the model's (names, shapes or dtypes)")
            for k, p in model.named_parameters():
                p.data[...] = theirs[k]
            saved = model
        if optimizer is not None:
            optimizer.load_state_dict(opt)
        if scheduler is not None:
            if info["scheduler"] is None:
                raise ValueError("it holds no learning-rate schedule")
            scheduler.load_state_dict(info["scheduler"])
    except (ValueError, TypeError) as exc:
        raise ModelFileError(f"{shown}: {exc}") from None
    return {
        "model": saved,
        "epoch": info["epoch"],
        "step": info["step"],
        "rng": info["rng"],
        "history": info["history"],
        "optimizer": opt,
        "scheduler": info["scheduler"],
        "extra": info["extra"],
        "arrays": more,
    }
