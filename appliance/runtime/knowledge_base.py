"""The local knowledge base: reading documents, the on-disk index cache, retrieval per turn.

`conversation_config.agent.prompt.knowledge_base` entries with a device-only `path` (a file or a
folder, relative to the configuration file) are read here: `.txt`/`.md` as text, `.html`/`.htm`
through the standard library's `html.parser` (scripts and styles dropped), `*.faq.yaml` as exact
answers. `usage_mode: prompt` documents go whole into the system prompt (`prompt_text`);
`usage_mode: auto` documents are chunked and ranked with BM25 (`appliance.core.knowledge`).

The chunks are cached in `<state dir>/knowledge/<key>.json`, the key a SHA-256 of every file's
content and the chunking parameters: a changed file gives a new key, so the index is rebuilt.

`KnowledgeLLM` wraps the session's LanguageModel: for each user turn it retrieves, emits
`knowledge_retrieved`, and either streams an FAQ answer as written (no LLM call) or puts the
best retrieved sentence next to the question in that request only (the history keeps only the
conversation), with the grounding guard on the reply (`knowledge_grounding`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import yaml

from appliance.agent_config import KnowledgeBaseLocator, RagConfig
from appliance.core import knowledge as kn
from appliance.errors import ConfigError
from appliance.ports import EventSink, LanguageModel, LlmOutput, TextDelta

_LOGGER = logging.getLogger(__name__)

KB_PATH = "conversation_config.agent.prompt.knowledge_base"
TEXT_SUFFIXES = (".txt", ".md", ".markdown", ".text")
HTML_SUFFIXES = (".html", ".htm")
FAQ_SUFFIX = ".faq.yaml"
MAX_FILE_BYTES = 5_000_000
MAX_FILES = 2_000
CACHE_VERSION = 1
MAX_FAQ_ENTRIES = 2_000


class KnowledgeError(ConfigError):
    """A knowledge-base file that cannot be used (names the file)."""


class _Html(HTMLParser):
    _SKIP = frozenset({"script", "style", "head", "noscript", "template"})
    _BLOCK = frozenset(
        {"p", "div", "br", "li", "tr", "section", "article", "table", "ul", "ol", "dd", "dt", "hr"}
    )
    _HEADINGS = frozenset({"h1", "h2", "h3", "h4", "h5", "h6", "title"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.out: list[str] = []
        self._skip = 0
        self._in_heading = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self._SKIP and tag != "head":
            self._skip += 1
        elif tag in self._HEADINGS and tag != "title":
            self.out.append("\n\n# ")
            self._in_heading = True
        elif tag in self._BLOCK:
            self.out.append("\n\n" if tag in ("p", "div", "section", "article", "table") else "\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in self._SKIP and tag != "head":
            self._skip = max(0, self._skip - 1)
        elif tag in self._HEADINGS and tag != "title":
            self.out.append("\n\n")
            self._in_heading = False

    def handle_data(self, data: str) -> None:
        if self._skip:
            return
        self.out.append(" ".join(data.split()) if self._in_heading else data)


def html_text(html: str) -> str:
    """The readable text of an HTML page (headings as Markdown headings)."""
    parser = _Html()
    parser.feed(html)
    parser.close()
    lines = [" ".join(line.split()) for line in "".join(parser.out).splitlines()]
    text = "\n".join(lines)
    while "\n\n\n" in text:
        text = text.replace("\n\n\n", "\n\n")
    return text.strip()


@dataclass(frozen=True)
class Document:
    document_id: str
    name: str
    path: Path
    usage_mode: str
    text: str
    faq: tuple[kn.FaqEntry, ...] = ()
    faq_threshold: float = kn.DEFAULT_FAQ_THRESHOLD


def _files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    if path.is_dir():
        found = sorted(
            p for p in path.rglob("*") if p.is_file() and not p.name.startswith(".") and _kind(p) is not None
        )
        return found[:MAX_FILES]
    return []


def _kind(path: Path) -> str | None:
    name = path.name.lower()
    if name.endswith(FAQ_SUFFIX):
        return "faq"
    if name.endswith(HTML_SUFFIXES):
        return "html"
    if name.endswith(TEXT_SUFFIXES):
        return "text"
    return None


def load_faq(path: Path) -> tuple[kn.FaqEntry, ...]:
    """`faq: [{question: str | [str, ...], answer: str}]`; a KnowledgeError names the entry."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        raise KnowledgeError([f"{path}: cannot read the FAQ file ({type(err).__name__}: {err})"]) from err
    items = data.get("faq") if isinstance(data, dict) else None
    if not isinstance(items, list):
        raise KnowledgeError([f"{path}: an FAQ file holds `faq:` with a list of {{question, answer}}"])
    entries: list[kn.FaqEntry] = []
    for i, item in enumerate(items[:MAX_FAQ_ENTRIES]):
        where = f"{path}: faq[{i}]"
        if not isinstance(item, dict):
            raise KnowledgeError([f"{where}: is not a mapping with question and answer"])
        q, a = item.get("question"), item.get("answer")
        questions = [q] if isinstance(q, str) else q
        if (
            not isinstance(questions, list)
            or not questions
            or not all(isinstance(x, str) and x.strip() for x in questions)
        ):
            raise KnowledgeError([f"{where}.question: give a question or a list of questions"])
        if not isinstance(a, str) or not a.strip():
            raise KnowledgeError([f"{where}.answer: give the answer text"])
        entries.append(kn.FaqEntry(tuple(x.strip() for x in questions), a.strip()))
    return tuple(entries)


def _read(path: Path) -> str:
    try:
        if path.stat().st_size > MAX_FILE_BYTES:
            raise KnowledgeError([f"{path}: larger than {MAX_FILE_BYTES:,} bytes"])
        raw = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise KnowledgeError([f"{path}: cannot read ({type(err).__name__}: {err})"]) from err
    return html_text(raw) if _kind(path) == "html" else raw


def load_documents(locators: Sequence[KnowledgeBaseLocator], resolve: Any) -> list[Document]:
    """Every local document of the knowledge base; KnowledgeError lists every broken path."""
    docs: list[Document] = []
    problems: list[str] = []
    for i, loc in enumerate(locators):
        if loc.path is None:
            continue
        where = f"{KB_PATH}[{i}].path"
        base = Path(resolve(loc.path))
        files = _files(base)
        if not files:
            what = "does not exist" if not base.exists() else "holds no .txt, .md, .html or .faq.yaml file"
            problems.append(f"{where}: {base} {what}")
            continue
        threshold = kn.DEFAULT_FAQ_THRESHOLD if loc.faq_threshold is None else loc.faq_threshold
        for f in files:
            rel = f.name if f == base else str(f.relative_to(base))
            doc_id = f"{loc.id or loc.name or f'kb{i}'}/{rel}" if f != base else (loc.id or loc.name or rel)
            try:
                if _kind(f) == "faq":
                    entries = load_faq(f)
                    text = "\n\n".join(kn.faq_document_text(e) for e in entries)
                    docs.append(
                        Document(doc_id, loc.name or rel, f, loc.usage_mode, text, entries, threshold)
                    )
                elif _kind(f) is None:
                    problems.append(f"{where}: {f} is not a .txt, .md, .html or .faq.yaml file")
                else:
                    docs.append(Document(doc_id, loc.name or rel, f, loc.usage_mode, _read(f)))
            except KnowledgeError as err:
                problems += [f"{where}: {p}" for p in err.problems]
    if problems:
        raise KnowledgeError(problems)
    return docs


def prompt_text(docs: Sequence[Document]) -> str:
    """The `usage_mode: prompt` documents as the block appended to the system prompt."""
    return kn.prompt_documents_text([(d.name, d.text) for d in docs if d.usage_mode == "prompt"])


@dataclass(frozen=True)
class Hit:
    chunk: kn.Chunk
    score: float


@dataclass(frozen=True)
class Retrieval:
    hits: tuple[Hit, ...]
    faq: kn.FaqMatch | None
    faq_answer: str | None
    faq_document: str | None
    ms: float
    terms: tuple[str, ...] = ()
    """The query's terms as ranked: its own, then the known terms its misheard words resemble."""
    question: str = ""

    def event_fields(self) -> dict[str, Any]:
        return {
            "chunks": [
                {"document_id": h.chunk.document_id, "chunk_id": h.chunk.chunk_id, "score": round(h.score, 3)}
                for h in self.hits
            ],
            "faq_used": self.faq_answer is not None,
            "faq_document_id": self.faq_document,
            "faq_score": self.faq.score if self.faq is not None else None,
            "ms": round(self.ms, 2),
        }


@dataclass
class KnowledgeIndex:
    documents: list[Document]
    chunks: list[kn.Chunk]
    terms: list[list[str]]
    cache_file: Path | None
    cache_state: str
    """`built`, `cached` (read from disk), or `memory` (no cache directory)."""
    rag: RagConfig = field(default_factory=RagConfig)
    context_chars: int | None = None
    """What one turn's retrieved text may take (None: `rag.max_documents_length`)."""
    _bm25: kn.Bm25 = field(init=False, repr=False)
    _faqs: list[tuple[Document, kn.FaqMatcher]] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._bm25 = kn.Bm25(self.terms)
        self._faqs = [(d, kn.FaqMatcher(d.faq, self.terms)) for d in self.documents if d.faq]
        words = (w for c in self.chunks for w in kn.words(c.text))
        self._fuzzy = kn.FuzzyTerms(words, (t for doc in self.terms for t in doc))

    def query_terms(self, question: str) -> list[str]:
        """The question's terms, and those of the indexed words its unknown words resemble."""
        own = kn.question_tokens(question)
        return own + [t for t in self._fuzzy.expand(question) if t not in own]

    def retrieve(self, question: str, k: int | None = None) -> Retrieval:
        t0 = time.perf_counter()
        faq: kn.FaqMatch | None = None
        answer: str | None = None
        faq_doc: str | None = None
        for doc, matcher in self._faqs:
            best = matcher.best(question)
            if best is not None and (faq is None or best.score > faq.score):
                faq, faq_doc = best, doc.document_id
                answer = doc.faq[best.entry].answer if best.score >= doc.faq_threshold else None
        if answer is None:
            faq_doc = faq_doc if faq is not None else None
        hits: tuple[Hit, ...] = ()
        terms: list[str] = []
        if answer is None and self.rag.enabled and self.chunks:
            n = self.rag.max_retrieved_rag_chunks_count if k is None else k
            terms = self.query_terms(question)
            ranked = self._bm25.top(terms, n, expand=True)  # with the terms' synonyms
            hits = tuple(Hit(self.chunks[i], s) for i, s in ranked)
        ms = (time.perf_counter() - t0) * 1000
        return Retrieval(hits, faq, answer, faq_doc, ms, tuple(terms), question)

    def facts(self, retrieval: Retrieval) -> list[str]:
        """The retrieved chunks' sentences that share the most terms with the question, best
        first, within the turn's budget (`context_chars`, else `rag.max_documents_length`)."""
        budget = self.context_chars if self.context_chars is not None else self.rag.max_documents_length
        chunks = [h.chunk.text for h in retrieval.hits]
        numbers = kn.expects_number(retrieval.question)
        found = kn.select_sentences(
            chunks,
            retrieval.terms,
            self._bm25.idf,
            budget,
            prefer_numbers=numbers,
            heads=kn.compounds(retrieval.question),
        )
        return found[:MAX_FACTS]

    def coverage(self, retrieval: Retrieval, fact: str) -> float:
        """The share of the question's term weight `fact` holds (a word no chunk has weighs as
        much as the rarest indexed word)."""
        heads = kn.compounds(retrieval.question)
        return kn.coverage(fact, retrieval.terms, self._bm25.idf, self._bm25.max_idf, heads)


def _cache_key(docs: Sequence[Document], chunk_chars: int) -> str:
    h = hashlib.sha256(f"v{CACHE_VERSION}:{chunk_chars}".encode())
    for d in docs:
        if d.usage_mode != "auto":
            continue
        h.update(d.document_id.encode() + b"\0" + d.text.encode() + b"\0")
    return h.hexdigest()[:32]


def build_index(
    docs: list[Document],
    rag: RagConfig | None = None,
    cache_dir: Path | None = None,
    chunk_chars: int = kn.DEFAULT_CHUNK_CHARS,
) -> KnowledgeIndex:
    """Chunk and tokenise the `auto` documents, or read them back from the cache."""
    rag = rag or RagConfig()
    key = _cache_key(docs, chunk_chars)
    cache_file = cache_dir / f"{key}.json" if cache_dir is not None else None
    if cache_file is not None and cache_file.is_file():
        try:
            data = json.loads(cache_file.read_text(encoding="utf-8"))
            chunks = [kn.Chunk(c[0], c[1], c[2]) for c in data["chunks"]]
            return KnowledgeIndex(docs, chunks, data["terms"], cache_file, "cached", rag)
        except (OSError, ValueError, KeyError, IndexError, TypeError) as err:
            _LOGGER.warning("knowledge index cache %s unreadable (%s); rebuilding", cache_file, err)
    chunks = []
    for d in docs:
        if d.usage_mode != "auto":
            continue
        pieces = [kn.faq_document_text(e) for e in d.faq] if d.faq else kn.chunk_text(d.text, chunk_chars)
        chunks += [kn.Chunk(d.document_id, f"{d.document_id}#{j}", t) for j, t in enumerate(pieces)]
    terms = [kn.tokens(c.text) for c in chunks]
    state = "memory"
    if cache_file is not None:
        try:
            cache_file.parent.mkdir(parents=True, exist_ok=True)
            for old in cache_file.parent.glob("*.json"):
                old.unlink(missing_ok=True)  # one index per device: a changed file replaces it
            tmp = cache_file.with_suffix(".tmp")
            payload = {"chunks": [[c.document_id, c.chunk_id, c.text] for c in chunks], "terms": terms}
            tmp.write_text(json.dumps(payload), encoding="utf-8")
            tmp.replace(cache_file)
            state = "built"
        except OSError as err:
            _LOGGER.warning("knowledge index not cached (%s): %s", cache_file, err)
            cache_file = None
    return KnowledgeIndex(docs, chunks, terms, cache_file, state, rag)


def default_cache_dir() -> Path:
    from appliance.paths import state_dir

    return state_dir() / "knowledge"


def knowledge_for(config: Any, cache_dir: Path | None = None) -> KnowledgeIndex | None:
    """The configuration's knowledge base (None when no entry has a local path)."""
    prompt = config.conversation_config.agent.prompt
    if not any(loc.path is not None for loc in prompt.knowledge_base):
        return None
    docs = load_documents(prompt.knowledge_base, config.resolve_path)
    index = build_index(docs, prompt.rag, cache_dir if cache_dir is not None else default_cache_dir())
    index.context_chars = context_budget_chars(config)
    return index


VOCABULARY_CHARS = 150
"""The knowledge base's names given to the speech recogniser (about 55 Whisper tokens): with
whisper tiny.en on the kiosk's 44 spoken questions, 220 characters of names fixed "cookie
gallery" → "Cuckoo Gallery" (3 questions) without raising the word error rate overall (10.0 %
with and without); 400 characters made it slightly worse (10.4 %), and faster-whisper's
`hotwords` worse still (12.9 %)."""


def knowledge_vocabulary(config: Any, max_chars: int = VOCABULARY_CHARS) -> list[str]:
    """The names the configuration's local knowledge base is about, for the speech recogniser
    ([] without a local knowledge base, or when a document cannot be read: `check-config` and
    the session's start name the file)."""
    prompt = config.conversation_config.agent.prompt
    if not any(loc.path is not None for loc in prompt.knowledge_base):
        return []
    try:
        docs = load_documents(prompt.knowledge_base, config.resolve_path)
    except KnowledgeError:
        return []
    return kn.distinctive_terms((d.text for d in docs), max_chars)


MIN_CONTEXT_CHARS = 300


MAX_FACTS = 1
"""How many sentences a turn gives the LLM. With SmolLM2-135M on the 44 heard kiosk questions
(benchmarks/knowledge.py, before the grounding guard): 34 right with 1 sentence, 31 with 2, 30
with all those scoring at least half the best one: the small model tends to answer from
the wrong one of several."""


LOCAL_FACT_CHARS = 400
"""What the retrieved sentences may take per turn with llama.cpp (about 100 prompt tokens to
prefill); on the kiosk set the chosen sentences average ~155 characters, and 29 of its 30 page
questions (typed, not heard) get the sentence holding the answer."""


def context_budget_chars(config: Any) -> int:
    """`rag.max_documents_length`, capped for llama.cpp by LOCAL_FACT_CHARS and by what the
    context leaves next to the history and the reply (n_ctx - history_tokens - reply reserve, at
    3 characters per token)."""
    from appliance.core.history import ESTIMATE_CHARS_PER_TOKEN, MIN_REPLY_TOKENS

    limit = int(config.conversation_config.agent.prompt.rag.max_documents_length)
    if config.llm_backend != "llama_cpp":
        return limit
    llm = config.appliance.local.llm
    room = (llm.n_ctx - llm.history_tokens - MIN_REPLY_TOKENS) * ESTIMATE_CHARS_PER_TOKEN
    return max(MIN_CONTEXT_CHARS, min(limit, LOCAL_FACT_CHARS, int(room)))


def _last_user_text(messages: Sequence[Mapping[str, Any]]) -> str | None:
    if not messages or messages[-1].get("role") != "user":
        return None  # a tool round or a filler: no new question
    content = messages[-1].get("content")
    return content if isinstance(content, str) and content.strip() else None


def _context_text(messages: Sequence[Mapping[str, Any]]) -> str:
    """Everything the conversation so far says (the prompt, the history, the question): a number
    or name from it in a reply is not an invention."""
    return "\n".join(m["content"] for m in messages if isinstance(m.get("content"), str))


class KnowledgeLLM:
    """A LanguageModel that answers FAQ questions itself and gives the LLM the retrieved chunks.

    With `guard` (`appliance.local.knowledge_guard`), a reply that contradicts or omits the
    retrieved facts is replaced by the best fact, and when nothing retrieved covers the question,
    a reply stating a number or name that nothing given to the LLM holds is replaced by
    `fallback` (`appliance.core.knowledge.GroundingGuard`; the event `knowledge_grounding` says
    so). A knowledge turn decodes greedily (temperature 0)
    unless the prompt sets a temperature."""

    def __init__(
        self,
        llm: LanguageModel,
        index: KnowledgeIndex,
        events: EventSink,
        skip_system: str = "",
        guard: bool = True,
        fallback: str = kn.KNOWLEDGE_FALLBACKS["en"],
    ) -> None:
        self._llm = llm
        self._index = index
        self._events = events
        self._skip_system = skip_system
        self._guard = guard
        self._fallback = fallback

    def __getattr__(self, name: str) -> Any:  # close(), prime() ... of the wrapped model
        return getattr(self._llm, name)

    async def stream_chat(
        self,
        messages: list[dict[str, Any]],
        tools: list[dict[str, Any]] | None,
        options: Mapping[str, Any],
    ) -> AsyncIterator[LlmOutput]:
        question = _last_user_text(messages)
        first = messages[0] if messages else {}
        if question is None or (self._skip_system and first.get("content") == self._skip_system):
            async for item in self._llm.stream_chat(messages, tools, options):
                yield item
            return
        found = self._index.retrieve(question)
        self._events.emit("knowledge_retrieved", **found.event_fields())
        if found.faq_answer is not None:
            yield TextDelta(found.faq_answer)
            return
        facts = self._index.facts(found)
        guard = (
            kn.GroundingGuard(
                facts,
                _context_text(messages),
                self._index.coverage(found, facts[0]) if facts else 0.0,
                kn.expects_number(question),
                self._fallback,
            )
            if self._guard
            else None
        )
        if facts:
            # next to the question, in this request only: the history keeps the question as it was
            content = kn.knowledge_question(facts, question)
            messages = [*messages[:-1], {**messages[-1], "content": content}]
            if options.get("temperature") is None:
                options = {**options, "temperature": 0.0}
        echo = kn.EchoStrip()
        stream = self._llm.stream_chat(messages, tools, options)
        try:
            async for item in stream:
                if isinstance(item, TextDelta):
                    text = echo.feed(item.text)
                    if guard is not None:
                        text = guard.feed(text)
                    if text:
                        yield TextDelta(text)
                    if guard is not None and guard.done:
                        break  # replaced or cut: the LLM stops here
                else:
                    held = echo.finish()
                    if guard is not None:  # a tool call: what was held is released unjudged
                        held, guard = guard.release() + held, None
                    if held:
                        yield TextDelta(held)
                    yield item
        finally:
            close = getattr(stream, "aclose", None)
            if close is not None:
                await close()  # the LLM stops (a replaced reply, or the turn cancelled)
        held = "" if guard is not None and guard.done else echo.finish()
        if guard is not None:
            held = guard.feed(held) if held else ""
            held += guard.finish()
            if guard.done:
                verdict = guard.cut or guard.decision
                assert verdict is not None
                self._emit_grounding(verdict, guard.replacement if guard.cut is None else None)
                if guard.cut is None:
                    held = guard.replacement
        if held:
            yield TextDelta(held)

    def _emit_grounding(self, verdict: kn.Grounding, replacement: str | None) -> None:
        self._events.emit(
            "knowledge_grounding",
            verdict=verdict.verdict,
            unsupported=[u[:40] for u in verdict.unsupported[:8]],
            action="replaced" if replacement is not None else "cut",
            spoken=replacement[:300] if replacement is not None else None,
        )


_prompt_cache: dict[tuple[Any, ...], str] = {}


def prompt_block(config: Any) -> str:
    """The `usage_mode: prompt` documents for the system prompt ("" when none); read once per
    change of the files."""
    locs = [
        loc
        for loc in config.conversation_config.agent.prompt.knowledge_base
        if loc.path is not None and loc.usage_mode == "prompt"
    ]
    if not locs:
        return ""
    stamp: list[Any] = []
    for loc in locs:
        for f in _files(Path(config.resolve_path(loc.path))):
            st = f.stat()
            stamp.append((str(f), st.st_size, st.st_mtime_ns))
    key = (tuple((loc.path, loc.name) for loc in locs), tuple(stamp))
    text = _prompt_cache.get(key)
    if text is None:
        text = prompt_text(load_documents(locs, config.resolve_path))
        _prompt_cache.clear()
        _prompt_cache[key] = text
    return f"\n\n{text}" if text else ""


def prompt_documents(config: Any) -> list[Document]:
    """The `usage_mode: prompt` documents (for the context budget's messages)."""
    locs = [
        loc for loc in config.conversation_config.agent.prompt.knowledge_base if loc.usage_mode == "prompt"
    ]
    return [d for d in load_documents(locs, config.resolve_path) if d.usage_mode == "prompt"]
