"""Reads a CTranslate2 `model.bin` with NumPy alone, so the PyTorch backend needs no CTranslate2.

The models we ship are CTranslate2 directories. On a machine whose CUDA the CTranslate2 wheels
cannot use, the PyTorch backend still loads them: this reader walks the file's layout and hands
back named arrays, dequantized to floating point where asked.

Layout (little endian; strings are a u16 byte count, then the bytes, NUL-terminated):

    u32 binary version (1..6)
    version >= 2: string spec name (e.g. "WhisperSpec"), u32 spec revision
    u32 variable count, then per variable:
        string name, u8 rank, u32 dims[rank],
        version >= 4: u8 dtype id, u32 byte count     (ids: float32, int8, int16, int32,
                                                        float16, bfloat16 = 0..5)
        version <= 3: u8 item size, u32 item count    (size 4: float32, 2: int16, 1: int8)
        the bytes
    version >= 3: u32 alias count, then (string alias, string target) pairs

Quantized weights `x` (int8, int16) come with `x_scale`: the stored value is `x * scale`,
with one scale per output row for int8 and one per tensor for int16. An alias also aliases
its target's scale.

`write_ct2` writes the same format (binary version 6) and `quantize_int8` makes CTranslate2's
int8 copy of a model (a quarter of float32's size: what fits a 64 MiB transfer to a GPU box).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from streamscribe.errors import ModelNotFoundError

__all__ = ["DTYPE_NAMES", "CT2File", "CT2Variable", "quantize_int8", "read_ct2", "write_ct2"]

MAX_BINARY_VERSION = 6
DTYPE_NAMES = ("float32", "int8", "int16", "int32", "float16", "bfloat16")
_NUMPY = {
    "float32": np.dtype("<f4"),
    "int8": np.dtype("i1"),
    "int16": np.dtype("<i2"),
    "int32": np.dtype("<i4"),
    "float16": np.dtype("<f2"),
    "bfloat16": np.dtype("<u2"),  # NumPy has no bfloat16: kept as raw bits, widened on demand
}
_OLD_INT16_SCALE = 1000.0
_OLD_ITEM_SIZES = {4: "float32", 2: "int16", 1: "int8"}


@dataclass(frozen=True)
class CT2Variable:
    """One stored tensor: its name, shape, CTranslate2 dtype name and raw values."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    raw: np.ndarray  # shaped; bfloat16 as uint16 bits

    @property
    def is_scalar(self) -> bool:
        return self.shape == ()


@dataclass
class CT2File:
    """The parsed contents of a model.bin."""

    binary_version: int
    spec: str
    revision: int
    variables: dict[str, CT2Variable]
    aliases: dict[str, str] = field(default_factory=dict)

    def resolve(self, name: str) -> str:
        """The stored variable `name` refers to (following aliases); KeyError if none."""
        seen: set[str] = set()
        while name not in self.variables:
            if name in seen or name not in self.aliases:
                raise KeyError(name)
            seen.add(name)
            name = self.aliases[name]
        return name

    def __contains__(self, name: object) -> bool:
        try:
            self.resolve(str(name))
        except KeyError:
            return False
        return True

    def names(self) -> list[str]:
        """Every name that resolves: stored variables and aliases."""
        return sorted({*self.variables, *(a for a in self.aliases if a in self)})

    def variable(self, name: str) -> CT2Variable:
        return self.variables[self.resolve(name)]

    def scalar(self, name: str) -> int | float:
        return self.variable(name).raw.reshape(-1)[0].item()

    def array(self, name: str, dtype: np.dtype | str = np.float32) -> np.ndarray:
        """The variable as `dtype`, int8/int16 weights divided by their stored scale."""
        resolved = self.resolve(name)
        var = self.variables[resolved]
        values = _widen(var)
        quantized = var.dtype in ("int8", "int16") and not var.is_scalar
        if quantized and np.dtype(dtype).kind == "f":
            scale = self._scale_for(name, resolved).reshape(-1)
            if scale.size == 1:
                values = values / scale[0]
            else:  # one scale per output row
                values = values / scale.reshape((-1,) + (1,) * (values.ndim - 1))
        return np.ascontiguousarray(values.astype(dtype, copy=False))

    def _scale_for(self, name: str, resolved: str) -> np.ndarray:
        for candidate in (name + "_scale", resolved + "_scale"):
            if candidate in self:
                return _widen(self.variable(candidate)).astype(np.float32)
        if self.variables[resolved].dtype == "int8":
            raise ModelNotFoundError(
                f"model.bin stores {name} as int8 without {name}_scale; the file is damaged or "
                "not a CTranslate2 model: convert the model again"
            )
        return np.array([_OLD_INT16_SCALE], np.float32)  # int16 models before saved scales


def _widen(var: CT2Variable) -> np.ndarray:
    if var.dtype == "bfloat16":
        return (var.raw.astype(np.uint32) << 16).view(np.float32)
    if var.dtype == "float16":
        return var.raw.astype(np.float32)
    return var.raw


class _Cursor:
    def __init__(self, data: memoryview, path: Path) -> None:
        self.data = data
        self.pos = 0
        self.path = path

    def take(self, n: int, what: str) -> memoryview:
        if self.pos + n > len(self.data):
            raise ModelNotFoundError(
                f"{self.path} is truncated: {what} needs {n} bytes at offset {self.pos} but the "
                f"file has {len(self.data)}; download or assemble the model again"
            )
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def unpack(self, fmt: str, what: str) -> tuple:
        size = struct.calcsize("<" + fmt)
        return struct.unpack("<" + fmt, self.take(size, what))

    def string(self, what: str) -> str:
        (n,) = self.unpack("H", what)
        raw = bytes(self.take(n, what))
        return raw.split(b"\0", 1)[0].decode("utf-8")


def read_ct2(path: str | Path) -> CT2File:
    """Parse `path` (a model.bin, or the directory holding one)."""
    path = Path(path)
    if path.is_dir():
        path = path / "model.bin"
    if not path.is_file():
        raise ModelNotFoundError(f"{path} does not exist: pass a CTranslate2 model directory")
    data = memoryview(path.read_bytes())
    cur = _Cursor(data, path)
    (version,) = cur.unpack("I", "the binary version")
    if not 1 <= version <= MAX_BINARY_VERSION:
        raise ModelNotFoundError(
            f"{path} is not a CTranslate2 model.bin this reader knows (binary version {version}, "
            f"known 1..{MAX_BINARY_VERSION}); convert the model with ctranslate2 4.x"
        )
    spec, revision = "", 1
    if version >= 2:
        spec = cur.string("the spec name")
        (revision,) = cur.unpack("I", "the spec revision")
    (count,) = cur.unpack("I", "the variable count")
    variables: dict[str, CT2Variable] = {}
    for _ in range(count):
        name = cur.string("a variable name")
        (rank,) = cur.unpack("B", f"the rank of {name}")
        shape = cur.unpack("I" * rank, f"the shape of {name}") if rank else ()
        if version >= 4:
            type_id, nbytes = cur.unpack("BI", f"the dtype of {name}")
            if type_id >= len(DTYPE_NAMES):
                raise ModelNotFoundError(f"{path}: {name} has unknown dtype id {type_id}")
            dtype = DTYPE_NAMES[type_id]
        else:
            item_size, items = cur.unpack("BI", f"the item size of {name}")
            if item_size not in _OLD_ITEM_SIZES:
                raise ModelNotFoundError(f"{path}: {name} has unknown item size {item_size}")
            dtype = _OLD_ITEM_SIZES[item_size]
            nbytes = items * item_size
        np_dtype = _NUMPY[dtype]
        expected = int(np.prod(shape, dtype=np.int64)) * np_dtype.itemsize
        if nbytes != expected:
            raise ModelNotFoundError(
                f"{path}: {name} holds {nbytes} bytes but shape {shape} of {dtype} needs "
                f"{expected}; the file is damaged"
            )
        raw = np.frombuffer(cur.take(nbytes, f"the values of {name}"), dtype=np_dtype)
        variables[name] = CT2Variable(name, tuple(shape), dtype, raw.reshape(shape))
    aliases: dict[str, str] = {}
    if version >= 3:
        (n_alias,) = cur.unpack("I", "the alias count")
        for _ in range(n_alias):
            alias = cur.string("an alias")
            aliases[alias] = cur.string(f"the target of {alias}")
    return CT2File(version, spec, revision, variables, aliases)


def _pack_string(text: str) -> bytes:
    raw = text.encode("utf-8") + b"\0"
    return struct.pack("<H", len(raw)) + raw


def write_ct2(path: str | Path, model: CT2File) -> None:
    """Write `model` as a binary-version-6 model.bin (variables sorted by name, as CTranslate2
    writes them)."""
    parts = [struct.pack("<I", MAX_BINARY_VERSION), _pack_string(model.spec)]
    parts.append(struct.pack("<II", model.revision, len(model.variables)))
    for name in sorted(model.variables):
        var = model.variables[name]
        raw = np.ascontiguousarray(var.raw, dtype=_NUMPY[var.dtype])
        parts.append(_pack_string(name))
        parts.append(
            struct.pack("<B", len(var.shape)) + struct.pack("<" + "I" * len(var.shape), *var.shape)
        )
        parts.append(struct.pack("<BI", DTYPE_NAMES.index(var.dtype), raw.nbytes))
        parts.append(raw.tobytes())
    parts.append(struct.pack("<I", len(model.aliases)))
    for alias, target in sorted(model.aliases.items()):
        parts.append(_pack_string(alias) + _pack_string(target))
    Path(path).write_bytes(b"".join(parts))


def quantize_int8(model: CT2File, skip: tuple[str, ...] = ("conv",)) -> CT2File:
    """CTranslate2's int8 quantization: every matrix named `*weight` (but those whose name holds
    one of `skip`) becomes int8 with a float32 `*_scale` per row (127 / the row's largest
    magnitude); other floating variables become float16; scalars stay."""
    out: dict[str, CT2Variable] = {}
    for name, var in model.variables.items():
        if var.is_scalar or var.dtype not in ("float32", "float16", "bfloat16"):
            out[name] = var
            continue
        values = _widen(var).astype(np.float32)
        if name.endswith("weight") and values.ndim >= 2 and not any(s in name for s in skip):
            flat = values.reshape(values.shape[0], -1)
            amax = np.abs(flat).max(axis=1)
            amax[amax == 0] = 127.0
            scale = (127.0 / amax).astype(np.float32)
            q = np.rint(flat * scale[:, None]).astype(np.int8).reshape(values.shape)
            out[name] = CT2Variable(name, var.shape, "int8", q)
            out[name + "_scale"] = CT2Variable(name + "_scale", scale.shape, "float32", scale)
        else:
            f16 = values.astype(np.float16)
            out[name] = CT2Variable(name, var.shape, "float16", f16)
    return CT2File(model.binary_version, model.spec, model.revision, out, dict(model.aliases))
