"""The dashboard at `/` in a real Chromium (Playwright), against a real server and real speech.

Chromium's fake microphone plays a WAV of real speech (`--use-file-for-fake-audio-capture`), so
pressing Record streams it through the page's AudioWorklet and a temporary token to `/v3/ws`.
The tests press Record, watch turns appear, press Stop and see "finishing…" until the last turn,
compare the transcript with the reference, then find the session in History with its recording
(seek by word, highlight, search, export, delete); upload a file and follow its progress; get the
server's refusals (bad key, server at capacity) as plain words with the fix; and check a phone
sized screen and the keyboard. Screenshots of the live view and History go to docs/dashboard.png.

Skipped, with the reason, only where /usr/bin/chromium is absent (CI installs it with apt-get).
"""

from __future__ import annotations

import base64
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from conftest import RunningServer, start_server
from playwright.sync_api import Browser, Page, expect, sync_playwright
from speech import Speech, joined, speech_or_skip, wer

from streamscribe.audio.wav import WavWriter

CHROMIUM = Path("/usr/bin/chromium")
DOCS = Path(__file__).resolve().parents[2] / "docs"
WIDE = {"width": 1000, "height": 760}

if not CHROMIUM.exists():
    pytest.skip(
        "no /usr/bin/chromium: install Debian's chromium (apt-get install chromium) to run the "
        "browser tests",
        allow_module_level=True,
    )


# ------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def speech(tmp_path_factory: pytest.TempPathFactory) -> tuple[Speech, Path]:
    """Three real utterances with pauses, as the WAV the fake microphone plays once."""
    spoken = joined(speech_or_skip(3))
    path = tmp_path_factory.mktemp("fake-mic") / "speech.wav"
    writer = WavWriter(path, 16000, 1)
    writer.write(spoken.audio)
    writer.close()
    return spoken, path


@pytest.fixture(scope="module")
def browser(speech: tuple[Speech, Path]) -> Iterator[Browser]:
    with sync_playwright() as p:
        chromium = p.chromium.launch(
            executable_path=str(CHROMIUM),
            args=[
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--use-fake-ui-for-media-stream",
                "--use-fake-device-for-media-stream",
                f"--use-file-for-fake-audio-capture={speech[1]}%noloop",
            ],
        )
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def open_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    server = start_server(tmp_path_factory.mktemp("dashboard-open"))
    yield server
    stop(server)


def stop(server: RunningServer) -> None:
    server.process.terminate()
    try:
        server.process.wait(30)
    except subprocess.TimeoutExpired:
        server.process.kill()


def open_page(browser: Browser, server: RunningServer, **context) -> Page:
    page = browser.new_context(viewport=WIDE, accept_downloads=True, **context).new_page()
    page.errors = []  # type: ignore[attr-defined]
    page.on("pageerror", lambda e: page.errors.append(str(e)))  # type: ignore[attr-defined]
    page.sockets = []  # type: ignore[attr-defined]
    page.on("websocket", lambda ws: page.sockets.append(ws.url))  # type: ignore[attr-defined]
    page.goto(server.http + "/")
    expect(page.locator("body")).to_have_attribute("data-ready", "true")
    return page


def words_text(page: Page, container: str) -> str:
    return " ".join(page.locator(f"{container} .words").all_inner_texts())


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the live view and History screenshots go before they are joined into docs/."""
    return tmp_path_factory.mktemp("shots")


@dataclass
class Recorded:
    page: Page
    text: str
    session_id: str
    saw_tentative: bool
    readouts: list[tuple[str, str]]
    statuses: list[str]


@pytest.fixture(scope="module")
def recorded(browser: Browser, open_server: RunningServer, speech, shots: Path) -> Recorded:
    """Record the fake microphone's speech, press Stop after it, wait for the session to end."""
    spoken, _ = speech
    page = open_page(browser, open_server)
    begins: list[str] = []
    page.on(
        "websocket",
        lambda ws: ws.on(
            "framereceived",
            lambda frame: begins.extend(re.findall(r'"type": ?"Begin", ?"id": ?"([^"]+)"', frame)),
        ),
    )
    page.click("#record")
    status = page.locator("#live-status")
    expect(status).to_contain_text("Recording", timeout=20000)
    begun = time.monotonic()
    saw_tentative = False
    readouts: list[tuple[str, str]] = []
    shot = shots / "live.png"
    while time.monotonic() - begun < spoken.seconds + 0.5:
        tentative = page.locator("#live-turns .w.tentative").count() > 0
        saw_tentative |= tentative
        if tentative and not shot.exists() and page.locator(".turn.final").count() >= 2:
            page.screenshot(path=str(shot))  # mid-sentence: final and tentative words
        readouts.append((page.inner_text("#level"), page.inner_text("#latency")))
        page.wait_for_timeout(200)
    # every status the page shows from Stop on (sampling it after the click would miss a
    # "finishing…" the server's flush ends within a few milliseconds)
    page.evaluate(
        """() => {
            const el = document.querySelector('#live-status');
            window.__statuses = [];
            new MutationObserver(() => window.__statuses.push(el.innerText)).observe(
                el, {childList: true, characterData: true, subtree: true});
        }"""
    )
    page.click("#record")
    record = page.locator("#record")
    expect(record).to_have_attribute("aria-pressed", "false", timeout=30000)
    expect(record).to_be_enabled()
    statuses = [s for s in page.evaluate("window.__statuses") if s.strip()]
    statuses.append(status.inner_text())
    if not shot.exists():
        page.screenshot(path=str(shot))
    assert len(begins) == 1, begins
    return Recorded(
        page, words_text(page, "#live-turns"), begins[0], saw_tentative, readouts, statuses
    )


def join_screenshots(browser: Browser, parts: list[Path], out: Path) -> None:
    """One PNG of the screenshots side by side (for README), drawn by the browser itself."""
    images = "".join(
        f'<img style="flex:none;width:{WIDE["width"]}px;height:{WIDE["height"]}px" '
        f'src="data:image/png;base64,{base64.b64encode(p.read_bytes()).decode()}">'
        for p in parts
    )
    size = {"width": (WIDE["width"] + 8) * len(parts) + 8, "height": WIDE["height"] + 16}
    page = browser.new_page(viewport=size)
    page.set_content(
        "<body style='margin:0;background:#c9ccd6;display:flex;gap:8px;padding:8px'>"
        f"{images}</body>"
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(out))
    page.close()


# ------------------------------------------------------------------------------ live


def test_live_turns_appear_and_stop_keeps_the_last_one(recorded: Recorded, speech):
    spoken, _ = speech
    page = recorded.page
    # Stop shows "finishing…" while the last words are flushed, then "Finished"
    finishing = [i for i, s in enumerate(recorded.statuses) if s.startswith("finishing…")]
    assert finishing, recorded.statuses
    assert recorded.statuses[-1].startswith("Finished"), recorded.statuses
    assert not any(s.startswith("Finished") for s in recorded.statuses[: finishing[0]])
    assert recorded.saw_tentative, "no tentative word was ever shown while speaking"
    assert any(level.endswith("dB") for level, _ in recorded.readouts), recorded.readouts[:5]
    assert any(latency.endswith("ms") for _, latency in recorded.readouts), recorded.readouts[:5]
    finals = page.locator("#live-turns .turn.final")
    assert finals.count() >= 2, recorded.text
    assert page.locator("#live-turns .turn:not(.final)").count() == 0
    assert page.locator("#live-turns .w.tentative").count() == 0
    assert page.locator("#live-turns .turn-head time").first.inner_text() == "0:00"
    assert wer(spoken.text, recorded.text) <= 0.35, (spoken.text, recorded.text)
    # the key never travels in a URL: the socket carries a single-use token
    assert len(page.sockets) == 1 and "token=tk_" in page.sockets[0]  # type: ignore[attr-defined]
    assert "sample_rate=16000" in page.sockets[0]  # type: ignore[attr-defined]
    assert page.errors == []  # type: ignore[attr-defined]


def test_recorded_session_is_in_history_with_its_recording(
    recorded: Recorded, open_server: RunningServer, speech, browser: Browser, shots: Path
):
    spoken, _ = speech
    page = recorded.page
    page.click("#open-saved")
    expect(page.locator("#panel-history")).to_be_visible()
    current = page.locator("#history-items button[aria-current=true]")
    expect(current).to_have_attribute("data-session", recorded.session_id)
    player = page.locator("#player")
    expect(player).to_be_visible(timeout=10000)
    duration = 0.0
    for _ in range(50):
        duration = player.evaluate("a => a.duration") or 0.0
        if duration > 0:
            break
        page.wait_for_timeout(100)
    stored = httpx.get(f"{open_server.http}/v1/sessions/{recorded.session_id}", timeout=10).json()
    assert stored["has_recording"] and stored["end_reason"] == "terminated"
    # the recording holds all the audio the page sent: the speech and the moments around it
    assert abs(duration - stored["audio_seconds"]) < 0.2, (duration, stored["audio_seconds"])
    assert spoken.seconds - 0.5 <= duration <= spoken.seconds + 8, duration
    shown = words_text(page, "#detail-turns")
    assert wer(" ".join(t["text"] for t in stored["turns"]), shown) == 0.0
    assert wer(spoken.text, shown) <= 0.35, shown
    page.screenshot(path=str(shots / "history.png"))
    join_screenshots(browser, [shots / "live.png", shots / "history.png"], DOCS / "dashboard.png")


def test_clicking_a_word_seeks_and_highlights_it(recorded: Recorded):
    page = recorded.page
    word = page.locator("#detail-turns .turn").nth(1).locator(".w").nth(1)
    start_ms = int(word.get_attribute("data-start") or -1)
    end_ms = int(word.get_attribute("data-end") or -1)
    word.click()
    expect(word).to_have_class(re.compile(r"\bplaying\b"))
    page.locator("#player").evaluate("a => a.pause()")
    at = page.locator("#player").evaluate("a => a.currentTime") * 1000
    assert start_ms - 50 <= at <= end_ms + 600, (start_ms, end_ms, at)
    assert page.locator("#detail-turns .w.playing").count() == 1
    # a turn's time button seeks there too (the keyboard way in)
    seek = page.locator("#detail-turns .turn").nth(0).locator("button.seek")
    seek.focus()
    page.keyboard.press("Enter")
    page.locator("#player").evaluate("a => a.pause()")
    at = page.locator("#player").evaluate("a => a.currentTime") * 1000
    assert at < start_ms, (at, start_ms)


def test_history_search_and_export(recorded: Recorded, speech):
    spoken, _ = speech
    page = recorded.page
    word = max(recorded.text.split(), key=len).strip(".,?!;:")
    page.fill("#history-search", word)
    expect(page.locator("#history-count")).to_contain_text(f"containing “{word}”")
    expect(page.locator(f'#history-items [data-session="{recorded.session_id}"]')).to_be_visible()
    page.fill("#history-search", "zqxjvkw")
    expect(page.locator("#history-count")).to_have_text("No session contains “zqxjvkw”.")
    expect(page.locator("#history-items li")).to_have_count(0)
    page.fill("#history-search", "")
    expect(page.locator(f'#history-items [data-session="{recorded.session_id}"]')).to_be_visible()
    for fmt, check in (("txt", None), ("srt", "-->"), ("vtt", "WEBVTT"), ("json", '"words"')):
        with page.expect_download() as download:
            page.click(f'[data-export="{fmt}"]')
        body = Path(download.value.path()).read_text()
        assert download.value.suggested_filename == f"{recorded.session_id}.{fmt}"
        if check:
            assert check in body, body[:200]
        else:
            assert wer(spoken.text, body) <= 0.35, body


def test_delete_removes_the_session(recorded: Recorded, open_server: RunningServer):
    page = recorded.page
    page.click("#delete")
    expect(page.locator("#delete-confirm")).to_be_visible()
    page.click("#delete-no")
    expect(page.locator("#history-detail")).to_be_visible()
    page.click("#delete")
    page.click("#delete-yes")
    expect(page.locator("#history-detail")).to_be_hidden()
    expect(page.locator(f'#history-items [data-session="{recorded.session_id}"]')).to_have_count(0)
    r = httpx.get(f"{open_server.http}/v1/sessions/{recorded.session_id}", timeout=10)
    assert r.status_code == 404


# ------------------------------------------------------------------------------ upload


def test_upload_shows_progress_then_the_transcript(
    browser: Browser, open_server: RunningServer, speech
):
    spoken, path = speech
    page = open_page(browser, open_server)
    page.click("#tab-upload")
    page.set_input_files("#upload-file", str(path))
    seen: list[tuple[str, float, bool]] = []
    page.click("#upload-start")
    status = page.locator("#upload-status")
    bar = page.locator("#upload-progress")
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        seen.append((status.inner_text(), bar.evaluate("p => p.value"), bar.is_visible()))
        if seen[-1][0].startswith(("Done", "The file was not")):
            break
        page.wait_for_timeout(50)
    assert seen[-1][0].startswith("Done: speech.wav"), seen[-3:]
    assert any(s.startswith(("Uploading", "Reading", "Transcribing")) for s, _, _ in seen), seen
    values = [v for _, v, visible in seen if visible]
    assert values and values == sorted(values) and values[-1] == 1.0, values
    text = words_text(page, "#upload-turns")
    assert wer(spoken.text, text) <= 0.3, text
    page.click("#open-upload")
    expect(page.locator("#detail-title")).to_contain_text("speech.wav")
    expect(page.locator("#player")).to_be_visible(timeout=10000)
    assert wer(text, words_text(page, "#detail-turns")) == 0.0
    assert page.errors == []  # type: ignore[attr-defined]


# ------------------------------------------------------------------------------ refusals


def _cli(*args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "streamscribe", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "NO_COLOR": "1"},
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def _enter_key(page: Page, key: str) -> None:
    if not page.locator("#settings").is_visible():
        page.click("#open-settings")
    page.fill("#set-key", key)
    page.click("#settings-save")
    expect(page.locator("#settings")).to_be_hidden()


def test_refusals_are_plain_words_with_the_fix(
    browser: Browser, tmp_path_factory: pytest.TempPathFactory
):
    data = tmp_path_factory.mktemp("dashboard-keys")
    key = _cli("keys", "create", "desk", "--data-dir", str(data))
    server = start_server(data, "--max-sessions", "1")
    try:
        first = open_page(browser, server)
        # a server with keys: the page asks for one at once
        expect(first.locator("#settings")).to_be_visible()
        expect(first.locator("#settings-note")).to_contain_text("needs an API key")
        _enter_key(first, "sk_not_a_real_key")
        first.click("#record")
        error = first.locator("#error")
        expect(error).to_be_visible()
        expect(error).to_contain_text("The server refused this API key.")
        expect(error).to_contain_text("streamscribe keys create")
        assert first.sockets == []  # type: ignore[attr-defined]  # refused before any socket
        expect(first.locator("#record")).to_have_attribute("aria-pressed", "false")

        _enter_key(first, key)
        first.click("#record")
        expect(first.locator("#live-status")).to_contain_text("Recording", timeout=20000)
        expect(error).to_be_hidden()
        url = first.sockets[-1]  # type: ignore[attr-defined]
        assert "token=tk_" in url and key not in url and "sk_" not in url, url

        # the server holds one session at most: a second one is refused as busy
        second = open_page(browser, server)
        _enter_key(second, key)
        second.click("#record")
        refusal = second.locator("#error")
        expect(refusal).to_be_visible(timeout=20000)
        expect(refusal).to_contain_text("The server is busy")
        expect(refusal).to_contain_text("--max-sessions")
        expect(second.locator("#record")).to_have_attribute("aria-pressed", "false")
        expect(second.locator("#live-status")).to_have_text("Not recording.")

        first.click("#record")
        expect(first.locator("#live-status")).to_contain_text("Finished", timeout=30000)
        # REST calls carry the key: History lists the session with its recording
        first.click("#tab-history")
        expect(first.locator("#history-items li")).to_have_count(1)
        first.locator("#history-items button").first.click()
        expect(first.locator("#player")).to_be_visible(timeout=10000)
        assert first.errors == [] and second.errors == []  # type: ignore[attr-defined]
    finally:
        stop(server)


def test_unreachable_server_is_explained(browser: Browser, open_server: RunningServer):
    page = open_page(browser, open_server)
    page.context.set_offline(True)
    page.click("#record")
    expect(page.locator("#error")).to_contain_text("Cannot reach the server")
    expect(page.locator("#error")).to_contain_text("streamscribe serve")
    page.context.set_offline(False)


# ------------------------------------------------------------------------------ phone, keyboard


def _luminance(rgb: str) -> float:
    channels = [int(v) / 255 for v in re.findall(r"\d+", rgb)[:3]]
    linear = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
    return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]


def _contrast(page: Page, selector: str, background: str | None = None) -> float:
    fg, bg = page.locator(selector).first.evaluate(
        "e => [getComputedStyle(e).color, getComputedStyle(e).backgroundColor]"
    )
    if background is not None or bg == "rgba(0, 0, 0, 0)":
        bg = background or "rgb(255, 255, 255)"
    hi, lo = sorted((_luminance(fg), _luminance(bg)), reverse=True)
    return (hi + 0.05) / (lo + 0.05)


def test_phone_screen_keyboard_and_contrast(browser: Browser, open_server: RunningServer):
    page = open_page(browser, open_server)
    page.set_viewport_size({"width": 375, "height": 740})
    for tab in ("live", "upload", "history"):
        page.click(f"#tab-{tab}")
        width = page.locator("html").evaluate("e => [e.scrollWidth, e.clientWidth]")
        assert width[0] <= width[1], (tab, width)  # nothing runs off a phone's screen
    page.click("#tab-live")
    box = page.locator("#record").bounding_box()
    assert box and box["x"] >= 0 and box["x"] + box["width"] <= 375 and box["height"] >= 44

    # the tabs work from the keyboard (arrows, Home, End), and so does Record
    page.locator("#tab-live").focus()
    page.keyboard.press("ArrowRight")
    expect(page.locator("#panel-upload")).to_be_visible()
    expect(page.locator("#tab-upload")).to_be_focused()
    page.keyboard.press("End")
    expect(page.locator("#panel-history")).to_be_visible()
    page.keyboard.press("Tab")
    expect(page.locator("#history-search")).to_be_focused()
    page.keyboard.press("Home")  # in the search box Home stays there
    page.locator("#tab-history").focus()
    page.keyboard.press("Home")
    expect(page.locator("#panel-live")).to_be_visible()
    page.keyboard.press("Tab")
    expect(page.locator("#record")).to_be_focused()
    page.keyboard.press("Escape")

    # settings open and save from the keyboard, and are kept by the browser
    page.locator("#open-settings").focus()
    page.keyboard.press("Enter")
    expect(page.locator("#settings")).to_be_visible()
    page.fill("#set-silence", "900")
    page.fill("#set-keyterms", "Stella\nHelstone")
    page.locator("#set-silence").press("Enter")
    expect(page.locator("#settings")).to_be_hidden()
    page.reload()
    page.click("#open-settings")
    expect(page.locator("#set-silence")).to_have_value("900")
    expect(page.locator("#set-keyterms")).to_have_value("Stella\nHelstone")
    page.keyboard.press("Escape")

    for selector in ("body", "#record", "#tab-live", "#open-settings", ".muted"):
        assert _contrast(page, selector) >= 4.5, selector


# ------------------------------------------------------------------------------ audio arithmetic

RESAMPLE = """async ([rate, freq]) => {
  const { Resampler, floatToPcm16 } = await import('/web/pcm.js');
  const r = new Resampler(rate);
  const input = new Float32Array(rate);  // one second, pushed in 128-sample render quanta
  for (let i = 0; i < input.length; i++) input[i] = 0.5 * Math.sin(2 * Math.PI * freq * i / rate);
  const parts = [];
  for (let i = 0; i < input.length; i += 128) parts.push(...r.push(input.subarray(i, i + 128)));
  parts.push(...r.flush());
  const body = parts.slice(800, parts.length - 800);  // away from the edges
  let crossings = 0, sum = 0;
  for (let i = 1; i < body.length; i++) if ((body[i - 1] < 0) !== (body[i] < 0)) crossings++;
  for (const v of body) sum += v * v;
  const pcm = floatToPcm16([1.5, -1.5, 0.5, 0]);
  return [parts.length, crossings / 2 / (body.length / 16000), Math.sqrt(sum / body.length),
          Array.from(pcm)];
}"""


@pytest.mark.parametrize("rate", [48000, 44100, 16000])
def test_worklet_resampler_keeps_speech_and_removes_aliases(
    browser: Browser, open_server: RunningServer, rate: int
):
    page = open_page(browser, open_server)
    length, freq, rms, pcm = page.evaluate(RESAMPLE, [rate, 1000])
    assert abs(length - 16000) <= 2, length  # 16 kHz out, time kept
    assert abs(freq - 1000) < 5, freq
    assert abs(rms - 0.5 / 2**0.5) < 0.01, rms  # unit gain in the pass band
    assert pcm == [32767, -32768, 16384, 0]
    if rate > 16000:
        _, _, alias, _ = page.evaluate(RESAMPLE, [rate, 12000])  # above 8 kHz: must not fold
        assert alias < 0.5 / 2**0.5 * 0.03, alias  # at least 30 dB down


def test_history_colours_each_speaker(browser: Browser, open_server: RunningServer):
    """A session streamed with speaker labels (a real two-speaker conversation) shows each
    speaker's turns with their own label and colour."""
    import json as _json

    import numpy as np
    from speech import SHARED_EVAL

    from streamscribe.audio.files import decode_file
    from streamscribe.speakers import is_available

    manifest = SHARED_EVAL / "dev" / "manifest.jsonl"
    if not manifest.exists() or not is_available():
        pytest.skip("needs ../shared/eval/dev and the speakers extra")
    rows = [_json.loads(x) for x in manifest.read_text().splitlines() if x.strip()]
    row = next(r for r in rows if r["kind"] == "conversation")
    end = next(t["end"] for t in row["turns"] if t["end"] > 20)
    audio = decode_file(SHARED_EVAL / "dev" / row["audio"])[: int(end * 16000) + 8000]
    pcm = (np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes() + b"\0" * 32000

    from websockets.sync.client import connect

    url = f"{open_server.ws}/v3/ws?sample_rate=16000&speaker_labels=true&format_turns=true"
    with connect(url, open_timeout=60) as ws:
        session_id = _json.loads(ws.recv())["id"]
        for i in range(0, len(pcm), 3200):
            ws.send(pcm[i : i + 3200].ljust(3200, b"\0"))
        ws.send(_json.dumps({"type": "Terminate"}))
        for _ in ws:
            pass

    page = open_page(browser, open_server)
    page.click("#tab-history")
    page.click(f'#history-items [data-session="{session_id}"]')
    turns = page.locator("#detail-turns .turn[data-speaker]")
    expect(turns.first).to_be_visible(timeout=10000)
    seen = turns.evaluate_all(
        "ts => ts.map(t => [t.querySelector('.tag.speaker').textContent,"
        " getComputedStyle(t).borderLeftColor])"
    )
    colours = {label: colour for label, colour in seen}
    assert len(colours) >= 2, seen
    assert len(set(colours.values())) == len(colours), colours  # a colour per speaker
    assert all(label.startswith("Speaker ") for label in colours)
