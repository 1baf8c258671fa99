"""Knowledge-base benchmarks (issue 13): a museum kiosk asked 44 spoken questions.

The venue is `benchmarks/data/kiosk/` (four pages in Markdown, HTML and text, an FAQ file) and
`questions.yaml` (each question with the fact a right answer contains). Every question is spoken
by a synthesized voice (piper joe; every fourth by espeak-ng), transcribed by faster-whisper
tiny.en with the knowledge base's names in its prompt (as a kiosk session loads it), then
answered the way a session answers it (`KnowledgeLLM` around the default SmolLM2, temperature
0): an FAQ answer as written, or the LLM with the retrieved chunks' best sentences next to the
question. The baseline asks SmolLM2 the same transcripts with the same kiosk prompt and no
knowledge base.

- `kb.accuracy`: right answers with and without the knowledge base, FAQ vs RAG answers.
- `kb.misses`: every wrong answer, with the transcript, what was retrieved and the reply.
- `kb.retrieval`: retrieval per turn (ms) on the kiosk and on a 200-page venue; indexing time
  of 200 pages (cold, and from the cache); the index's memory.
- `kb.latency`: transcript → first reply text (ms; the LLM's time to first token plus
  retrieval) with and without the knowledge base, per kind of answer. STT and TTS are the same
  in both, so the difference is what end-of-speech → first audio gains or loses.
- `kb.unknown`: questions the pages do not answer (`unanswerable.yaml`, typed): how many replies
  state a number or name found nowhere in the pages, the prompt or the question, with the
  grounding guard and without it.
- `kb.session`: end of speech → first audio (`turn_metrics`) in the real appliance loop, in real
  time with speculation on (the default), 8 page questions: with the knowledge base and its
  grounding guard, without the guard, and without the knowledge base.
"""

from __future__ import annotations

import asyncio
import functools
import random
import statistics
import tempfile
import time
import tracemalloc
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from benchmarks.idle_loop import REPO_ROOT

Row = dict[str, Any]

KIOSK = REPO_ROOT / "benchmarks" / "data" / "kiosk"
QUICK_QUESTIONS = 4  # two FAQ, two RAG
ESPEAK_EVERY = 4
LLM_OPTIONS = {"temperature": 0.0, "max_tokens": 60}


def _questions(quick: bool) -> list[dict[str, Any]]:
    qs: list[dict[str, Any]] = yaml.safe_load((KIOSK / "questions.yaml").read_text())["questions"]
    if quick:
        faq = [q for q in qs if q["kind"] == "faq"][:2]
        rag = [q for q in qs if q["kind"] == "rag"][:2]
        return faq + rag
    return qs


def _config() -> Any:
    from appliance.config import load_config

    return load_config(KIOSK / "kiosk.yaml", log_warnings=False)


def _index(cache_dir: Path | None = None) -> Any:
    from appliance.runtime.knowledge_base import knowledge_for

    index = knowledge_for(_config(), cache_dir)
    assert index is not None
    return index


def _system_prompt() -> str:
    from appliance.runtime.local_agent import conversation_settings

    return conversation_settings(_config(), {}).system_prompt


def right(answer: str, facts: list[str]) -> bool:
    low = " ".join(answer.lower().split())
    return any(f.lower() in low for f in facts)


class _Events:
    def __init__(self) -> None:
        self.items: list[dict[str, Any]] = []

    def emit(self, type: str, **fields: Any) -> None:
        self.items.append({"type": type, **fields})


@dataclass
class Answer:
    question: str
    kind: str
    voice: str
    transcript: str
    facts: list[str]
    with_kb: str = ""
    without_kb: str = ""
    faq_used: bool = False
    retrieved: list[str] = field(default_factory=list)
    retrieval_ms: float = 0.0
    grounding: str = ""
    """The grounding guard's action and verdict ("replaced: omits"), "" when the reply stood."""
    first_text_kb_s: float = 0.0
    first_text_plain_s: float = 0.0


async def _ask(llm: Any, messages: list[dict[str, Any]]) -> tuple[str, float]:
    t0 = time.perf_counter()
    first: float | None = None
    parts: list[str] = []
    from appliance.ports import TextDelta

    async for item in llm.stream_chat(messages, None, LLM_OPTIONS):
        if isinstance(item, TextDelta) and item.text:
            if first is None:
                first = time.perf_counter() - t0
            parts.append(item.text)
    return "".join(parts).strip(), first if first is not None else time.perf_counter() - t0


def answers(quick: bool) -> Iterator[Answer]:
    """Each question spoken, transcribed and answered with and without the knowledge base."""
    from appliance.runtime.knowledge_base import KnowledgeLLM
    from appliance.runtime.local_agent import speech_recognizer
    from appliance.testing.speech import espeak_say, piper_say
    from benchmarks.local_agent import _preloaded

    models = _preloaded().local_models
    system = _system_prompt()
    stt = speech_recognizer(_config())  # the kiosk's names in its prompt, as a kiosk loads it
    with tempfile.TemporaryDirectory() as tmp:
        index = _index(Path(tmp))
    for i, q in enumerate(_questions(quick)):
        voice = "espeak-ng en-us" if i % ESPEAK_EVERY == ESPEAK_EVERY - 1 else "piper joe"
        audio = espeak_say(q["q"]) if voice.startswith("espeak") else piper_say(q["q"])
        pad = np.zeros(4000, dtype=np.int16)
        transcript, _ = stt.transcribe(np.concatenate([pad, audio, pad]), "en")
        events = _Events()
        kb_llm = KnowledgeLLM(models.llm, index, events)
        messages = [{"role": "system", "content": system}, {"role": "user", "content": transcript}]
        a = Answer(q["q"], q["kind"], voice, transcript.strip(), [str(f) for f in q["fact"]])
        a.with_kb, a.first_text_kb_s = asyncio.run(_ask(kb_llm, messages))
        a.without_kb, a.first_text_plain_s = asyncio.run(_ask(models.llm, messages))
        found = events.items[0] if events.items else {}
        guard = [e for e in events.items if e["type"] == "knowledge_grounding"]
        a.grounding = f"{guard[0]['action']}: {guard[0]['verdict']}" if guard else ""
        a.faq_used = bool(found.get("faq_used"))
        a.retrieved = [c["chunk_id"] for c in found.get("chunks", [])]
        a.retrieval_ms = float(found.get("ms", 0.0))
        yield a


@functools.cache
def _run(quick: bool) -> tuple[Answer, ...]:
    return tuple(answers(quick))


def accuracy_table(quick: bool = False) -> list[Row]:
    """Kiosk answers containing the right fact, with and without the knowledge base (SmolLM2-135M)"""
    answers = _run(quick)
    rows: list[Row] = []

    def row(name: str, group: list[Answer], with_kb: bool) -> Row:
        ok = sum(right(a.with_kb if with_kb else a.without_kb, a.facts) for a in group)
        return {
            "answers": name,
            "questions": len(group),
            "right": ok,
            "%": round(100 * ok / len(group), 1) if group else None,
        }

    faq_used = [a for a in answers if a.faq_used]
    rag = [a for a in answers if not a.faq_used]
    rows.append(row("with KB: all", list(answers), True))
    rows.append(row("with KB: FAQ answer spoken as written", faq_used, True))
    rows.append(row("with KB: LLM + retrieved chunks", rag, True))
    rows.append(row("with KB: questions meant for the FAQ", [a for a in answers if a.kind == "faq"], True))
    rows.append(row("with KB: questions meant for the pages", [a for a in answers if a.kind == "rag"], True))
    rows.append(row("with KB: espeak-ng voice", [a for a in answers if a.voice.startswith("espeak")], True))
    rows.append(row("without KB (baseline): all", list(answers), False))
    guarded = [a for a in rag if a.grounding]
    rows.append(row("with KB: LLM reply replaced/cut by the grounding guard", guarded, True))
    invents = [a for a in rag if a.grounding.endswith("invents")]
    rows.append(row("with KB: invented facts withheld (fallback line or cut)", invents, True))
    retrieved_ok = sum(1 for a in rag if a.retrieved)
    rows.append(
        {
            "answers": "LLM turns with ≥ 1 chunk retrieved",
            "questions": len(rag),
            "right": retrieved_ok,
            "%": round(100 * retrieved_ok / len(rag), 1) if rag else None,
        }
    )
    return rows


def misses_table(quick: bool = False) -> list[Row]:
    """Wrong answers with the knowledge base: transcript, retrieval and reply"""
    return [
        {
            "question": a.question,
            "voice": a.voice,
            "heard": a.transcript,
            "fact": " | ".join(a.facts),
            "faq": a.faq_used,
            "retrieved": ", ".join(c.split("/")[-1] for c in a.retrieved),
            "reply": a.with_kb[:120],
            "guard": a.grounding,
        }
        for a in _run(quick)
        if not right(a.with_kb, a.facts)
    ]


def latency_table(quick: bool = False) -> list[Row]:
    """Transcript → first reply text (ms): with the knowledge base vs without (same transcripts)"""
    answers = _run(quick)
    rows: list[Row] = []
    for name, group in (
        ("FAQ answers", [a for a in answers if a.faq_used]),
        ("LLM + retrieved chunks", [a for a in answers if not a.faq_used]),
        ("all", list(answers)),
    ):
        if not group:
            continue
        kb = [a.first_text_kb_s * 1000 for a in group]
        plain = [a.first_text_plain_s * 1000 for a in group]
        ret = [a.retrieval_ms for a in group]
        rows.append(
            {
                "turns": name,
                "n": len(group),
                "with KB p50": round(statistics.median(kb), 1),
                "without p50": round(statistics.median(plain), 1),
                "Δ p50": round(statistics.median(kb) - statistics.median(plain), 1),
                "retrieval p50": round(statistics.median(ret), 3),
                "with KB max": round(max(kb), 1),
                "without max": round(max(plain), 1),
            }
        )
    return rows


def _venue_text() -> str:
    from appliance.runtime.knowledge_base import load_documents

    return "\n".join(
        d.text
        for d in load_documents(
            _config().conversation_config.agent.prompt.knowledge_base, _config().resolve_path
        )
    )


def unknown_table(quick: bool = False) -> list[Row]:
    """Questions the pages do not answer: replies stating numbers or names nothing holds"""
    from appliance.core import knowledge as kn
    from appliance.runtime.knowledge_base import KnowledgeLLM
    from benchmarks.local_agent import _preloaded

    qs: list[str] = yaml.safe_load((KIOSK / "unanswerable.yaml").read_text())["questions"]
    qs = qs[:3] if quick else qs
    models = _preloaded().local_models
    system = _system_prompt()
    venue = _venue_text()
    with tempfile.TemporaryDirectory() as tmp:
        index = _index(Path(tmp))
    rows: list[Row] = []
    for guard in (False, True):
        invented = fallback = 0
        first: list[float] = []
        for q in qs:
            events = _Events()
            llm = KnowledgeLLM(models.llm, index, events, guard=guard)
            messages = [{"role": "system", "content": system}, {"role": "user", "content": q}]
            reply, first_s = asyncio.run(_ask(llm, messages))
            first.append(first_s * 1000)
            # the same test the guard makes, against everything the venue's pages say
            if kn.judge_reply(reply, [venue], f"{system}\n{q}", 0.0).verdict == "invents":
                invented += 1
            fallback += any(e.get("verdict") == "invents" for e in events.items)
        rows.append(
            {
                "guard": guard,
                "questions": len(qs),
                "replies inventing a number or name": invented,
                "withheld by the guard": fallback,
                "first text p50 ms": round(statistics.median(first), 1),
            }
        )
    return rows


# ---------------------------------------------------------------------------------------------
# end to end: the appliance loop with the kiosk configuration, with and without the knowledge base

SESSION_QUESTIONS = 8  # RAG questions, every fourth of the set (FAQ answers need no LLM)


def _kiosk_run_config(with_kb: bool, speculate: bool, guard: bool = True) -> Any:
    from appliance.config import load_config_text

    raw = yaml.safe_load((KIOSK / "kiosk.yaml").read_text())
    if not with_kb:
        del raw["conversation_config"]["agent"]["prompt"]["knowledge_base"]
    raw["conversation_config"].setdefault("turn", {})["soft_timeout_config"] = {"timeout_seconds": -1}
    raw["appliance"]["vad"] = {"speculate_after_s": 0.2 if speculate else None}
    raw["appliance"]["local"] = {"knowledge_guard": guard}
    return load_config_text(
        yaml.safe_dump(raw), str(KIOSK / "kiosk.yaml"), base_dir=KIOSK, log_warnings=False
    )


SESSION_VARIANTS = (  # (speculation, knowledge base, grounding guard); speculation is the default
    (True, True, True),
    (True, True, False),
    (True, False, False),
)


@dataclass
class SessionTurn:
    question: str
    variant: tuple[bool, bool, bool]
    metrics: dict[str, Any]
    reply: str
    errors: int


def session_turns(quick: bool) -> list[SessionTurn]:
    """Each question spoken after the wake word into the real appliance loop in real time
    (default models; speculation needs the pause to last), per SESSION_VARIANTS."""
    from benchmarks.common import _errors, _preloaded, _wake_and_ask, run_appliance

    rag = [q["q"] for q in _questions(False) if q["kind"] == "rag"]
    questions = rag[:: max(1, len(rag) // SESSION_QUESTIONS)][: 2 if quick else SESSION_QUESTIONS]
    out: list[SessionTurn] = []
    for variant in SESSION_VARIANTS:
        config = _kiosk_run_config(*variant)
        for question in questions:
            events = run_appliance(config, _preloaded(), _wake_and_ask(question, 2.0), realtime=True)
            metrics = [e for e in events if e["type"] == "turn_metrics"]
            replies = [e["agent_response"] for e in events if e["type"] == "agent_response"]
            out.append(
                SessionTurn(
                    question,
                    variant,
                    metrics[0] if metrics else {},
                    replies[0] if replies else "",
                    _errors(events),
                )
            )
    return out


def session_table(quick: bool = False) -> list[Row]:
    """End of speech → first audio (s), appliance loop in real time, with and without the KB"""
    turns = session_turns(quick)
    rows: list[Row] = []
    for variant in SESSION_VARIANTS:
        group = [t for t in turns if t.variant == variant]
        eos = [t.metrics["end_of_speech_to_first_audio_s"] for t in group if t.metrics]
        llm = [t.metrics["llm_first_token_s"] for t in group if t.metrics.get("llm_first_token_s")]
        rows.append(
            {
                "speculation": variant[0],
                "knowledge base": variant[1],
                "guard": variant[2] if variant[1] else None,
                "turns": len(group),
                "measured": len(eos),
                "eos→audio p50 s": round(statistics.median(eos), 3) if eos else None,
                "eos→audio max s": round(max(eos), 3) if eos else None,
                "LLM text p50 s": round(statistics.median(llm), 3) if llm else None,
                "errors": sum(t.errors for t in group),
            }
        )
    return rows


# ---------------------------------------------------------------------------------------------
# retrieval and indexing at scale

_WORD_TEXT = (
    "clock gear spring pendulum brass chime dial hand bell tower river bridge garden hall stair "
    "window lamp ticket guide room floor map shop café bench rope sail harbour lighthouse anchor "
    "compass star moon winter summer market bread cheese apple wine glass paper ink pen book"
)
_WORDS = _WORD_TEXT.split()


def synthetic_pages(n: int, seed: int = 7) -> list[str]:
    """`n` pages of about 3 000 characters (a printed page), Markdown with sections."""
    rnd = random.Random(seed)
    pages = []
    for p in range(n):
        parts = [f"# Page {p}: the {rnd.choice(_WORDS)} {rnd.choice(_WORDS)}"]
        for s in range(4):
            parts.append(f"## Section {s} about the {rnd.choice(_WORDS)}")
            for _ in range(2):
                words = [rnd.choice(_WORDS) for _ in range(55)]
                parts.append(
                    " ".join(words).capitalize() + f". Room {p}-{s} opens at {rnd.randint(7, 11)} am."
                )
        pages.append("\n\n".join(parts))
    return pages


def _retrieval_ms(index: Any, questions: list[str], repeats: int) -> tuple[list[float], list[float]]:
    """Per turn: wall ms, and this thread's CPU ms (under `pi-class` the CPU quota can pause the
    process for most of a 100 ms period in the middle of a turn's retrieval: the wall time then
    shows the quota's period, the CPU time what retrieval costs)."""
    wall, cpu = [], []
    for _ in range(repeats):
        for q in questions:
            t0, c0 = time.perf_counter(), time.thread_time()
            found = index.retrieve(q)
            index.facts(found)
            wall.append((time.perf_counter() - t0) * 1000)
            cpu.append((time.thread_time() - c0) * 1000)
    return wall, cpu


def retrieval_table(quick: bool = False) -> list[Row]:
    """Retrieval per turn (ms) and indexing time: the kiosk, and a 200-page venue"""
    from appliance.agent_config import KnowledgeBaseLocator, RagConfig
    from appliance.runtime.knowledge_base import build_index, load_documents

    questions = [q["q"] for q in _questions(False)]
    repeats = 2 if quick else 20
    pages_n = 20 if quick else 200
    rows: list[Row] = []
    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(tmp) / "cache"
        t0 = time.perf_counter()
        kiosk = _index(cache)
        build_s = time.perf_counter() - t0
        ms, cpu = _retrieval_ms(kiosk, questions, repeats)
        rows.append(_row("kiosk (5 files, FAQ)", len(kiosk.chunks), build_s, None, ms, cpu, None))
        folder = Path(tmp) / "pages"
        folder.mkdir()
        for i, page in enumerate(synthetic_pages(pages_n)):
            (folder / f"page{i:03}.md").write_text(page)
        shutil_faq = (KIOSK / "docs" / "kiosk.faq.yaml").read_text()
        (folder / "kiosk.faq.yaml").write_text(shutil_faq)
        locs = [KnowledgeBaseLocator(path=str(folder), id="big")]
        tracemalloc.start()
        t0 = time.perf_counter()
        docs = load_documents(locs, Path)
        big = build_index(docs, RagConfig(max_retrieved_rag_chunks_count=3), cache)
        cold_s = time.perf_counter() - t0
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        t0 = time.perf_counter()
        again = build_index(load_documents(locs, Path), RagConfig(max_retrieved_rag_chunks_count=3), cache)
        cached_s = time.perf_counter() - t0
        assert again.cache_state == "cached"
        ms, cpu = _retrieval_ms(big, questions, max(1, repeats // 4))
        rows.append(_row(f"{pages_n} pages + FAQ", len(big.chunks), cold_s, cached_s, ms, cpu, peak / 2**20))
    return rows


def _row(
    name: str,
    chunks: int,
    build_s: float,
    cached_s: float | None,
    ms: list[float],
    cpu: list[float],
    mib: float | None,
) -> Row:
    ordered = sorted(ms)
    return {
        "knowledge base": name,
        "chunks": chunks,
        "index s (cold)": round(build_s, 3),
        "index s (cached)": round(cached_s, 3) if cached_s is not None else None,
        "retrieval p50 ms": round(statistics.median(ms), 3),
        "p95 ms": round(ordered[int(0.95 * (len(ordered) - 1))], 3),
        "max ms": round(max(ms), 3),
        "≤ 50 ms": max(ms) <= 50,
        "CPU p50 ms": round(statistics.median(cpu), 3),
        "CPU max ms": round(max(cpu), 3),
        "index MiB (peak)": round(mib, 1) if mib is not None else None,
    }


BENCHMARKS: dict[str, Callable[[bool], list[Row]]] = {
    "kb.retrieval": retrieval_table,
    "kb.accuracy": accuracy_table,
    "kb.misses": misses_table,
    "kb.latency": latency_table,
    "kb.unknown": unknown_table,
    "kb.session": session_table,
}


def main() -> int:
    """`python -m benchmarks.knowledge [--quick]`: one line per question as it is answered."""
    import sys

    quick = "--quick" in sys.argv
    for a in answers(quick):
        print(
            f"{a.kind} {'FAQ' if a.faq_used else 'rag'} kb={right(a.with_kb, a.facts)} "
            f"plain={right(a.without_kb, a.facts)} ttft_kb={a.first_text_kb_s:.2f} "
            f"ttft_plain={a.first_text_plain_s:.2f} ret_ms={a.retrieval_ms:.2f} | {a.voice} | "
            f"{a.question} | heard: {a.transcript} | kb: {a.with_kb[:100]!r} | plain: {a.without_kb[:60]!r} "
            f"| {a.retrieved} | guard: {a.grounding or '-'}",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
