"""A local knowledge base: chunking, BM25 ranking, exact FAQ answers, prompt assembly. Pure.

The platform's `prompt.knowledge_base` documents are retrieved by a hosted embedding model
(seed digest §5.7); on the device retrieval is lexical (Okapi BM25): no model to load, a few
milliseconds per turn on a Pi, and exact on the words a kiosk is asked about (names, prices,
opening hours). Everything here is deterministic and takes plain values; the file reading and
the on-disk cache live in `appliance.runtime.knowledge_base`.

- `chunk_text` splits a document into paragraphs packed up to `max_chars` (a paragraph longer
  than that is cut at sentence ends, then at spaces); every chunk of a Markdown section starts
  with its heading, so "Opening hours" stays findable in the chunk that lists the hours.
- `tokens` lowercases, keeps word characters, drops English stop words and strips a few
  suffixes (plural `s`, `ing`, `ed`) so "tickets"/"ticket" and "opening"/"open" match.
- `Bm25` is Okapi BM25 (k1=1.2, b=0.75) over those tokens; scores are not normalised (0 = no
  shared word).
- `FaqMatcher.match` scores a question against every phrasing of every FAQ entry by an
  IDF-weighted Dice coefficient of their token sets (0..1; 1 = the same content words) and
  returns the best entry at or above the threshold.
- `knowledge_prompt` is the text added to one turn's system message: the retrieved chunks,
  most relevant first, within `max_chars`.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

DEFAULT_CHUNK_CHARS = 600
DEFAULT_FAQ_THRESHOLD = 0.62
STEM_CHARS = 5
"""Words are cut to their first 5 letters after the suffixes: photos/photography, children/child."""

_STOP_TEXT = """a an the and or but if of to in on at by for with from as is are was were be been being am
    do does did doing have has had having i me my we our you your he she it its they them their
    this that these those there here what which who whom whose when where why how can could would
    should will shall may might must please tell know about any some just so than then too very
    also into out up down over again get got let us s t don isn aren"""
STOP_WORDS = frozenset(_STOP_TEXT.split())

_WORD = re.compile(r"[^\W_]+", re.UNICODE)
_HEADING = re.compile(r"^\s{0,3}#{1,6}\s+(.+?)\s*#*\s*$")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def _stem(word: str) -> str:
    if len(word) > 5 and word.endswith("ing"):
        word = word[:-3]
    elif len(word) > 4 and word.endswith("ed"):
        word = word[:-2]
    elif len(word) > 4 and word.endswith("ies"):
        word = word[:-3] + "y"
    if len(word) > 3 and word.endswith("s") and not word.endswith("ss"):
        word = word[:-1]
    return word[:STEM_CHARS]


def tokens(text: str) -> list[str]:
    """The content words of `text`, lowercased and lightly stemmed, in order."""
    out: list[str] = []
    for raw in _WORD.findall(text.lower()):
        if raw in STOP_WORDS:
            continue
        out.append(_stem(raw))
    return out


@dataclass(frozen=True)
class Chunk:
    document_id: str
    chunk_id: str
    text: str


def _split_long(paragraph: str, max_chars: int) -> list[str]:
    pieces: list[str] = []
    current = ""
    for sentence in _SENTENCE_END.split(paragraph):
        while len(sentence) > max_chars:  # one sentence longer than a chunk: cut at a space
            cut = sentence.rfind(" ", 0, max_chars)
            cut = cut if cut > max_chars // 2 else max_chars
            if current:
                pieces.append(current)
                current = ""
            pieces.append(sentence[:cut].strip())
            sentence = sentence[cut:].strip()
        if current and len(current) + 1 + len(sentence) > max_chars:
            pieces.append(current)
            current = sentence
        else:
            current = f"{current} {sentence}".strip()
    if current:
        pieces.append(current)
    return [p for p in pieces if p]


def chunk_text(text: str, max_chars: int = DEFAULT_CHUNK_CHARS) -> list[str]:
    """`text` as chunks of at most about `max_chars` characters (plus the section heading)."""
    if max_chars < 50:
        raise ValueError(f"max_chars {max_chars} is too small (at least 50)")
    sections: list[tuple[str, list[str]]] = [("", [])]
    paragraph: list[str] = []

    def end_paragraph() -> None:
        if paragraph:
            sections[-1][1].append(" ".join(paragraph))
            paragraph.clear()

    for line in text.splitlines():
        found = _HEADING.match(line)
        if found:
            end_paragraph()
            sections.append((found.group(1).strip(), []))
        elif not line.strip():
            end_paragraph()
        else:
            paragraph.append(line.strip())
    end_paragraph()
    chunks: list[str] = []
    for heading, paragraphs in sections:
        prefix = f"{heading}: " if heading else ""
        budget = max(50, max_chars - len(prefix))
        current = ""
        for para in paragraphs:
            for piece in _split_long(para, budget) if len(para) > budget else [para]:
                if current and len(current) + 1 + len(piece) > budget:
                    chunks.append(prefix + current)
                    current = piece
                else:
                    current = f"{current}\n{piece}".strip()
        if current:
            chunks.append(prefix + current)
    return chunks


@dataclass
class Bm25:
    """Okapi BM25 over token lists (documents = chunks)."""

    docs: Sequence[Sequence[str]]
    k1: float = 1.2
    b: float = 0.75
    _tf: list[Counter[str]] = field(init=False, repr=False)
    _idf: dict[str, float] = field(init=False, repr=False)
    _postings: dict[str, list[int]] = field(init=False, repr=False)
    _lengths: list[int] = field(init=False, repr=False)
    _avg: float = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._tf = [Counter(d) for d in self.docs]
        self._lengths = [len(d) for d in self.docs]
        n = len(self.docs)
        self._avg = (sum(self._lengths) / n) if n else 0.0
        df: Counter[str] = Counter()
        self._postings = {}
        for i, tf in enumerate(self._tf):
            for term in tf:
                df[term] += 1
                self._postings.setdefault(term, []).append(i)
        self._idf = {t: math.log(1 + (n - f + 0.5) / (f + 0.5)) for t, f in df.items()}

    def scores(self, query: Iterable[str]) -> dict[int, float]:
        """Score of every document sharing at least one query term."""
        out: dict[int, float] = {}
        avg = self._avg or 1.0
        for term in set(query):
            idf = self._idf.get(term)
            if idf is None:
                continue
            for i in self._postings[term]:
                f = self._tf[i][term]
                norm = f * (self.k1 + 1) / (f + self.k1 * (1 - self.b + self.b * self._lengths[i] / avg))
                out[i] = out.get(i, 0.0) + idf * norm
        return out

    def top(self, query: Iterable[str], k: int) -> list[tuple[int, float]]:
        """The `k` best documents, best first (ties: the earlier document first)."""
        ranked = sorted(self.scores(query).items(), key=lambda item: (-item[1], item[0]))
        return ranked[: max(0, k)]


@dataclass(frozen=True)
class FaqEntry:
    questions: tuple[str, ...]
    answer: str


@dataclass(frozen=True)
class FaqMatch:
    entry: int
    question: str
    score: float


class FaqMatcher:
    """Exact answers: the FAQ entry whose phrasing shares the most (IDF-weighted) content words."""

    def __init__(self, entries: Sequence[FaqEntry], corpus: Sequence[Sequence[str]] = ()) -> None:
        self.entries = list(entries)
        self._phrasings = [
            (i, q, frozenset(tokens(q))) for i, e in enumerate(self.entries) for q in e.questions
        ]
        # word weights: rare words (in the FAQ and the documents) count more than common ones
        docs = [p[2] for p in self._phrasings] + [frozenset(d) for d in corpus]
        df: Counter[str] = Counter(t for d in docs for t in d)
        n = len(docs)
        self._idf = {t: math.log(1 + n / f) for t, f in df.items()}
        self._unknown = math.log(1 + n) if n else 1.0

    def _w(self, terms: Iterable[str]) -> float:
        return sum(self._idf.get(t, self._unknown) for t in terms)

    def score(self, query_terms: frozenset[str], phrasing: frozenset[str]) -> float:
        if not query_terms or not phrasing:
            return 0.0
        return self._w(query_terms & phrasing) / self._w(query_terms | phrasing)

    def best(self, question: str) -> FaqMatch | None:
        """The best-scoring phrasing, whatever its score (None: no FAQ or no content word)."""
        terms = frozenset(tokens(question))
        best: FaqMatch | None = None
        for i, q, phrasing in self._phrasings:
            s = self.score(terms, phrasing)
            if s > 0 and (best is None or s > best.score):
                best = FaqMatch(i, q, round(s, 4))
        return best

    def match(self, question: str, threshold: float) -> FaqMatch | None:
        best = self.best(question)
        return best if best is not None and best.score >= threshold else None


def faq_document_text(entry: FaqEntry) -> str:
    """An FAQ entry as a retrievable document (when no exact match was close enough)."""
    return f"Q: {' / '.join(entry.questions)}\nA: {entry.answer}"


KNOWLEDGE_HEADER = (
    "Use the following information from the knowledge base to answer the user's question. "
    "If it does not contain the answer, say you do not know."
)


def knowledge_prompt(chunks: Sequence[str], max_chars: int) -> str:
    """The retrieved chunks (best first) as one block for the system message, within `max_chars`
    (a chunk that would overflow is cut at a word; "" when nothing was retrieved)."""
    parts: list[str] = []
    used = 0
    for text in chunks:
        room = max_chars - used
        if room <= 20:
            break
        if len(text) > room:
            cut = text.rfind(" ", 0, room)
            text = text[: cut if cut > 0 else room]
        parts.append(text)
        used += len(text)
    if not parts:
        return ""
    body = "\n\n".join(parts)
    return f"{KNOWLEDGE_HEADER}\n\n{body}"


def prompt_documents_text(documents: Sequence[tuple[str, str]]) -> str:
    """`usage_mode: prompt` documents (name, text) as the block appended to the system prompt."""
    if not documents:
        return ""
    return "\n\n".join(f"## {name}\n{text.strip()}" for name, text in documents)
