"""Multi-voice markup, streamed: `<Label>text</Label>` → (voice label | None, text) segments. Pure.

The platform's multi-voice rules (seed digest §4.1): text outside tags uses the default voice
(`None` here); labels are case-sensitive and come from `tts.supported_voices`; an unknown label's
tags are ignored and its text is spoken in the default voice; nested tags are not supported.
`VoiceTagParser` is fed LLM text deltas of any size and returns the text it has decided on, in
order, each piece with the voice that speaks it. Markup never comes out as text.

Where the seeds are silent, this module decides:

- **What a tag is.** `<name>` or `</name>` (`<name >`, `</name >` too), or an XML-looking element with
  attributes (`<break time="1s"/>`, `<emphasis level="strong">`). A name is up to 64
  characters without whitespace, `<`, `>`, `/`, `=`, quotes; it is a configured label or starts
  with a letter or `_`. A configured label with spaces (`Old Man`, which the platform allows) is
  a tag only written exactly: `<Old Man>`, `</Old Man>`. Anything else is text: `3 < 5`,
  `I <3 you`, `a<b and c>d`. A tag candidate longer than 200 characters is text.
- **Which tags do something.** Only a plain `<Label>` of a configured label outside any voice
  opens that voice, and only `</Label>` of the open voice closes it. Every other tag is dropped:
  unknown labels (`<joe>` when the label is `Joe`), self-closing and attribute-carrying tags,
  stray closing tags.
- **Nested tags.** Inside an open voice every other tag is dropped and its text stays in the
  open voice, up to the first `</Label>` of that voice: `<Joe>Hi <Ann>there</Ann> you</Joe>` is
  all Joe. While streaming, a tag inside a section is either nesting or a forgotten close, and
  we cannot tell which; dropping it never speaks markup, never guesses a switch, and keeps the
  section in one voice as the LLM opened it.
- **Unclosed tag at the end of a reply.** The section's text is spoken in its voice as it
  streams (it is often already playing when the reply ends), so the dangling open tag is
  simply dropped: `<Joe>Hello there` is Joe saying "Hello there". The next reply starts in the
  default voice.
- **Unfinished tag at the end of a reply** (`... <Jo` cut off by `max_tokens`): dropped; a lone
  `<` stays text.
- **Text between segments.** Removing a tag inserts nothing (`a<b>c</b>` is `ac`), except that
  `plain_text` puts one space where the voice changes between two non-space characters, as the
  voices are heard apart.

Any split of the same text into deltas yields the same characters with the same voices (the
parser only decides on a `<` once the text after it settles it): `speakable()` of the pieces is
then identical. Entities (`&amp;`) are not decoded.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import Enum, auto

MAX_NAME_CHARS = 64
MAX_TAG_CHARS = 200
_NOT_NAME = frozenset("<>/=\"'")


@dataclass(frozen=True, slots=True)
class Segment:
    """Text and the voice label that speaks it (None: the default voice)."""

    voice: str | None
    text: str


class _Scan(Enum):
    TAG = auto()
    TEXT = auto()  # the `<` is a literal character
    PARTIAL = auto()  # undecided until more text comes
    DANGLING = auto()  # an unfinished tag at the end of the reply: dropped


@dataclass(frozen=True, slots=True)
class _Tag:
    end: int
    name: str = ""
    closing: bool = False
    plain: bool = True
    """No attributes and not self-closing: the only shape that can switch voices."""


class VoiceTagParser:
    """Streams one reply's text into voice segments. `close()` ends the reply and resets."""

    def __init__(self, labels: Iterable[str]) -> None:
        self.labels = frozenset(labels)
        self._spaced = sorted((label for label in self.labels if any(c.isspace() for c in label)), key=len)
        self._buf = ""
        self._voice: str | None = None
        self.dropped_tags: list[str] = []
        """Every tag dropped so far (unknown labels, nesting, stray closes), for diagnostics."""

    @property
    def voice(self) -> str | None:
        """The voice of the text being streamed now (None: the default voice)."""
        return self._voice

    def feed(self, delta: str) -> list[Segment]:
        """Add a text delta; return the text decided so far with its voices (maybe nothing)."""
        self._buf += delta
        return self._drain(final=False)

    def close(self) -> list[Segment]:
        """End of the reply: return the rest; the next reply starts in the default voice."""
        out = self._drain(final=True)
        self._buf = ""
        self._voice = None
        return out

    def _drain(self, *, final: bool) -> list[Segment]:
        out: list[Segment] = []
        buf = self._buf
        text_start = search = 0
        while (lt := buf.find("<", search)) >= 0:
            kind, tag = self._scan(buf, lt, final=final)
            if kind is _Scan.TEXT:
                search = lt + 1
                continue
            self._emit(out, buf[text_start:lt])
            if kind is _Scan.PARTIAL:
                self._buf = buf[lt:]
                return out
            if kind is _Scan.DANGLING:
                self.dropped_tags.append(buf[lt:])
                self._buf = ""
                return out
            assert tag is not None
            self._on_tag(tag, buf[lt : tag.end])
            text_start = search = tag.end
        self._emit(out, buf[text_start:])
        self._buf = ""
        return out

    def _emit(self, out: list[Segment], text: str) -> None:
        if not text:
            return
        if out and out[-1].voice == self._voice:
            out[-1] = Segment(self._voice, out[-1].text + text)
        else:
            out.append(Segment(self._voice, text))

    def _on_tag(self, tag: _Tag, raw: str) -> None:
        if tag.plain and not tag.closing and self._voice is None and tag.name in self.labels:
            self._voice = tag.name
        elif tag.closing and tag.name == self._voice:
            self._voice = None
        else:
            self.dropped_tags.append(raw)

    def _scan(self, buf: str, i: int, *, final: bool) -> tuple[_Scan, _Tag | None]:
        """What the `<` at `i` starts."""
        n = len(buf)
        undecided = (_Scan.PARTIAL, None) if not final else (_Scan.DANGLING, None)
        j = i + 1
        closing = j < n and buf[j] == "/"
        if closing:
            j += 1
        start = j
        rest = buf[start : start + MAX_TAG_CHARS]
        for label in self._spaced:  # `<Old Man>`: the platform allows spaces in labels
            tag = label + ">"
            if rest.startswith(tag):
                return _Scan.TAG, _Tag(start + len(tag), label, closing)
            if rest and len(rest) < len(tag) and tag.startswith(rest) and start + len(rest) == n:
                return undecided
        while j < n and buf[j] not in _NOT_NAME and not buf[j].isspace():
            j += 1
            if j - start > MAX_NAME_CHARS:
                return _Scan.TEXT, None
        name = buf[start:j]
        if name and not self._may_be_name(name, complete=j < n):
            return _Scan.TEXT, None
        if j == n:
            if final and not name:
                return _Scan.TEXT, None  # a lone `<` or `</` at the very end
            return undecided
        if not name:
            return _Scan.TEXT, None
        if buf[j] == ">":
            return _Scan.TAG, _Tag(j + 1, name, closing)
        if closing:
            while j < n and buf[j].isspace() and j - i < MAX_TAG_CHARS:
                j += 1
            if j == n:
                return undecided
            if buf[j] == ">" and j - i < MAX_TAG_CHARS:
                return _Scan.TAG, _Tag(j + 1, name, closing=True)
            return _Scan.TEXT, None
        found = _attributes_end(buf, j, limit=i + MAX_TAG_CHARS)
        if found is None:
            return undecided
        end, plain = found
        if end < 0:
            return _Scan.TEXT, None
        return _Scan.TAG, _Tag(end, name, plain=plain)

    def _may_be_name(self, name: str, *, complete: bool) -> bool:
        if name[0].isalpha() or name[0] == "_":
            return True
        if complete:
            return name in self.labels
        return any(label.startswith(name) for label in self.labels)


def _attributes_end(buf: str, j: int, *, limit: int) -> tuple[int, bool] | None:
    """End of an element's attributes and `>` / `/>` from `j` (just after the name), and
    whether the tag is plain (no attribute, not self-closing).

    None: undecided (the text ends first); an end of -1: not an element.
    """
    n = len(buf)
    plain = True
    while True:
        if j > limit:
            return -1, False
        spaced = j < n and buf[j].isspace()
        while j < n and buf[j].isspace():
            j += 1
        if j == n:
            return None
        if buf[j] == ">":
            return j + 1, plain
        if buf[j] == "/":
            if j + 1 == n:
                return None
            return (j + 2, False) if buf[j + 1] == ">" else (-1, False)
        if not spaced or not (buf[j].isalpha() or buf[j] in "_:"):
            return -1, False
        plain = False
        while j < n and (buf[j].isalnum() or buf[j] in "_:.-"):
            j += 1
        while j < n and buf[j].isspace():
            j += 1
        if j == n:
            return None
        if buf[j] != "=":
            return -1, False
        j += 1
        while j < n and buf[j].isspace():
            j += 1
        if j == n:
            return None
        quote = buf[j]
        if quote not in "\"'":
            return -1, False
        close = buf.find(quote, j + 1)
        value_end = n if close < 0 else close
        if "<" in buf[j + 1 : value_end] or ">" in buf[j + 1 : value_end] or value_end > limit:
            return -1, False
        if close < 0:
            return None
        j = close + 1


def speakable(pieces: Sequence[Segment]) -> list[Segment]:
    """Pieces as they are spoken: one segment per run of one voice, whitespace-normalized.

    Adjacent pieces of the same voice join (with a space where there was whitespace between
    them, including a whitespace-only piece of another voice); empty pieces disappear. The same
    text split any way gives the same result.
    """
    runs: list[tuple[str | None, str]] = []
    for piece in pieces:
        if runs and runs[-1][0] == piece.voice:
            runs[-1] = (piece.voice, runs[-1][1] + piece.text)
        elif piece.text:
            runs.append((piece.voice, piece.text))
    out: list[Segment] = []
    space_before = False
    for voice, raw in runs:
        words = " ".join(raw.split())
        if not words:
            space_before = True
            continue
        if out and out[-1].voice == voice:
            sep = " " if space_before or raw[0].isspace() else ""
            out[-1] = Segment(voice, out[-1].text + sep + words)
        else:
            out.append(Segment(voice, words))
        space_before = raw[-1].isspace()
    return out


def plain_text(pieces: Sequence[Segment]) -> str:
    """The reply without markup: the pieces' text in order, a space where the voice changes
    between two non-space characters. Not whitespace-normalized, not stripped."""
    out: list[str] = []
    last_voice: str | None = None
    for piece in pieces:
        if not piece.text:
            continue
        if out and piece.voice != last_voice and not out[-1][-1].isspace() and not piece.text[0].isspace():
            out.append(" ")
        out.append(piece.text)
        last_voice = piece.voice
    return "".join(out)


def parse(text: str, labels: Iterable[str]) -> list[Segment]:
    """A whole text's speakable segments."""
    parser = VoiceTagParser(labels)
    return speakable([*parser.feed(text), *parser.close()])


def strip_markup(text: str, labels: Iterable[str]) -> tuple[str, list[Segment]]:
    """A whole text without markup (`plain_text`, stripped) and its speakable segments."""
    parser = VoiceTagParser(labels)
    pieces = [*parser.feed(text), *parser.close()]
    return plain_text(pieces).strip(), speakable(pieces)
