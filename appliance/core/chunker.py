"""Streaming cut of LLM text into chunks ready for TTS.

The platform's "faster response generation" (seed §3.4): the assistant "starts speaking after
receiving enough words and a comma from the language model, rather than waiting for complete
sentences". `SpeechChunker` is fed text deltas of any size and returns chunks at, in order of
appearance in the text:

- a sentence end: `.` `!` `?` `…` `。` (a run such as `...` or `?!`, then optional closing quotes,
  brackets or closing tags) followed by whitespace or the end of the stream. Not after a common
  abbreviation (`Mr.`, `e.g.`, `etc.` ...), a single capital initial (`J.`), or a numbered-list
  marker at a line start (`1.`); a decimal (`3.14`) never qualifies (no whitespace after the dot).
  `"Let me think about that... "` is a cut: the platform's buffer-words idiom.
- a clause mark `,` `;` `:` followed by whitespace, once the pending chunk has `min_words`
  words (`first_min_words` for the first chunk of a reply, to start speaking sooner);
- a line break, once the pending chunk has a word (headings and list items are spoken apart);
- whitespace, when the pending chunk exceeds `max_chars` (the last whitespace that keeps the
  chunk within `max_chars`, else the first one after).

A word is a whitespace-separated token holding a letter or digit. Cuts are only ever made at
whitespace, so joining the chunks with single spaces gives back the whitespace-normalized input
(minus the Markdown stripped for the voice). `<...>` spans (multi-voice tags, handled by a later
stage) are atomic and left untouched. A decision waits until the text after a candidate cut is
known, so any split of the same text into deltas yields the same chunks.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_TERMINALS = frozenset(".!?…。")
_CLAUSE_MARKS = frozenset(",;:")
_CLOSERS = frozenset("\"')]}»”’")
_ABBREVIATIONS = frozenset(
    {"mr", "mrs", "ms", "dr", "prof", "sr", "jr", "st", "vs", "etc", "e.g", "i.e", "cf", "approx"}
)
# A tag: `<label>` or `</label>`, the label up to 64 characters, no newline (spaces tolerated).
_TAG = re.compile(r"</?[^<>\s/][^<>\n]{0,63}>")
_TAG_PREFIX = re.compile(r"</?(?:[^<>\s/][^<>\n]{0,63})?")
_LINE_MARKER = re.compile(r"(?m)^[ \t]*(?:#{1,6}|[-+*•]|>)[ \t]+")
_INLINE_MARKUP = re.compile(r"[*`]")
_PARTIAL = -1


@dataclass
class _Scan:
    """Progress of the scan over the pending text (offsets into it)."""

    i: int = 0
    words: int = 0
    word_has_alnum: bool = False
    length: int = 0
    """Whitespace-normalized length of the text before `i`."""
    space_run_start: int | None = None
    last_space: int | None = None
    """Start of the last whitespace run after a word: the cut used when `max_chars` is passed."""
    marks_checked_until: int = 0


class SpeechChunker:
    """Cuts one streamed reply into TTS chunks. `flush()` ends the reply and resets."""

    def __init__(self, min_words: int = 6, max_chars: int = 240, first_min_words: int = 3) -> None:
        if min_words < 1 or first_min_words < 1 or max_chars < 1:
            raise ValueError("min_words, first_min_words and max_chars must be at least 1")
        self.min_words = min_words
        self.max_chars = max_chars
        self.first_min_words = first_min_words
        self._buf = ""
        self._first = True
        self._at_line_start = True
        self._scan = _Scan()

    def push(self, delta: str) -> list[str]:
        """Add an LLM text delta; return the chunks it completed (often none)."""
        self._buf += delta
        return self._drain(final=False)

    def flush(self) -> list[str]:
        """End of the reply: return the remaining chunks and get ready for the next reply."""
        out = self._drain(final=True)
        out += self._emit(self._buf)
        self._buf = ""
        self._first = True
        self._at_line_start = True
        self._scan = _Scan()
        return out

    def _drain(self, *, final: bool) -> list[str]:
        out: list[str] = []
        while (cut := self._find_cut(self._buf, final=final)) is not None:
            out += self._emit(self._buf[:cut])
            self._buf = self._buf[cut:]
            self._at_line_start = False  # a cut always follows a non-space character
            self._scan = _Scan()
        return out

    def _emit(self, raw: str) -> list[str]:
        text = " ".join(_strip_markdown(raw, at_line_start=self._at_line_start).split())
        if not text:
            return []
        self._first = False
        return [text]

    def _find_cut(self, buf: str, *, final: bool) -> int | None:
        """Index of the first cut in `buf`, or None (no cut, or it depends on text not yet seen).

        The scan resumes where the previous call stopped: every decision before `scan.i` used
        only text that was already there, so rescanning would repeat it.
        """
        min_words = self.first_min_words if self._first else self.min_words
        n = len(buf)
        s = self._scan
        while s.i < n:
            i = s.i
            ch = buf[i]
            if ch.isspace():
                if s.space_run_start is None:
                    s.space_run_start = i
                    s.word_has_alnum = False
                if s.words and (ch == "\n" or s.length > self.max_chars):
                    return s.space_run_start
                if s.words and s.space_run_start == i:
                    s.last_space = i
                s.i += 1
                continue
            step = 1
            if ch == "<":
                tag_end = _tag_end(buf, i, final=final)
                if tag_end == _PARTIAL:
                    return None
                step = max(1, tag_end - i)
            elif ch.isalnum():
                if not s.word_has_alnum:
                    s.word_has_alnum = True
                    s.words += 1
            elif i >= s.marks_checked_until and (ch in _TERMINALS or ch in _CLAUSE_MARKS):
                end = i + 1
                if ch in _TERMINALS:
                    while end < n and buf[end] in _TERMINALS:
                        end += 1
                    if end == n and not final:
                        return None  # the run may go on: "Mr." or "Mr...."
                wanted = s.words >= (1 if ch in _TERMINALS else min_words)
                if wanted and ch == "." and end == i + 1:
                    wanted = not self._is_abbreviation(buf, i)
                if wanted:
                    end = _skip_closers(buf, end, final=final)
                    if end == _PARTIAL or (end == n and not final):
                        return None
                    if end < n and buf[end].isspace():
                        return end
                s.marks_checked_until = end
            if s.space_run_start is not None and s.length:
                s.length += 1
            s.space_run_start = None
            s.length += step
            if s.length > self.max_chars and s.last_space is not None:
                return s.last_space
            s.i += step
        return None

    def _is_abbreviation(self, buf: str, dot: int) -> bool:
        """Whether the single `.` at `dot` ends an abbreviation, an initial or a list number."""
        start = dot
        while start > 0 and not buf[start - 1].isspace() and buf[start - 1] != ">":
            start -= 1
        token = buf[start:dot].lstrip("\"'([{«“‘*_")
        if token.lower() in _ABBREVIATIONS:
            return True
        if len(token) == 1 and token.isupper():
            return True  # an initial: "J. R. R. Tolkien"
        if token.isdigit():  # "1. Buy milk" at a line start is a list marker
            line_start = buf.rfind("\n", 0, dot) + 1
            at_line_start = line_start > 0 or self._at_line_start
            return at_line_start and buf[line_start : dot - len(token)].strip(" \t") == ""
        return False


def _tag_end(buf: str, i: int, *, final: bool) -> int:
    """End of the `<...>` tag at `i`; `i` if there is none; `_PARTIAL` if it is still undecided."""
    m = _TAG.match(buf, i)
    if m:
        return m.end()
    if not final and _TAG_PREFIX.fullmatch(buf, i):
        return _PARTIAL
    return i


def _skip_closers(buf: str, i: int, *, final: bool) -> int:
    """Skip closing quotes, brackets and closing tags after a punctuation mark."""
    n = len(buf)
    while i < n:
        if buf[i] in _CLOSERS:
            i += 1
        elif buf.startswith("</", i) or (buf[i] == "<" and i + 1 == n):
            end = _tag_end(buf, i, final=final)
            if end == _PARTIAL:
                return _PARTIAL
            if end == i:
                break
            i = end
        else:
            break
    return i


def _strip_markdown(raw: str, *, at_line_start: bool) -> str:
    """Remove Markdown the voice must not read: `*`, backticks, `#` headings, list bullets, `>`."""
    head, sep, rest = ("", "", raw) if at_line_start else raw.partition("\n")
    text = head + sep + _LINE_MARKER.sub("", rest)
    out: list[str] = []
    pos = 0
    for m in _TAG.finditer(text):
        out.append(_INLINE_MARKUP.sub("", text[pos : m.start()]))
        out.append(m.group())
        pos = m.end()
    out.append(_INLINE_MARKUP.sub("", text[pos:]))
    return "".join(out)
