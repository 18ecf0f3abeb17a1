"""Minimal safetensors reader/writer (struct + json + numpy; torch only for dtypes).

Used by tests/golden/reference.py to write the golden fixtures and to read them back.
Follows the format as documented in ../shared/research/hf-conventions.md, section c.1:
u64 little-endian header length N, N bytes of JSON (padded with spaces so that N is a
multiple of 8), then the byte buffer; offsets relative to the buffer, END exclusive;
tensors sorted like the reference writer does (safetensors/src/tensor.rs `prepare`): by the
Dtype enum in descending order, then by name. The enum is declared in increasing size
(BOOL, U8, I8, F8_*, I16, U16, F16, BF16, I32, U32, F32, F64, I64, U64), so this is "descending
dtype size, then name", with ties inside a size broken by enum order (I64 before F64, F32 before
I32, BF16 before F16).
"""

import json
import os
import struct

import numpy as np
import torch

# name -> (torch dtype, bytes per element, little-endian numpy dtype of the raw bytes)
DTYPES = {
    "F64": (torch.float64, 8, "<f8"),
    "I64": (torch.int64, 8, "<i8"),
    "F32": (torch.float32, 4, "<f4"),
    "I32": (torch.int32, 4, "<i4"),
    "F16": (torch.float16, 2, "<f2"),
    "BF16": (torch.bfloat16, 2, "<u2"),  # raw bits; reinterpreted through torch
    "I8": (torch.int8, 1, "<i1"),
    "U8": (torch.uint8, 1, "<u1"),
    "BOOL": (torch.bool, 1, "<u1"),
}
TORCH_TO_NAME = {v[0]: k for k, v in DTYPES.items()}
# Declaration order of safetensors' Dtype enum (subset we support); the writer sorts on it.
ENUM_RANK = {n: i for i, n in enumerate(["BOOL", "U8", "I8", "I16", "U16", "F16", "BF16", "I32",
                                         "U32", "F32", "F64", "I64", "U64"])}


def writer_order(tensors):
    """Names in the order the reference writer lays the tensors out."""
    return sorted(tensors, key=lambda n: (-ENUM_RANK[dtype_name(tensors[n])], n))

MAX_HEADER = 100_000_000


class SafetensorsError(ValueError):
    pass


def dtype_name(t):
    try:
        return TORCH_TO_NAME[t.dtype]
    except KeyError:
        raise SafetensorsError("unsupported torch dtype %s" % t.dtype) from None


def _raw_bytes(t):
    t = t.detach().cpu().contiguous()
    name = dtype_name(t)
    if name == "BF16":
        arr = t.view(torch.int16).numpy().view(np.uint16)
    elif name == "BOOL":
        arr = t.numpy().astype(np.uint8)
    else:
        arr = t.numpy()
    return np.ascontiguousarray(arr.astype(DTYPES[name][2], copy=False)).tobytes()


def serialize(tensors, metadata=None):
    """Return the bytes of a safetensors file holding `tensors` (name -> torch tensor)."""
    if "__metadata__" in tensors:
        raise SafetensorsError("'__metadata__' is not a valid tensor name")
    order = writer_order(tensors)
    header = {}
    if metadata is not None:
        for k, v in metadata.items():
            if not isinstance(k, str) or not isinstance(v, str):
                raise SafetensorsError("__metadata__ must map strings to strings")
        header["__metadata__"] = dict(metadata)
    blobs = []
    offset = 0
    for name in order:
        t = tensors[name]
        blob = _raw_bytes(t)
        header[name] = {
            "dtype": dtype_name(t),
            "shape": [int(d) for d in t.shape],
            "data_offsets": [offset, offset + len(blob)],
        }
        offset += len(blob)
        blobs.append(blob)
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * ((8 - len(text) % 8) % 8)
    return struct.pack("<Q", len(text)) + text + b"".join(blobs)


def save(path, tensors, metadata=None):
    """Write atomically (temp file + rename) so an interrupted run leaves no half file."""
    data = serialize(tensors, metadata)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)
    return len(data)


def parse(data, what="<bytes>"):
    """Parse safetensors bytes -> (dict name -> torch tensor, metadata or None, info).

    Validates what the reference reader validates: header starts with '{', ranges are
    contiguous from 0 with no holes/overlaps, sizes match dtype*shape, the buffer is fully
    indexed. `info` gives the header length and the tensor order as stored.
    """
    if len(data) < 8:
        raise SafetensorsError("%s: file shorter than the 8-byte header length" % what)
    (n,) = struct.unpack_from("<Q", data, 0)
    if n > MAX_HEADER or 8 + n > len(data):
        raise SafetensorsError("%s: header length %d exceeds file size %d" % (what, n, len(data)))
    raw = bytes(data[8:8 + n])
    if not raw.startswith(b"{"):
        raise SafetensorsError("%s: header does not start with '{'" % what)
    header = json.loads(raw.decode("utf-8"))
    metadata = header.pop("__metadata__", None)
    if metadata is not None and not all(isinstance(k, str) and isinstance(v, str)
                                        for k, v in metadata.items()):
        raise SafetensorsError("%s: __metadata__ values must be strings" % what)
    buf = memoryview(data)[8 + n:]
    entries = sorted(header.items(), key=lambda kv: tuple(kv[1]["data_offsets"]))
    expect = 0
    out = {}
    for name, e in entries:
        if e["dtype"] not in DTYPES:
            raise SafetensorsError("%s: tensor '%s' has unsupported dtype %s"
                                   % (what, name, e["dtype"]))
        tdtype, size, npdt = DTYPES[e["dtype"]]
        shape = [int(d) for d in e["shape"]]
        begin, end = e["data_offsets"]
        if begin != expect:
            raise SafetensorsError("%s: tensor '%s' starts at %d, expected %d (hole or overlap)"
                                   % (what, name, begin, expect))
        if end > len(buf):
            raise SafetensorsError("%s: tensor '%s' ends at %d, past the %d-byte buffer"
                                   % (what, name, end, len(buf)))
        nelem = int(np.prod(shape)) if shape else 1
        if end - begin != nelem * size:
            raise SafetensorsError("%s: tensor '%s' spans %d bytes, dtype*shape needs %d"
                                   % (what, name, end - begin, nelem * size))
        arr = np.frombuffer(buf[begin:end], dtype=npdt).reshape(shape).copy()
        if e["dtype"] == "BF16":
            t = torch.from_numpy(arr.view(np.int16)).view(torch.bfloat16)
        elif e["dtype"] == "BOOL":
            t = torch.from_numpy(arr.astype(np.bool_))
        else:
            t = torch.from_numpy(arr.astype(npdt[1:], copy=False))  # native byte order
        out[name] = t
        expect = end
    if expect != len(buf):
        raise SafetensorsError("%s: buffer has %d bytes, tensors cover %d"
                               % (what, len(buf), expect))
    info = {"header_len": n, "order": [name for name, _ in entries]}
    return out, metadata, info


def load(path):
    with open(path, "rb") as f:
        data = f.read()
    return parse(data, path)


def check_canonical_layout(path):
    """Raise unless `path` is laid out like the reference writer's output (our own files)."""
    tensors, metadata, info = load(path)
    if info["header_len"] % 8:
        raise SafetensorsError("%s: header length %d not a multiple of 8"
                               % (path, info["header_len"]))
    if info["order"] != writer_order(tensors):
        raise SafetensorsError("%s: tensors not in the reference writer's order" % path)
    if not metadata or metadata.get("format") != "pt":
        raise SafetensorsError("%s: __metadata__ lacks format=pt" % path)
    return tensors, metadata
