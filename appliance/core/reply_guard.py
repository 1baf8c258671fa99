"""Bounds on one streamed LLM reply: a speech-time ceiling, a token ceiling and a repetition
guard. Pure: fed text deltas, it says what may be spoken and when the reply must end.

A small model asked for a story can loop on one sentence for minutes (`prompt.max_tokens: -1`,
the platform default, means no limit). `ReplyGuard` ends such a reply at a sentence boundary:

- **max_reply**: the reply would run past `max_seconds` of speech, estimated from the text
  before synthesis (`chars_per_second` at the configured speed: piper's joe-medium speaks
  17–21 characters per second at speed 1.0, so the default 16 errs on the long side and
  45 s estimated is 35–45 s heard), or past `max_tokens` (approximated as 4 characters a
  token, the seeds' rule of thumb; the LLM is also asked for at most that many tokens, see
  `llm_max_tokens`, so generation stops by itself too).
- **repetition**: the same sentence (normalized: lower case, words only, at least
  `min_sentence_words` words) for the `repeat_limit`-th time, or a run of `ngram_words`
  words occurring for the `repeat_limit`-th time (overlapping occurrences count: a word loop
  without punctuation is caught too).

Release policy (what reaches the chunker, and so the speaker):
- the first sentence streams through as it comes (its first clause is heard early);
- every later sentence is released once it is complete and has passed the checks, so a
  sentence that breaks a limit is never queued, not even in part;
- a "sentence" is text up to `.` `!` `?` `…` `。` (a run of them, then closing quotes,
  brackets or closing tags) followed by whitespace, or up to a line break; not after a
  common abbreviation or a single capital initial. Text with no boundary for
  `max_sentence_chars` is cut at its last whitespace before that length (a run-on counts as
  a sentence);
- the checks run when a sentence completes (and on the last one at `finish()`); the first
  sentence is always spoken whole (it is at most `max_sentence_chars` long), so if it alone
  breaks a limit the reply ends right after it.

Decisions are made only at boundaries from text already received, so any split of the same
text into deltas gives the same released text and the same cut.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

MAX_REPLY = "max_reply"
REPETITION = "repetition"

_TERMINALS = frozenset(".!?…。")
_CLOSERS = frozenset("\"')]}»”’")
_ABBREVIATIONS = frozenset(
    {"mr", "mrs", "ms", "dr", "prof", "sr", "jr", "st", "vs", "etc", "e.g", "i.e", "cf", "approx"}
)
_TAG = re.compile(r"</?[^<>\s/][^<>\n]{0,63}>")
_CLOSING_TAG_AT_END = re.compile(r"</[^<>\s/][^<>\n]{0,63}>$")
_WORD = re.compile(r"\w+")
_DETAIL_CHARS = 80
_MAX_NGRAMS = 20_000
"""Distinct n-grams remembered (a reply is bounded by `max_tokens` long before this)."""


@dataclass(frozen=True)
class ReplyLimits:
    max_seconds: float = 45.0
    """Estimated speech per reply (per turn, tool rounds included)."""
    max_tokens: int = 400
    speed: float = 1.0
    """The voice's speed factor (`tts.speed`): faster speech fits more text in the same time."""
    chars_per_second: float = 16.0
    """Speech rate at speed 1.0, in characters of plain text (markup removed) per second."""
    repeat_limit: int = 3
    ngram_words: int = 8
    min_sentence_words: int = 3
    max_sentence_chars: int = 300

    def __post_init__(self) -> None:
        if self.max_seconds <= 0 or self.max_tokens < 1 or self.speed <= 0 or self.chars_per_second <= 0:
            raise ValueError("max_seconds, max_tokens, speed and chars_per_second must be positive")
        if self.repeat_limit < 2 or self.ngram_words < 2 or self.min_sentence_words < 1:
            raise ValueError("repeat_limit and ngram_words must be at least 2, min_sentence_words 1")
        if self.max_sentence_chars < 20:
            raise ValueError("max_sentence_chars must be at least 20")

    def llm_max_tokens(self, platform_max_tokens: object) -> int:
        """The `max_tokens` asked of the LLM: the platform's when it is set (> 0) and lower."""
        platform = platform_max_tokens
        if isinstance(platform, int) and not isinstance(platform, bool) and platform > 0:
            return min(platform, self.max_tokens)
        return self.max_tokens

    def seconds(self, text: str) -> float:
        """Estimated speaking time of `text` (voice markup and extra whitespace ignored)."""
        return len(plain(text)) / (self.chars_per_second * self.speed)


@dataclass(frozen=True)
class Truncation:
    """Why and where a reply was cut."""

    reason: str
    """`max_reply` or `repetition`."""
    spoken_text: str
    """The raw text released (everything before the cut): what the user hears."""
    spoken_seconds: float
    """Estimated speaking time of `spoken_text`."""
    generated_chars: int
    """Characters received from the LLM up to the cut (the dropped rest included)."""
    detail: str = ""
    """What triggered it: the start of the sentence that repeated (as written, at most 80
    characters, cut at a space), or the limit reached."""

    def event_fields(self) -> dict[str, Any]:
        """The fields of the `reply_truncated` event."""
        return {
            "reason": self.reason,
            "spoken_chars": len(plain(self.spoken_text)),
            "spoken_seconds": round(self.spoken_seconds, 2),
            "generated_chars": self.generated_chars,
            "detail": self.detail,
        }


@dataclass(frozen=True)
class GuardStep:
    release: str = ""
    """Text that may go to the chunker now (raw, markup kept)."""
    stop: Truncation | None = None
    """Set once: the reply ends; close the LLM stream, queue nothing more."""


def plain(text: str) -> str:
    """`text` without voice markup, whitespace collapsed."""
    return " ".join(_TAG.sub(" ", text).split())


def excerpt(text: str) -> str:
    """The start of `text` as written (plain), cut at a space: a word is never cut in two, so
    a secret in it is masked whole by the redaction of events and logs."""
    flat = plain(text)
    if len(flat) <= _DETAIL_CHARS:
        return flat
    cut = flat.rfind(" ", 0, _DETAIL_CHARS)
    return flat[:cut] + " …" if cut > 0 else ""


def normalized_words(text: str) -> list[str]:
    return [w.lower() for w in _WORD.findall(_TAG.sub(" ", text))]


@dataclass
class ReplyGuard:
    limits: ReplyLimits = field(default_factory=ReplyLimits)
    spent_seconds: float = 0.0
    """Speech already queued in this turn (an earlier tool round): counts toward the limit."""
    _buf: str = ""
    """The current, incomplete sentence."""
    _scan: int = 0
    """Offset in `_buf` up to which no boundary was found."""
    _first: bool = True
    """The first sentence: released as it streams."""
    _released: list[str] = field(default_factory=list)
    _released_seconds: float = 0.0
    _received: int = 0
    """Characters received, up to the end of the last checked sentence."""
    _sentences: Counter[str] = field(default_factory=Counter)
    _words: list[str] = field(default_factory=list)
    _ngrams: Counter[tuple[str, ...]] = field(default_factory=Counter)
    _stop: Truncation | None = None

    # ------------------------------------------------------------ interface
    @property
    def released_text(self) -> str:
        return "".join(self._released)

    @property
    def released_seconds(self) -> float:
        return self._released_seconds

    @property
    def at_boundary(self) -> bool:
        """The released text ends at a sentence boundary (False while the first one streams)."""
        return not self._first or not self._buf

    @property
    def stopped(self) -> Truncation | None:
        return self._stop

    def push(self, delta: str) -> GuardStep:
        """Add an LLM text delta: what may be spoken now, and whether the reply ends here."""
        if self._stop is not None or not delta:
            return GuardStep()
        out: list[str] = []
        if self._first:
            out.append(delta)  # the first sentence streams (checked when it completes)
            self._released.append(delta)
        self._buf += delta
        while self._stop is None and (cut := self._find_boundary()) is not None:
            sentence, self._buf, self._scan = self._buf[:cut], self._buf[cut:], 0
            if self._first:  # what came after the first sentence was released with it: take it back
                self._unrelease(len(self._buf), out)
            out.append(self._complete(sentence))
        return GuardStep("".join(out), self._stop)

    def finish(self) -> GuardStep:
        """End of the stream: the last (unterminated) sentence, checked like the others."""
        if self._stop is not None:
            return GuardStep()
        sentence, self._buf = self._buf, ""
        if not sentence:
            return GuardStep()
        return GuardStep(self._complete(sentence), self._stop)

    # ------------------------------------------------------------ internals
    def _unrelease(self, count: int, out: list[str]) -> None:
        """Take back the last `count` released characters (text after the first sentence)."""
        for pieces in (out, self._released):
            remaining = count
            while remaining > 0 and pieces:
                last = pieces.pop()
                if len(last) > remaining:
                    pieces.append(last[:-remaining])
                remaining -= len(last)

    def _complete(self, sentence: str) -> str:
        """Check one complete sentence; the text to release ('' when the reply stops before it)."""
        limits = self.limits
        first, self._first = self._first, False
        received = self._received + len(sentence)
        words = normalized_words(sentence)
        reason, detail = self._check(sentence, words, received)
        if reason is not None and not first:
            self._stop = Truncation(reason, self.released_text, self._released_seconds, received, detail)
            return ""
        self._received = received
        self._remember(words)
        if not first:  # the first one was released as it streamed
            self._released.append(sentence)
        self._released_seconds = limits.seconds(self.released_text)
        if reason is not None:
            self._stop = Truncation(reason, self.released_text, self._released_seconds, received, detail)
        return "" if first else sentence

    def _check(self, sentence: str, words: list[str], received: int) -> tuple[str | None, str]:
        limits = self.limits
        key = " ".join(words)
        if len(words) >= limits.min_sentence_words and self._sentences[key] + 1 >= limits.repeat_limit:
            return REPETITION, excerpt(sentence)
        n = limits.ngram_words
        run = [*self._words[-(n - 1) :], *words]
        seen: Counter[tuple[str, ...]] = Counter()
        for i in range(len(run) - n + 1):
            gram = tuple(run[i : i + n])
            seen[gram] += 1
            if self._ngrams[gram] + seen[gram] >= limits.repeat_limit:
                return REPETITION, excerpt(sentence)
        seconds = self.spent_seconds + limits.seconds(self.released_text + sentence)
        if seconds > limits.max_seconds:
            return MAX_REPLY, f"{limits.max_seconds:g} s of speech"
        if received / 4 > limits.max_tokens:
            return MAX_REPLY, f"{limits.max_tokens} tokens"
        return None, ""

    def _remember(self, words: list[str]) -> None:
        limits = self.limits
        key = " ".join(words)
        if len(words) >= limits.min_sentence_words:
            self._sentences[key] += 1
        n = limits.ngram_words
        run = [*self._words[-(n - 1) :], *words]
        for i in range(len(run) - n + 1):
            gram = tuple(run[i : i + n])
            if gram in self._ngrams or len(self._ngrams) < _MAX_NGRAMS:
                self._ngrams[gram] += 1
        self._words = run[-(n - 1) :]

    def _find_boundary(self) -> int | None:
        """End of the first complete sentence in `_buf` (after its boundary whitespace), or None."""
        buf, limit = self._buf, self.limits.max_sentence_chars
        end = min(len(buf), limit + 1)
        for i in range(self._scan, end):
            ch = buf[i]
            if ch.isspace() and _ends_sentence(buf, i):
                return i + 1
        if len(buf) > limit:
            space = max(buf.rfind(" ", 0, limit + 1), buf.rfind("\n", 0, limit + 1))
            return space + 1 if space > 0 else limit
        self._scan = end
        return None


def _ends_sentence(buf: str, i: int) -> bool:
    """Whether the whitespace at `i` ends a sentence."""
    before = buf[:i]
    if buf[i] == "\n" and _WORD.search(_TAG.sub(" ", before)):
        return True
    # skip closing quotes, brackets and closing tags
    while before:
        if before[-1] in _CLOSERS:
            before = before[:-1]
            continue
        m = _CLOSING_TAG_AT_END.search(before) if before[-1] == ">" else None
        if m is None:
            break
        before = before[: m.start()]
    if not before or before[-1] not in _TERMINALS:
        return False
    end = len(before)
    start = end
    while start > 0 and before[start - 1] in _TERMINALS:
        start -= 1
    if end - start > 1 or before[-1] != ".":
        return start > 0 and not before[start - 1].isspace()
    token_start = start
    while token_start > 0 and not before[token_start - 1].isspace() and before[token_start - 1] != ">":
        token_start -= 1
    token = before[token_start:start].lstrip("\"'([{«“‘*_")
    if not token:
        return False
    if token.lower() in _ABBREVIATIONS:
        return False
    return not (len(token) == 1 and token.isupper())
