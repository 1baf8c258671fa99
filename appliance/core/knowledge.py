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
- `distinctive_terms` picks the names a knowledge base is about (for the speech recogniser's
  prompt); `FuzzyTerms` maps a misheard word ("Vosberg", "Albert Ross") to the indexed word it
  resembles (character trigrams), so retrieval survives small mishearings.
- `select_sentences` keeps, from the retrieved chunks, only the sentences that share the most
  (IDF-weighted) terms with the question, within a character budget; `knowledge_question` puts
  them right before the question with a short instruction. A 135M model answers from two
  nearby sentences far more often than from 1 200 characters in its system message, and the
  fewer prompt tokens cost less prefill time.
- `GroundingGuard` (`judge_reply`, `specifics`, `coverage`) judges the streamed reply against
  the retrieved sentence: one that states numbers or names nothing given to the LLM holds, or
  none of the sentence's, is replaced by the sentence itself.
"""

from __future__ import annotations

import itertools
import math
import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
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


QUESTION_FORMS = frozenset({"much", "many", "old", "long", "often", "far"})
"""Words that only shape a question after "how" ("How old is the clock?"): a question's terms
leave them out when ranking chunks and sentences, or "old" ranks "the old harbour" and "much"
ranks every FAQ phrasing that starts with "How much" above the sentence that answers. (FAQ
matching keeps them: "How long does the tour last?" is not "When is the tour?".)"""


def question_tokens(text: str) -> list[str]:
    """`tokens` of a question, without the question-form word after "how" (QUESTION_FORMS)."""
    out: list[str] = []
    previous = ""
    for raw in _WORD.findall(text.lower()):
        form = previous == "how" and raw in QUESTION_FORMS
        previous = raw
        if raw in STOP_WORDS or form:
            continue
        out.append(_stem(raw))
    return out


_EXPANSIONS_TEXT = """
    address: located stands street road quay avenue square lane situated
    cost price pay fee charge: euros free
    restroom toilet wc bathroom lavatory
    child kid
    lift elevator
    photo picture camera
    eat food restaurant: café cafe
    internet wifi: network
"""


def _expansion_table(text: str) -> dict[str, frozenset[str]]:
    """Each line: words meaning the same (every one finds the others), then after ":" words
    that only they find (one way: "cost" finds "euros", "euros" does not find "cost")."""
    table: dict[str, set[str]] = {}
    for line in text.strip().splitlines():
        same, _, more = line.partition(":")
        group = [_stem(w) for w in same.split()]
        extra = [_stem(w) for w in more.split()]
        for word in group:
            table.setdefault(word, set()).update(w for w in group + extra if w != word)
    return {word: frozenset(found) for word, found in table.items()}


EXPANSIONS: dict[str, frozenset[str]] = _expansion_table(_EXPANSIONS_TEXT)
"""What a question's word also finds (stems), for the words venue questions use that venue pages
often say otherwise: "What is the address?" against "The museum stands at 12 Ropewalk Quay",
"How much does a child ticket cost?" against "children ... pay 7 euros". A question's word
counts once per chunk or sentence: as itself, or else as EXPANSION_WEIGHT times its best
expansion there (`Bm25.scores`, `term_weight`); a fact holding an expansion covers the word
(`coverage`)."""


_NOT_MODIFIERS_TEXT = """zero one two three four five six seven eight nine ten first second third last
    next every each all another other such same both more most few several own only no not"""
_NOT_MODIFIERS = QUESTION_FORMS | frozenset(_NOT_MODIFIERS_TEXT.split())
"""Words before a noun that do not make it another thing ("every ticket" is a ticket)."""


def _content_words(text: str) -> list[tuple[str, bool]]:
    """(lowercased word, directly after another word with only spaces between)."""
    out: list[tuple[str, bool]] = []
    end = -1
    for found in _WORD.finditer(text.lower()):
        out.append((found.group(0), end >= 0 and not text[end : found.start()].strip()))
        end = found.end()
    return out


def _modifier(word: str) -> bool:
    return word.isalpha() and word not in STOP_WORDS and word not in _NOT_MODIFIERS


def compounds(question: str) -> dict[str, str]:
    """The question's word pairs, head stem → modifier stem: two adjacent content words with
    nothing but a space between ("child ticket": "ticke" → "child"; "ticket cost": "cost" →
    "ticke", a subject and its verb are paired the same way)."""
    out: dict[str, str] = {}
    for (a, _), (b, joined) in itertools.pairwise(_content_words(question)):
        if joined and _modifier(a) and b.isalpha() and b not in STOP_WORDS:
            out.setdefault(_stem(b), _stem(a))
    return out


def sentence_terms(sentence: str, heads: Mapping[str, str] | None = None) -> set[str]:
    """`tokens` of a sentence, without a question's compound head (`compounds`) that the
    sentence only names with another modifier: asked about the "child ticket", a sentence's
    "family ticket" is another ticket ("ticket" does not count there; "children" still does)."""
    if not heads:
        return set(tokens(sentence))
    out: set[str] = set()
    previous = ""
    for word, joined in _content_words(sentence):
        if word not in STOP_WORDS:
            stem = _stem(word)
            modifier = heads.get(stem)
            if modifier is None or not joined or not _modifier(previous) or _stem(previous) == modifier:
                out.add(stem)
        previous = word
    return out


EXPANSION_WEIGHT = 0.5
"""An expansion is worth this share of its own weight: a sentence holding the question's own
word ("parking") ranks before one holding only a synonym of another ("pay" for "cost")."""


def term_weight(term: str, have: set[str], idf: Callable[[str], float]) -> float:
    """What a question's term is worth in a text with the terms `have`: its weight if the text
    holds it, else EXPANSION_WEIGHT times that of the best of its expansions there (0: none)."""
    if term in have:
        return idf(term)
    group = have & EXPANSIONS.get(term, frozenset())
    return EXPANSION_WEIGHT * max((idf(t) for t in group), default=0.0)


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

    def _term_scores(self, term: str) -> dict[int, float]:
        idf = self._idf.get(term)
        if idf is None:
            return {}
        avg = self._avg or 1.0
        out: dict[int, float] = {}
        for i in self._postings[term]:
            f = self._tf[i][term]
            norm = f * (self.k1 + 1) / (f + self.k1 * (1 - self.b + self.b * self._lengths[i] / avg))
            out[i] = idf * norm
        return out

    def scores(self, query: Iterable[str], expand: bool = False) -> dict[int, float]:
        """Score of every document sharing at least one query term. With `expand`, a term
        also finds documents through its EXPANSIONS: in a document without the term itself,
        it counts as EXPANSION_WEIGHT times its best expansion there (as `term_weight`)."""
        out: dict[int, float] = {}
        for term in set(query):
            best = self._term_scores(term)
            if expand:
                for other in EXPANSIONS.get(term, ()):
                    for i, score in self._term_scores(other).items():
                        if term not in self._tf[i]:
                            best[i] = max(best.get(i, 0.0), EXPANSION_WEIGHT * score)
            for i, score in best.items():
                out[i] = out.get(i, 0.0) + score
        return out

    @property
    def max_idf(self) -> float:
        """The rarest indexed term's inverse document frequency (1.0 for an empty index)."""
        return max(self._idf.values(), default=1.0)

    def idf(self, term: str) -> float:
        """The term's inverse document frequency (0 for a term no document has)."""
        return self._idf.get(term, 0.0)

    def top(self, query: Iterable[str], k: int, expand: bool = False) -> list[tuple[int, float]]:
        """The `k` best documents, best first (ties: the earlier document first)."""
        ranked = sorted(self.scores(query, expand).items(), key=lambda item: (-item[1], item[0]))
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


def prompt_documents_text(documents: Sequence[tuple[str, str]]) -> str:
    """`usage_mode: prompt` documents (name, text) as the block appended to the system prompt."""
    if not documents:
        return ""
    return "\n\n".join(f"## {name}\n{text.strip()}" for name, text in documents)


# ---------------------------------------------------------------------------------------------
# the venue's vocabulary (for the speech recogniser) and tolerance of small mishearings

_NAME_RUN = re.compile(r"[A-Z][\w'’-]*(?:[ \t]+[A-Z][\w'’-]*)*")
_MARKUP_START = re.compile(r"^\s*(?:#{1,6}\s+|[-*+]\s+|\d+[.)]\s+|>\s*)")
_SENTENCE_START = re.compile(r"(?:^|[.!?:;]\s+|\n\s*)$")
_NAME_WORD_CHARS = 40


_COMMON_TEXT = """monday tuesday wednesday thursday friday saturday sunday mondays tuesdays wednesdays
    thursdays fridays saturdays sundays january february march april may june july august
    september october november december english yes no ok"""
_COMMON_NAMES = frozenset(_COMMON_TEXT.split())
"""Capitalised words every recogniser knows already: not worth a place in its prompt."""


def distinctive_terms(texts: Iterable[str], max_chars: int) -> list[str]:
    """The names a knowledge base is about, most frequent first, within `max_chars` (counting
    ", " between terms): runs of capitalised words ("Ropewalk Quay", "Ilse Marrow") and words
    with an inner capital, hyphen or digit ("Harbourlight-Guest"). A single capitalised word
    counts only when it is capitalised inside a sentence somewhere and never written in
    lowercase (so "Tickets" at the head of a line is left out); leading and trailing stop
    words are dropped ("The Cuckoo Gallery" → "Cuckoo Gallery"), and so are weekdays, months
    and other words every recogniser knows."""
    counts: Counter[str] = Counter()
    first_seen: dict[str, int] = {}
    inside: set[str] = set()
    lowercase: set[str] = set()
    for text in texts:
        lowercase.update(w for w in _WORD.findall(text) if w.islower())
        open_sentence = False  # the previous line ended inside a sentence (a wrapped paragraph)
        for line in text.splitlines():
            body = _MARKUP_START.sub("", line)
            continued = open_sentence and body == line
            ends = (".", "!", "?", ":", ";")
            open_sentence = body == line and bool(body.strip()) and not body.rstrip().endswith(ends)
            for found in _NAME_RUN.finditer(body):
                words = found.group(0).split()
                before = body[: found.start()]
                at_start = bool(_SENTENCE_START.search(before)) and not (continued and not before.strip())
                while words and words[0].lower() in STOP_WORDS:
                    words.pop(0)
                    at_start = False
                while words and words[-1].lower() in STOP_WORDS:
                    words.pop()
                words = [w.strip("'’-") for w in words]
                if not words or any(len(w) > _NAME_WORD_CHARS or not w for w in words):
                    continue
                if len(words) == 1 and (len(words[0]) < 3 or words[0].lower() in _COMMON_NAMES):
                    continue
                term = " ".join(words)
                counts[term] += 1
                first_seen.setdefault(term, len(first_seen))
                if not at_start:
                    inside.add(term)

    def kept(term: str) -> bool:
        if " " in term or not (term.isalpha() and term[1:].islower()):
            return True  # a name of several words, or one with an inner capital, digit, hyphen
        return term in inside and term.lower() not in lowercase

    ranked = sorted((t for t in counts if kept(t)), key=lambda t: (-counts[t], first_seen[t]))
    out: list[str] = []
    used = 0
    for term in ranked:
        cost = len(term) + (2 if out else 0)
        if used + cost > max_chars:
            continue
        out.append(term)
        used += cost
    return out


def _trigrams(word: str) -> frozenset[str]:
    padded = f"  {word} "
    return frozenset(padded[i : i + 3] for i in range(len(padded) - 2))


_SOUND_RULES = (
    (re.compile(r"[^a-z]"), ""),
    (re.compile(r"^(?:kn|gn|pn|wr)"), lambda m: m.group(0)[1]),
    (re.compile(r"^x"), "s"),
    (re.compile(r"([a-z])\1+"), r"\1"),  # double letters
    (re.compile(r"ph"), "f"),
    (re.compile(r"tch|ch|sh|ck"), lambda m: {"ch": "k", "tch": "k", "sh": "s", "ck": "k"}[m.group(0)]),
    (re.compile(r"th"), "t"),
    (re.compile(r"c(?=[eiy])"), "s"),
    (re.compile(r"gh(?![aeiou])"), ""),
    (re.compile(r"x"), "ks"),
    (re.compile(r"(?<=.)[aeiouyhw]+"), ""),  # vowels and glides after the first letter
    (re.compile(r"^[aeiouy]"), "a"),
)
_SOUND_SAME = str.maketrans("bcdgqvzjw", "pktkkfsjw")  # voiced and voiceless alike, c and q as k


def sound_key(word: str) -> str:
    """A rough key of how an English word sounds (a small Metaphone-like code): consonants only
    after the first letter, doubles collapsed, "ch"/"ck"/"c"/"q" → k, "ph" → f, voiced and
    voiceless consonants alike (b/p, d/t, g/k, v/f, z/s). "kilometers" → "klmtrs",
    "chronometers" → "krnmtrs", "restrooms" → "rstrms"."""
    key = word.lower()
    for pattern, repl in _SOUND_RULES:
        key = pattern.sub(repl, key)
    key = key.translate(_SOUND_SAME)
    return re.sub(r"([a-z])\1+", r"\1", key)


def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance (insertions, deletions, substitutions)."""
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i]
        for j, cb in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1]


SOUND_DICE = 0.45
"""Below FuzzyTerms' trigram threshold, a word still matches one at least this similar whose
sound key starts the same and differs by at most SOUND_EDITS of its length."""
SOUND_EDITS = 0.3


def sounds_alike(a: str, b: str) -> bool:
    """Same first sound, and sound keys within SOUND_EDITS edits per key letter."""
    ka, kb = sound_key(a), sound_key(b)
    if not ka or not kb or ka[0] != kb[0]:
        return False
    return edit_distance(ka, kb) <= SOUND_EDITS * max(len(ka), len(kb))


class FuzzyTerms:
    """Maps a misheard word to the knowledge base's term it most resembles ("vosberg" →
    the stem of "vossberg", "harbor light" → "harbourlight"): a Dice coefficient of character
    trigrams at or above `threshold`, or at least SOUND_DICE when the words also sound alike
    (`sounds_alike`: "kilometers" → "chronometers"), for words of at least `min_chars` letters
    that are not terms of the index already. Adjacent query words are also tried joined, since
    the recogniser often splits an unknown compound: a pair with an unknown word, or two known
    words with only a space between ("last rooms" → "restrooms")."""

    def __init__(
        self, words: Iterable[str], known: Iterable[str], threshold: float = 0.6, min_chars: int = 5
    ):
        self.threshold = threshold
        self.min_chars = min_chars
        self._known = frozenset(known)
        self._words: dict[str, frozenset[str]] = {}
        self._by_gram: dict[str, list[str]] = {}
        for w in set(words):
            if len(w) < min_chars or w in STOP_WORDS or not w.isalpha():
                continue
            grams = _trigrams(w)
            self._words[w] = grams
            for g in grams:
                self._by_gram.setdefault(g, []).append(w)

    def closest(self, word: str) -> tuple[str, float] | None:
        """The indexed word most like `word` and its similarity (None: none close enough)."""
        grams = _trigrams(word)
        shared: Counter[str] = Counter()
        for g in grams:
            for w in self._by_gram.get(g, ()):
                shared[w] += 1
        best: tuple[str, float] | None = None
        for w, n in shared.items():
            score = 2 * n / (len(grams) + len(self._words[w]))
            close = score >= self.threshold or (score >= SOUND_DICE and sounds_alike(word, w))
            if close and (best is None or score > best[1] or (score == best[1] and w < best[0])):
                best = (w, score)
        return best

    def expand(self, text: str) -> list[str]:
        """The stems of the indexed words that `text`'s unknown words (or pairs of adjacent
        words) were probably meant to be; [] when every word is known."""
        raw = [w for w in _WORD.findall(text.lower()) if w not in STOP_WORDS]
        extra: list[str] = []
        candidates = [(w, 0) for w in raw if len(w) >= self.min_chars and _stem(w) not in self._known]
        candidates += [  # "albert ross" for "albatross": a pair with an unknown word, joined
            (a + b, len(a + b))
            for a, b in itertools.pairwise(raw)
            if _stem(a) not in self._known or _stem(b) not in self._known
        ]
        candidates += [  # "last rooms" for "restrooms": two known words, only a space between
            (a + b, len(a + b))
            for (a, _), (b, joined) in itertools.pairwise(_content_words(text))
            if joined
            and a.isalpha()
            and b.isalpha()
            and a not in STOP_WORDS
            and b not in STOP_WORDS
            and _stem(a) in self._known
            and _stem(b) in self._known
        ]
        for word, whole in candidates:
            found = (word, 1.0) if word in self._words else self.closest(word)
            if found is None or len(found[0]) < 0.8 * whole:  # a pair must match a word as long
                continue
            stem = _stem(found[0])
            if stem not in extra:
                extra.append(stem)
        return extra


# ---------------------------------------------------------------------------------------------
# what the LLM is given: the retrieved chunks' best sentences, next to the question

_ABBREVIATION = re.compile(r"(?:\b[A-Z][a-z]{0,2}|\b[a-z])\.$")
"""A sentence does not end after "Dr.", "St.", "Mr." or "e.g."."""


def sentences(text: str) -> list[str]:
    """`text` cut into sentences and lines ("Heading: " prefixes of a chunk stay a part of the
    first sentence); empty pieces dropped."""
    out: list[str] = []
    for line in text.splitlines():
        pending = ""
        for piece in _SENTENCE_END.split(line.strip()):
            pending = f"{pending} {piece}".strip() if pending else piece.strip()
            if pending and not _ABBREVIATION.search(pending):
                out.append(pending)
                pending = ""
        if pending:
            out.append(pending)
    return [s for s in out if s]


RELATIVE_SCORE = 0.5
"""A sentence is given to the LLM when it scores at least this share of the best sentence."""


def _facts_of(chunk: str) -> list[tuple[str, str]]:
    """A chunk's facts as (text to score, text to give): its sentences, each scored with the
    chunk's section heading too ("Tickets and prices: " for "Children ... pay 7 euros."); an FAQ
    entry (`faq_document_text`) is one fact, its answer, scored with its question phrasings."""
    if chunk.startswith("Q: ") and "\nA: " in chunk:
        answer = chunk.split("\nA: ", 1)[1].strip()
        return [(chunk, answer)] if answer else []
    found = _HEADING_PREFIX.match(chunk)
    heading = found.group(0) if found else ""
    return [(s if s.startswith(heading) else heading + s, s) for s in sentences(chunk)]


_NUMBER_QUESTION = re.compile(
    r"\b(?:when|what time|what year|how (?:much|many|old|long|late|early|often|far|big|heavy|tall))\b",
    re.IGNORECASE,
)
_NUMERIC_FACT = re.compile(r"\d|\b(?:noon|midday|midnight)\b", re.IGNORECASE)


def expects_number(question: str) -> bool:
    """Does the question ask for a number, a time or a date ("When ...?", "How old ...?")?"""
    return bool(_NUMBER_QUESTION.search(question))


def select_sentences(
    chunks: Sequence[str],
    query: Iterable[str],
    idf: Callable[[str], float],
    max_chars: int,
    relative: float = RELATIVE_SCORE,
    prefer_numbers: bool = False,
    heads: Mapping[str, str] | None = None,
) -> list[str]:
    """The sentences of the retrieved `chunks` (best chunk first) that share the most
    (IDF-weighted) query terms, best first: those scoring at least `relative` times the best
    one, within `max_chars` (a sentence that would overflow is left out; the best one is cut
    at a word if it alone is too long). When no sentence shares a term, the first sentence of
    the best chunk. An FAQ chunk ("Q: ... A: ...") gives its answer only, scored with its
    questions (a misheard question that missed the exact-answer threshold still finds it).
    With `prefer_numbers` (`expects_number`), of sentences scoring the same, one stating a
    number or a time of day comes first ("How old is the tower clock?": the sentence with
    "built in 1741" before the one about winding the same clock). A query term counts once,
    as the best of itself and its EXPANSIONS the sentence holds; `heads` (`compounds` of the
    question) leave out a compound's head named with another modifier (`sentence_terms`)."""
    terms = set(query)
    scored: list[tuple[float, int, str]] = []
    seen: set[str] = set()
    position = 0
    for chunk in chunks:
        for scored_text, sentence in _facts_of(chunk):
            if sentence in seen:
                continue
            seen.add(sentence)
            have = sentence_terms(scored_text, heads)
            score = sum(term_weight(t, have, idf) for t in terms)
            scored.append((score, position, sentence))
            position += 1
    if not scored:
        return []

    def numeric(sentence: str) -> int:
        return 0 if prefer_numbers and _NUMERIC_FACT.search(sentence) else 1

    ranked = sorted(scored, key=lambda s: (-s[0], numeric(s[2]), s[1]))
    if ranked[0][0] <= 0:
        ranked = ranked[:1]
    floor = ranked[0][0] * relative
    out: list[str] = []
    used = 0
    for score, _, sentence in ranked:
        if out and score < floor:
            break
        if any(sentence in o or o in sentence for o in out):
            continue  # an FAQ answer that repeats a page's sentence
        cost = len(sentence) + (1 if out else 0)
        if used + cost > max_chars:
            if not out:
                cut = sentence.rfind(" ", 0, max_chars)
                out.append(sentence[: cut if cut > 0 else max_chars])
                break
            continue
        out.append(sentence)
        used += cost
    return out


KNOWLEDGE_LABEL = "Information:"
KNOWLEDGE_INSTRUCTION = "Answer using the information."


def knowledge_question(facts: Sequence[str], question: str) -> str:
    """The user's turn as the LLM sees it with retrieved facts: the question, the facts, a short
    instruction (no facts: the question unchanged). Measured with SmolLM2-135M on the 44 heard
    kiosk questions, one fact each, with the grounding guard: this shape 38 right (typed: 40),
    "Information: ... / Question: ... / Answer using the information." 37 (38), the same asking
    for "one sentence that repeats the information" 36, and with a one-line worked example
    before it 34 (the model copies the example)."""
    if not facts:
        return question
    return f"Question: {question}\n{KNOWLEDGE_LABEL} {' '.join(facts)}\n{KNOWLEDGE_INSTRUCTION}"


class EchoStrip:
    """Drops `label` when a streamed reply starts with it (a small model often begins by
    repeating "Information:" before the fact): `feed` each piece, then `finish`. Holds back at
    most len(label) characters, only while the reply could still be the label."""

    def __init__(self, label: str = KNOWLEDGE_LABEL) -> None:
        self._label = label.lower()
        self._pending = ""
        self._done = False
        self._trim = False  # the label was dropped: so is the space after it

    def feed(self, text: str) -> str:
        if self._done:
            if self._trim:
                text = text.lstrip()
                self._trim = not text
            return text
        self._pending += text
        head = self._pending.lstrip()
        if len(head) < len(self._label) and self._label.startswith(head.lower()):
            return ""  # still possibly the label
        self._done = True
        if head.lower().startswith(self._label):
            head = head[len(self._label) :].lstrip()
            self._trim = not head
        self._pending = ""
        return head

    def finish(self) -> str:
        """What is still held back (the reply ended inside a possible label)."""
        rest, self._pending, self._done = self._pending, "", True
        return "" if rest.strip().lower() == self._label else rest


def words(text: str) -> list[str]:
    """Every word of `text`, lowercased (stop words included, nothing stemmed)."""
    return _WORD.findall(text.lower())


# ---------------------------------------------------------------------------------------------
# the grounding guard: a reply that contradicts or omits the retrieved facts is replaced by them

_UNITS_TEXT = """zero one two three four five six seven eight nine ten eleven twelve thirteen
    fourteen fifteen sixteen seventeen eighteen nineteen"""
_TENS_TEXT = "twenty thirty forty fifty sixty seventy eighty ninety"
_ORDINALS_TEXT = "first second third fourth fifth sixth seventh eighth ninth tenth eleventh twelfth"
_UNITS, _TENS, _ORDINALS = _UNITS_TEXT.split(), _TENS_TEXT.split(), _ORDINALS_TEXT.split()
NUMBER_WORDS: dict[str, int] = {
    **{w: i for i, w in enumerate(_UNITS) if w != "one"},  # "one" is a pronoun too ("the one who")
    **{w: 20 + 10 * i for i, w in enumerate(_TENS)},
    **{w: i + 1 for i, w in enumerate(_ORDINALS)},
    "hundred": 100,
    "thousand": 1000,
    "noon": 12,
    "midday": 12,
}
"""Spoken numbers a reply may use for a fact's digits ("fourteen" for 14, "second" for 2nd)."""

_SPECIFIC = re.compile(r"\d+|[^\W\d_]+(?:['’][^\W\d_]+)?", re.UNICODE)
_CLAUSE_START = re.compile(r"(?:^|[.!?:;\"“(]\s*|\n\s*)$")
_NOT_NAMES = frozenset(
    {"i", "i'm", "i’m", "i'll", "i've", "i'd", "ok", "yes", "no", "dr", "mr", "mrs", "ms", "prof", "st"}
)


@dataclass(frozen=True)
class Specifics:
    """What a text states that can be checked against the facts: its numbers (digits and
    number words, "thirty-five" = 35) and its names (words capitalised inside a sentence)."""

    numbers: frozenset[int]
    names: frozenset[str]

    def __bool__(self) -> bool:
        return bool(self.numbers or self.names)


def specifics(text: str) -> Specifics:
    """The numbers and names `text` states (names lowercased, a possessive 's dropped)."""
    numbers: set[int] = set()
    names: set[str] = set()
    tens: int | None = None  # "thirty" waiting for a "five"
    for found in _SPECIFIC.finditer(text):
        word = found.group(0)
        low = word.lower()
        if word.isdigit():
            numbers.add(int(word))
            tens = None
            continue
        value = NUMBER_WORDS.get(low)
        if value is not None:
            if tens is not None and value < 10 and text[found.start() - 1] in " -":
                numbers.discard(tens)
                value += tens
            numbers.add(value)
            tens = value if low in _TENS else None
            continue
        tens = None
        capitalised = word[0].isupper() and low not in _NOT_NAMES and low not in STOP_WORDS
        if capitalised and not _CLAUSE_START.search(text[: found.start()]):
            names.add(re.sub(r"['’]s$", "", low))
    return Specifics(frozenset(numbers), frozenset(names))


GROUNDING_COVERAGE = 0.5
"""The guard judges a reply only when the best fact holds at least this share of the question's
(IDF-weighted) terms: below it the facts may not answer the question at all, and the LLM's "I do
not know" must stand."""
GROUNDING_MIN_WORDS = 4
"""The guard decides on the reply's first sentence of at least this many words (or the whole
reply, or GROUNDING_MAX_CHARS of it)."""
GROUNDING_MAX_CHARS = 200


def coverage(
    fact: str,
    query: Iterable[str],
    idf: Callable[[str], float],
    unknown: float,
    heads: Mapping[str, str] | None = None,
) -> float:
    """The share (0..1) of the query terms' weight that `fact` holds (a term counts as held when
    the fact holds it or one of its EXPANSIONS; `heads` as for `sentence_terms`); a term no
    document has weighs `unknown` (a misheard or off-topic word lowers the coverage)."""
    terms = set(query)
    have = sentence_terms(fact, heads)
    total = sum(idf(t) or unknown for t in terms)
    held = [t for t in terms if have & (EXPANSIONS.get(t, frozenset()) | {t})]
    return sum(idf(t) or unknown for t in held) / total if total > 0 else 0.0


KNOWLEDGE_FALLBACKS: dict[str, str] = {
    "en": "Sorry, I don't have that information.",
    "de": "Entschuldigung, diese Information habe ich nicht.",
    "fr": "Désolé, je n'ai pas cette information.",
    "es": "Lo siento, no tengo esa información.",
    "it": "Mi dispiace, non ho questa informazione.",
    "pt": "Desculpe, não tenho essa informação.",
    "nl": "Sorry, die informatie heb ik niet.",
}
"""What the device says instead of a reply that invents a number or name when retrieval found
nothing covering the question (`appliance.local.knowledge_fallback` overrides it)."""


def fallback_text(language: str, configured: dict[str, str] | None = None) -> str:
    """The fallback line for `language` ("pt-br" falls back to "pt", then to English)."""
    table = configured if configured else KNOWLEDGE_FALLBACKS
    code = language.lower().replace("_", "-")
    for key in (code, code.split("-")[0], "en"):
        if key in table:
            return table[key]
    return next(iter(table.values()), KNOWLEDGE_FALLBACKS["en"])


@dataclass(frozen=True)
class Grounding:
    """The guard's decision on a reply: `grounded`, `contradicts` (it states numbers or names
    that neither the facts nor the question nor the prompt hold), `omits` (the best fact states
    numbers or names, and the reply none of them), or `not_judged` (the facts cover the
    question, and there is nothing in them to check). When the facts do not cover the question
    (or there are none), only inventions are judged: `invents` (the reply states numbers or
    names nothing given to the LLM holds) or `supported` (it states none)."""

    verdict: str
    unsupported: tuple[str, ...] = ()

    @property
    def replaced(self) -> bool:
        return self.verdict in ("contradicts", "omits", "invents")

    @property
    def passes(self) -> bool:
        """The reply may be spoken (so far)."""
        return self.verdict in ("grounded", "supported", "not_judged")


def judge_reply(
    reply: str, facts: Sequence[str], context: str, covered: float, wants_number: bool = False
) -> Grounding:
    """Is `reply` grounded in `facts` (best first)? `context` is everything else the LLM was
    given (the question, the system prompt): a number or name from it is supported too.
    `covered` is `coverage` of the best fact. When the question asks for a number
    (`wants_number`, see `expects_number`) and the best fact states numbers, the reply must
    state one of them (a name of the fact is not enough). Facts with no number and no name
    are judged by their own words: the reply must share one (stemmed) that the conversation
    does not hold ("free", "desk" for "Wheelchairs can be borrowed for free at the front desk."
    asked "Can I borrow a wheelchair?")."""
    if not facts or covered < GROUNDING_COVERAGE:
        invented = _invented(reply, facts, context)
        return Grounding("invents", invented) if invented else Grounding("supported")
    given = specifics(" ".join(facts))
    best = specifics(facts[0])
    if not given:  # nothing to contradict: the reply must say something of the fact's own
        answer = set(tokens(spoken_fact(facts[0]))) - set(tokens(context))
        if not answer:
            return Grounding("not_judged")
        if answer & set(tokens(reply)):
            return Grounding("grounded")
        return Grounding("omits", tuple(sorted(answer)))
    said = specifics(reply)
    invented = _invented(reply, facts, context)
    if invented:
        return Grounding("contradicts", invented)
    if wants_number and best.numbers and not said.numbers & best.numbers:
        return Grounding("omits", tuple(str(n) for n in sorted(best.numbers)))
    if best and not (said.numbers & best.numbers or best.names & set(words(reply))):
        return Grounding("omits", tuple([str(n) for n in sorted(best.numbers)] + sorted(best.names)))
    return Grounding("grounded")


def _invented(reply: str, facts: Sequence[str], context: str) -> tuple[str, ...]:
    """The numbers and names `reply` states that neither the facts nor the context hold."""
    said = specifics(reply)
    if not said:
        return ()
    given = f"{' '.join(facts)}\n{context}"
    known = specifics(given)
    context_words = set(words(given))
    numbers = sorted(said.numbers - known.numbers)
    names = sorted(n for n in said.names - known.names if n not in context_words)
    return tuple([str(n) for n in numbers] + names)


_HEADING_PREFIX = re.compile(r"^[^.!?:\n]{1,80}:\s+(?=[A-Z0-9])")


def spoken_fact(fact: str) -> str:
    """A fact as the device speaks it instead of a reply: without a chunk's "Heading: " prefix."""
    return _HEADING_PREFIX.sub("", fact, count=1).strip() or fact


class GroundingGuard:
    """Holds back the start of a streamed reply until it can be judged (`judge_reply`): as soon
    as its complete words state a number or name of the best fact (grounded) or one that nothing
    given to the LLM holds (contradicts); else at the end of its first sentence of at least
    GROUNDING_MIN_WORDS words, GROUNDING_MAX_CHARS characters, or the reply. Facts that are not
    judged (weak coverage, nothing checkable) hold nothing. `feed` each piece and speak what it
    returns; when `decision` says the reply is replaced, stop the LLM and speak `replacement`
    instead. After a `grounded` start, the rest is released sentence by sentence once complete,
    and one that states a number or name the facts, the question and the prompt do not hold
    ends the reply (`cut`: nothing more is spoken).

    When the facts do not cover the question (coverage below GROUNDING_COVERAGE, or no facts at
    all), each sentence is held until complete and only checked for inventions: the first one
    stating a number or name that nothing given to the LLM holds replaces the reply with
    `fallback` (an honest "I don't have that information"), or ends it there when an earlier
    sentence was already spoken."""

    def __init__(
        self,
        facts: Sequence[str],
        context: str,
        covered: float,
        wants_number: bool = False,
        fallback: str = KNOWLEDGE_FALLBACKS["en"],
    ) -> None:
        self._facts = list(facts)
        self._context = context
        self._covered = covered
        self._wants_number = wants_number
        self._fallback = fallback
        self._held = ""
        self.decision: Grounding | None = None
        self.cut: Grounding | None = None
        if self._judge("").verdict == "not_judged":  # uncheckable facts: nothing is held
            self.decision = Grounding("not_judged")

    @property
    def replacement(self) -> str:
        """What is spoken instead of a replaced reply: the best fact, or the fallback line for a
        reply that invents when the facts do not cover the question."""
        if not self._facts or (self.decision is not None and self.decision.verdict == "invents"):
            return self._fallback
        return spoken_fact(self._facts[0])

    @property
    def done(self) -> bool:
        """Nothing more of the LLM's reply will be spoken (replaced or cut): stop it."""
        return self.cut is not None or (self.decision is not None and self.decision.replaced)

    def _judge(self, text: str) -> Grounding:
        return judge_reply(text, self._facts, self._context, self._covered, self._wants_number)

    def _ends(self) -> Iterator[re.Match[str]]:
        """The held text's sentence ends (not after "Dr." or "e.g.")."""
        for found in _SENTENCE_END.finditer(self._held):
            if not _ABBREVIATION.search(self._held[: found.start()]):
                yield found

    def _first_end(self) -> int:
        """Where the held text can first be judged (its first long-enough sentence), or -1."""
        for found in self._ends():
            if len(_WORD.findall(self._held[: found.start()])) >= GROUNDING_MIN_WORDS:
                return found.start()
        return len(self._held) if len(self._held) >= GROUNDING_MAX_CHARS else -1

    def _later(self, final: bool) -> str:
        """The complete later sentences held (all the rest when `final`), each checked."""
        if self._passing():
            out, self._held = self._held, ""
            return out
        out = ""
        while self._held and not self.done:
            found = None if final else next(self._ends(), None)
            if found is not None:
                end = found.end()
            elif final:
                end = len(self._held)
            elif len(self._held) > GROUNDING_MAX_CHARS:  # a run-on sentence: checked in pieces
                end = self._held.rfind(" ", 0, GROUNDING_MAX_CHARS) + 1 or GROUNDING_MAX_CHARS
            else:
                break
            sentence, rest = self._held[:end], self._held[end:]
            verdict = self._judge(sentence)
            if verdict.verdict in ("contradicts", "invents"):
                self.cut = verdict
                self._held = ""
                break
            out += sentence
            self._held = rest
        return out

    def feed(self, text: str) -> str:
        """What of the reply may be spoken now ("" while held, or once replaced or cut)."""
        if self.done:
            return ""
        self._held += text
        if self.decision is None:
            end = self._first_end()
            if end < 0:
                # complete words only ("1" may become "14"): a fact's number or name already
                # said (grounded), or an invented one (contradicts), decides before the end
                words_end = max(self._held.rfind(" "), self._held.rfind("\n"))
                early = self._judge(self._held[:words_end]) if words_end > 0 else None
                if early is None or early.verdict in ("omits", "supported"):
                    return ""  # an omission, or a later invention, is only known later
                end = words_end
            self.decision = self._judge(self._held[:end])
            if self.decision.replaced:
                self._held = ""
                return ""
            first, self._held = self._held[:end], self._held[end:]
            return first + self._later(final=False)
        return self._later(final=False)

    def _passing(self) -> bool:
        """Not judged: the rest streams through unchecked."""
        return self.decision is not None and self.decision.verdict == "not_judged"

    def release(self) -> str:
        """Everything held, unjudged (the reply turned into a tool call); the guard is spent."""
        out, self._held = self._held, ""
        if self.decision is None:
            self.decision = Grounding("not_judged")
        return "" if self.done else out

    def finish(self) -> str:
        """The rest of the reply at its end (judged now if it was never long enough)."""
        if self.done:
            return ""
        if self.decision is None:
            rest, self._held = self._held, ""
            self.decision = self._judge(rest)
            return "" if self.decision.replaced else rest
        return self._later(final=True)
