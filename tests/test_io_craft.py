"""Model files made by hand: every byte of the zip, the .npy and the JSON headers under the test's control.

The hostile-file and fuzz tests build their files here, so that each differs
from a valid file in exactly the intended way; the checksums (each member's
CRC-32, the header's sha256) are recomputed unless a test overrides them, so
that a checksum never hides the deeper check a file is meant to reach. The
tests at the bottom check the tools themselves: untouched, they write files
that ``fastnn.load`` reads back exactly.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import struct
import zlib

import numpy as np

import fastnn
from fastnn import nn

HEADER = "__fastnn__.npy"


def npy(array=None, *, descr=None, shape=None, data=None, fortran=False, text=None, version=1, length=None):
    """The bytes of a .npy file; each part may be given instead of taken from ``array``.

    ``text`` replaces the header dict's text, ``length`` the header length field.
    """
    if array is not None:
        array = np.ascontiguousarray(array)
        descr = array.dtype.str if descr is None else descr
        shape = array.shape if shape is None else shape
        data = array.tobytes() if data is None else data
    if text is None:
        text = f"{{'descr': {descr!r}, 'fortran_order': {fortran}, 'shape': {tuple(shape)!r}, }}"
    raw = text.encode("latin-1") if isinstance(text, str) else text
    size_field = 2 if version == 1 else 4
    pad = -(8 + size_field + len(raw) + 1) % 64
    raw = raw + b" " * pad + b"\n"
    n = len(raw) if length is None else length
    return b"\x93NUMPY" + bytes([version, 0]) + n.to_bytes(size_field, "little") + raw + (data or b"")


def deflate(data: bytes, level: int = 6) -> bytes:
    c = zlib.compressobj(level, zlib.DEFLATED, -15)
    return c.compress(data) + c.flush()


def zeros_stream(prefix: bytes, n_mib: int) -> tuple[bytes, int]:
    """A deflate stream of ``prefix`` then ``n_mib`` MiB of zeros, made in microseconds: ``(stream, crc32)``.

    Each 1 MiB block is compressed once after a full flush (no back-references
    across it), so the blocks can be repeated.
    """
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    head = c.compress(prefix) + c.flush(zlib.Z_FULL_FLUSH)
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = c.compress(bytes(1 << 20)) + c.flush(zlib.Z_FULL_FLUSH)
    crc, zero = zlib.crc32(prefix), bytes(1 << 20)
    for _ in range(n_mib):
        crc = zlib.crc32(zero, crc)
    return head + block * n_mib + b"\x03\x00", crc  # 0x03 0x00: an empty final block


@dataclasses.dataclass
class Member:
    """One zip member; the ``None`` fields are computed from ``data``."""

    name: str | bytes
    data: bytes  # the unpacked bytes
    method: int = 0
    packed: bytes | None = None  # what is stored in the file (default: data, deflated if method 8)
    crc: int | None = None
    usize: int | None = None
    csize: int | None = None
    flags: int = 0
    local_name: bytes | None = None
    offset_shift: int = 0  # added to the offset the directory gives
    zip64: bytes | bool = False  # sizes and offset in a zip64 extra field (bytes: that field, as given)


def zip_bytes(members, *, count=None, cd_offset_shift=0, comment=b""):
    """A zip archive of ``members`` with the layout np.savez writes (local headers, data, directory)."""
    out, directory = bytearray(), bytearray()
    for m in members:
        name = m.name.encode() if isinstance(m.name, str) else m.name
        packed = m.packed if m.packed is not None else (deflate(m.data) if m.method == 8 else m.data)
        crc = zlib.crc32(m.data) if m.crc is None else m.crc
        usize = len(m.data) if m.usize is None else m.usize
        csize = len(packed) if m.csize is None else m.csize
        local = m.local_name if m.local_name is not None else name
        offset = len(out)
        out += (
            struct.pack(
                "<4sHHHHHIIIHH",
                b"PK\x03\x04",
                20,
                m.flags,
                m.method,
                0,
                0x21,
                crc,
                csize & 0xFFFFFFFF,
                usize & 0xFFFFFFFF,
                len(local),
                0,
            )
            + local
            + packed
        )
        fields = [usize & 0xFFFFFFFF, csize & 0xFFFFFFFF, (offset + m.offset_shift) & 0xFFFFFFFF]
        extra = b""
        if m.zip64 is not False:
            extra = (
                m.zip64
                if isinstance(m.zip64, bytes)
                else struct.pack("<HHQQQ", 1, 24, usize, csize, offset + m.offset_shift)
            )
            fields = [0xFFFFFFFF] * 3
        directory += (
            struct.pack(
                "<4sHHHHHHIIIHHHHHII",
                b"PK\x01\x02",
                45,
                45,
                m.flags,
                m.method,
                0,
                0x21,
                crc,
                fields[1],
                fields[0],
                len(name),
                len(extra),
                0,
                0,
                0,
                0,
                fields[2],
            )
            + name
            + extra
        )
    n = len(members) if count is None else count
    end = (
        struct.pack(
            "<4sHHHHIIH",
            b"PK\x05\x06",
            0,
            0,
            n & 0xFFFF,
            n & 0xFFFF,
            len(directory),
            len(out) + cd_offset_shift,
            len(comment),
        )
        + comment
    )
    return bytes(out + directory + end)


def digest(arrays) -> str:
    """The header's sha256 of ``[(name, array)]``, as fastnn.save computes it."""
    h = hashlib.sha256()
    for name, a in arrays:
        h.update(name.encode() + b"\0" + a.dtype.str.encode() + repr(tuple(a.shape)).encode())
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def parts(model):
    """``(header dict, [(name, array)])`` as fastnn.save would write them."""
    state = list(model.state_dict().items())
    header = {
        "format": "fastnn-model",
        "version": 1,
        "architecture": fastnn.io._architecture(model, [0]),
        "params": {k: {"shape": list(v.shape), "dtype": v.dtype.str} for k, v in state},
        "sha256": digest(state),
    }
    return header, state


def header_member(header, *, raw=None) -> Member:
    text = json.dumps(header).encode() if raw is None else raw
    return Member(HEADER, npy(np.frombuffer(text, np.uint8)))


def model_file(header, arrays, *, method=0, resum=True, **zip_kw) -> bytes:
    """A model file from parts; ``resum`` recomputes the header's sha256 from ``arrays``."""
    if resum and isinstance(header, dict) and "sha256" in header:
        header = dict(header, sha256=digest(arrays))
    members = [header_member(header)] + [Member(f"param/{k}.npy", npy(v), method=method) for k, v in arrays]
    return zip_bytes(members, **zip_kw)


def small_model():
    fastnn.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3, dtype=np.float32), nn.LeakyReLU(0.2))


# -- the tools themselves ------------------------------------------------------------


def _same(a, b):
    assert repr(a) == repr(b)
    for (k1, x), (k2, y) in zip(a.state_dict().items(), b.state_dict().items()):
        assert k1 == k2 and x.dtype == y.dtype
        np.testing.assert_array_equal(x, y)


def test_crafted_files_load_exactly(tmp_path):
    model = small_model()
    header, arrays = parts(model)
    for method in (0, 8):
        path = tmp_path / f"m{method}.fnn"
        path.write_bytes(model_file(header, arrays, method=method))
        _same(fastnn.load(path), model)


def test_zip64_directory_entries_load(tmp_path):
    model = small_model()
    header, arrays = parts(model)
    members = [header_member(dict(header, sha256=digest(arrays)))] + [
        Member(f"param/{k}.npy", npy(v), zip64=True) for k, v in arrays
    ]
    (tmp_path / "z64.fnn").write_bytes(zip_bytes(members))
    _same(fastnn.load(tmp_path / "z64.fnn"), model)


def test_crafted_npy_equals_numpy(tmp_path):
    a = np.arange(12, dtype=np.float32).reshape(3, 4)
    np.save(tmp_path / "a.npy", a)
    assert npy(a) == (tmp_path / "a.npy").read_bytes()


def test_zeros_stream_inflates_to_what_it_says():
    stream, crc = zeros_stream(b"head", 3)
    out = zlib.decompressobj(-15).decompress(stream)
    assert out == b"head" + bytes(3 << 20) and zlib.crc32(out) == crc and len(stream) < 10_000


def test_model_file_matches_save_byte_for_byte_in_content(tmp_path):
    model = small_model()
    fastnn.save(model, tmp_path / "saved.fnn")
    header, arrays = parts(model)
    with np.load(tmp_path / "saved.fnn", allow_pickle=False) as z:
        assert json.loads(z["__fastnn__"].tobytes()) == header
        assert [k for k in z.files] == ["__fastnn__"] + [f"param/{k}" for k, _ in arrays]
