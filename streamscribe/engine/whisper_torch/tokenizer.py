"""Whisper's tokenizer rules over the model directory's `tokenizer.json`, without faster-whisper.

The torch backend must run where faster-whisper and CTranslate2 are not installed (a CUDA 13
machine), so it carries its own copy of the rules both backends follow: the special tokens, the
start-of-transcript sequence, the non-speech tokens suppressed while decoding, and how tokens are
grouped into words for timestamps. The byte-pair encoding itself is the `tokenizers` package.
"""

from __future__ import annotations

import string
from functools import cached_property
from pathlib import Path

from streamscribe.errors import ModelNotFoundError

__all__ = ["LANGUAGES_WITHOUT_SPACES", "WhisperTokenizer", "load_bpe"]

LANGUAGES_WITHOUT_SPACES = frozenset({"zh", "ja", "th", "lo", "my", "yue"})
TASKS = ("transcribe", "translate")


def load_bpe(model_dir: Path):  # -> tokenizers.Tokenizer
    path = Path(model_dir) / "tokenizer.json"
    if not path.is_file():
        raise ModelNotFoundError(
            f"{model_dir} has no tokenizer.json; copy it from the model's Hugging Face repository"
        )
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(path))


class WhisperTokenizer:
    """Special tokens and word splitting for one (language, task)."""

    def __init__(
        self, bpe, multilingual: bool, task: str = "transcribe", language: str | None = None
    ) -> None:
        self.bpe = bpe
        self.multilingual = multilingual
        if multilingual:
            if task not in TASKS:
                raise ValueError(f"unknown task {task!r}; accepted: {', '.join(TASKS)}")
            language = language or "en"
            lang_id = bpe.token_to_id(f"<|{language}|>")
            if lang_id is None:
                raise ValueError(f"the model has no language {language!r}")
            self.language: int | None = lang_id
            self.task: int | None = self._id(f"<|{task}|>")
            self.language_code = language
        else:
            self.language = None
            self.task = None
            self.language_code = "en"

    def _id(self, token: str) -> int:
        found = self.bpe.token_to_id(token)
        if found is None:
            raise ValueError(f"the tokenizer has no {token}")
        return found

    @cached_property
    def eot(self) -> int:
        return self._id("<|endoftext|>")

    @cached_property
    def sot(self) -> int:
        return self._id("<|startoftranscript|>")

    @cached_property
    def sot_prev(self) -> int:
        return self._id("<|startofprev|>")

    @cached_property
    def sot_lm(self) -> int:
        return self._id("<|startoflm|>")

    @cached_property
    def transcribe(self) -> int:
        return self._id("<|transcribe|>")

    @cached_property
    def translate(self) -> int:
        return self._id("<|translate|>")

    @cached_property
    def no_timestamps(self) -> int:
        return self._id("<|notimestamps|>")

    @cached_property
    def no_speech(self) -> int:
        found = self.bpe.token_to_id("<|nospeech|>")
        return found if found is not None else self._id("<|nocaptions|>")

    @property
    def timestamp_begin(self) -> int:
        return self.no_timestamps + 1

    @property
    def sot_sequence(self) -> list[int]:
        return [t for t in (self.sot, self.language, self.task) if t is not None]

    def encode(self, text: str) -> list[int]:
        return self.bpe.encode(text, add_special_tokens=False).ids

    def decode(self, tokens: list[int]) -> str:
        return self.bpe.decode([t for t in tokens if t < self.eot])

    @cached_property
    def non_speech_tokens(self) -> tuple[int, ...]:
        """Tokens that only write non-speech annotations (♪, [MUSIC], speaker tags): suppressed.

        Hyphens and apostrophes stay allowed inside words, not at a word's start."""
        symbols = list('"#()*+/:;<=>@[\\]^_`{|}~「」『』')
        symbols += ["<<", ">>", "<<<", ">>>", "--", "---", "-(", "-[", "('", '("', "((", "))"]
        symbols += ["(((", ")))", "[[", "]]", "{{", "}}", "♪♪", "♪♪♪"]
        musical = set("♩♪♫♬♭♮♯")  # one 3-byte prefix: suppressing the first token is safe
        result = {self.encode(" -")[0], self.encode(" '")[0]}
        for symbol in symbols + sorted(musical):
            for tokens in (self.encode(symbol), self.encode(" " + symbol)):
                if len(tokens) == 1 or symbol in musical:
                    result.add(tokens[0])
        return tuple(sorted(result))

    def suppressed(self, config_ids: list[int] | None = None) -> list[int]:
        """What decoding never emits: the non-speech tokens, the model's own list, the task
        and start tokens (faster-whisper's `suppress_tokens=[-1]`)."""
        ids = set(self.non_speech_tokens) | {t for t in config_ids or [] if t >= 0}
        ids |= {self.transcribe, self.translate, self.sot, self.sot_prev, self.sot_lm}
        ids.add(self.no_speech)
        return sorted(ids)

    # ------------------------------------------------------------------ words
    def split_to_word_tokens(self, tokens: list[int]) -> tuple[list[str], list[list[int]]]:
        if self.language_code in LANGUAGES_WITHOUT_SPACES:
            return self._split_on_unicode(tokens)
        return self._split_on_spaces(tokens)

    def _decode_any(self, tokens: list[int]) -> str:
        out, run = [], []
        for t in tokens:
            if t >= self.eot:
                if run:
                    out.append(self.bpe.decode(run))
                    run = []
                if t >= self.timestamp_begin:
                    out.append(f"<|{(t - self.timestamp_begin) * 0.02:.2f}|>")
            else:
                run.append(t)
        if run:
            out.append(self.bpe.decode(run))
        return "".join(out)

    def _split_on_unicode(self, tokens: list[int]) -> tuple[list[str], list[list[int]]]:
        """Cut wherever the tokens so far decode to whole characters."""
        full = self._decode_any(tokens)
        bad = "\ufffd"
        words: list[str] = []
        groups: list[list[int]] = []
        current: list[int] = []
        offset = 0
        for t in tokens:
            current.append(t)
            decoded = self._decode_any(current)
            at = decoded.find(bad)
            if at < 0 or (offset + at < len(full) and full[offset + at] == bad):
                words.append(decoded)
                groups.append(current)
                current = []
                offset += len(decoded)
        return words, groups

    def _split_on_spaces(self, tokens: list[int]) -> tuple[list[str], list[list[int]]]:
        """A word starts at a space, a punctuation mark or a special token."""
        pieces, piece_tokens = self._split_on_unicode(tokens)
        words: list[str] = []
        groups: list[list[int]] = []
        for piece, toks in zip(pieces, piece_tokens, strict=True):
            starts = (
                toks[0] >= self.eot
                or piece.startswith(" ")
                or piece.strip() in string.punctuation
                or not words
            )
            if starts:
                words.append(piece)
                groups.append(list(toks))
            else:
                words[-1] += piece
                groups[-1].extend(toks)
        return words, groups
