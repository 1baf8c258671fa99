"""The local knowledge base around the pure logic: files (text, Markdown, HTML, FAQ), the index
cache, the LLM wrapper (FAQ answers and retrieved context), check-config and the kb commands."""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from appliance.agent_config import KnowledgeBaseLocator, RagConfig
from appliance.cli import main
from appliance.config import load_config
from appliance.core import knowledge as kn
from appliance.ports import LlmOutput, TextDelta
from appliance.preflight import check_config
from appliance.runtime.knowledge_base import (
    KnowledgeLLM,
    build_index,
    html_text,
    knowledge_for,
    load_documents,
)

KIOSK = Path(__file__).resolve().parents[2] / "benchmarks" / "data" / "kiosk"


class Events:
    def __init__(self) -> None:
        self.items: list[tuple[str, dict[str, Any]]] = []

    def emit(self, type: str, **fields: Any) -> None:
        self.items.append((type, fields))


class RecordingLlm:
    def __init__(self) -> None:
        self.requests: list[list[dict[str, Any]]] = []

    async def stream_chat(
        self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None, options: Mapping[str, Any]
    ) -> AsyncIterator[LlmOutput]:
        self.requests.append(messages)
        yield TextDelta("From the LLM.")


def kiosk_copy(tmp_path: Path) -> Path:
    shutil.copytree(KIOSK / "docs", tmp_path / "docs")
    shutil.copy(KIOSK / "kiosk.yaml", tmp_path / "kiosk.yaml")
    return tmp_path / "kiosk.yaml"


def docs_of(tmp_path: Path) -> Any:
    return load_documents([KnowledgeBaseLocator(path="docs", id="h")], lambda p: tmp_path / p)


def test_html_keeps_text_and_headings_drops_scripts_and_styles() -> None:
    html = (
        "<html><head><title>T</title><style>p{}</style><script>var x=1;</script></head>"
        "<body><h2>Opening &amp; hours</h2><p>Open <b>10</b> to 6.</p>"
        "<ul><li>A</li><li>B</li></ul></body></html>"
    )
    text = html_text(html)
    assert "# Opening & hours" in text and "Open 10 to 6." in text
    assert "var x" not in text and "p{}" not in text
    assert "A\nB" in text


def test_a_folder_is_read_with_every_kind_of_file(tmp_path: Path) -> None:
    kiosk_copy(tmp_path)
    docs = docs_of(tmp_path)
    assert [d.document_id for d in docs] == [
        "h/events.md", "h/galleries.html", "h/kiosk.faq.yaml", "h/services.txt", "h/visiting.md",
    ]  # fmt: skip
    faq = next(d for d in docs if d.faq)
    assert len(faq.faq) == 10 and faq.faq[0].questions[0] == "What time do you open?"
    galleries = next(d for d in docs if d.path.suffix == ".html")
    assert "Vossberg" in galleries.text and "tracking" not in galleries.text


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("faq: {question: a}", "an FAQ file holds `faq:`"),
        ("faq:\n  - {question: [], answer: x}", "faq[0].question: give a question"),
        ("faq:\n  - {question: q}", "faq[0].answer: give the answer text"),
        ("faq: [", "cannot read the FAQ file"),
    ],
)
def test_a_broken_faq_file_is_named(tmp_path: Path, content: str, problem: str) -> None:
    (tmp_path / "x.faq.yaml").write_text(content)
    with pytest.raises(Exception) as info:
        load_documents([KnowledgeBaseLocator(path="x.faq.yaml")], lambda p: tmp_path / p)
    text = str(info.value)
    assert "knowledge_base[0].path" in text and "x.faq.yaml" in text and problem in text


def test_the_index_is_cached_and_rebuilt_when_a_file_changes(tmp_path: Path) -> None:
    kiosk_copy(tmp_path)
    cache = tmp_path / "cache"
    first = build_index(docs_of(tmp_path), RagConfig(), cache)
    assert first.cache_state == "built" and first.cache_file is not None and first.cache_file.is_file()
    again = build_index(docs_of(tmp_path), RagConfig(), cache)
    assert again.cache_state == "cached" and again.cache_file == first.cache_file
    assert [c.text for c in again.chunks] == [c.text for c in first.chunks]
    visiting = tmp_path / "docs" / "visiting.md"
    visiting.write_text(visiting.read_text().replace("14 euros", "16 euros"))
    changed = build_index(docs_of(tmp_path), RagConfig(), cache)
    assert changed.cache_state == "built" and changed.cache_file != first.cache_file
    assert not first.cache_file.exists()  # the stale index is gone
    hits = changed.retrieve("How much is a family ticket for students?").hits
    assert any("16 euros" in h.chunk.text for h in hits)
    # a corrupt cache file is rebuilt, not trusted
    assert changed.cache_file is not None
    changed.cache_file.write_text("{not json")
    assert build_index(docs_of(tmp_path), RagConfig(), cache).cache_state == "built"


def run_turn(llm: KnowledgeLLM, messages: list[dict[str, Any]]) -> str:
    async def go() -> str:
        return "".join(
            [i.text async for i in llm.stream_chat(messages, None, {}) if isinstance(i, TextDelta)]
        )

    return asyncio.run(go())


def test_an_faq_question_is_answered_as_written_without_the_llm(tmp_path: Path) -> None:
    kiosk_copy(tmp_path)
    index = build_index(docs_of(tmp_path), RagConfig(), None)
    inner, events = RecordingLlm(), Events()
    llm = KnowledgeLLM(inner, index, events)
    system = {"role": "system", "content": "You are a kiosk."}
    reply = run_turn(llm, [system, {"role": "user", "content": "Where are the restrooms?"}])
    assert reply == "Toilets are on every floor, next to the stairs."
    assert inner.requests == []
    [(name, fields)] = events.items
    assert name == "knowledge_retrieved" and fields["faq_used"] is True and fields["chunks"] == []
    assert fields["faq_document_id"] == "h/kiosk.faq.yaml" and fields["faq_score"] == 1.0
    assert fields["ms"] >= 0


def test_other_questions_get_the_retrieved_facts_next_to_the_question_in_that_request_only(
    tmp_path: Path,
) -> None:
    kiosk_copy(tmp_path)
    index = build_index(docs_of(tmp_path), RagConfig(max_retrieved_rag_chunks_count=2), None)
    inner, events = RecordingLlm(), Events()
    llm = KnowledgeLLM(inner, index, events, skip_system="FILLER", guard=False)
    messages = [
        {"role": "system", "content": "You are a kiosk."},
        {"role": "user", "content": "Who carried the Albatross chronometer?"},
    ]
    assert run_turn(llm, messages) == "From the LLM."  # no guard: the reply stands
    [sent] = inner.requests
    assert sent[0] == messages[0] and len(sent) == 2  # the system prompt stays the same (cached)
    facts = "Its treasure is the Albatross chronometer, carried around the world by Captain Ilse Marrow"
    assert sent[1]["content"] == kn.knowledge_question([f"{facts} in 1868."], messages[1]["content"])
    assert "Ilse Marrow" in sent[1]["content"]
    assert messages[1]["content"] == "Who carried the Albatross chronometer?"  # not mutated
    [(name, fields)] = events.items
    assert name == "knowledge_retrieved" and fields["faq_used"] is False
    assert len(fields["chunks"]) == 2 and fields["chunks"][0]["document_id"] == "h/galleries.html"
    assert fields["chunks"][0]["score"] >= fields["chunks"][1]["score"] > 0
    # a tool round and a filler request are passed through without retrieval
    run_turn(llm, [*messages, {"role": "tool", "content": "ok", "tool_call_id": "1"}])
    run_turn(llm, [{"role": "system", "content": "FILLER"}, {"role": "user", "content": "Albatross?"}])
    assert len(events.items) == 1 and inner.requests[1][-1]["content"] == "ok"
    assert inner.requests[2][0]["content"] == "FILLER"


class ScriptedLlm:
    """Streams `pieces`; records the options and whether the stream was closed early."""

    def __init__(self, pieces: list[str]) -> None:
        self.pieces = pieces
        self.options: list[Mapping[str, Any]] = []
        self.streamed = 0
        self.closed = False

    async def stream_chat(
        self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None, options: Mapping[str, Any]
    ) -> AsyncIterator[LlmOutput]:
        self.options.append(options)
        try:
            for piece in self.pieces:
                self.streamed += 1
                yield TextDelta(piece)
        except GeneratorExit:
            self.closed = True
            raise


PARK = [{"role": "system", "content": "You are a kiosk."}, {"role": "user", "content": "Where can I park?"}]
SALTMARKET = "The nearest car park is the Saltmarket car park, 300 metres to the north"


@pytest.mark.parametrize(
    ("pieces", "guard", "spoken", "event"),
    [
        # grounded: the reply streams as the LLM wrote it
        (
            ["Park at", " the Saltmarket", " car park. It is", " near."],
            True,
            "Park at the Saltmarket car park. It is near.",
            None,
        ),
        # an invented place: replaced by the best fact, the LLM stopped
        (
            ["Park in", " the Louvre garage.", " It is", " free."],
            True,
            f"{SALTMARKET}; the museum has no parking of its own.",
            {"verdict": "contradicts", "unsupported": ["louvre"], "action": "replaced"},
        ),
        # nothing of the fact: replaced
        (
            ["I am sorry", " for your loss.", " Bye", " now."],
            True,
            f"{SALTMARKET}; the museum has no parking of its own.",
            {"verdict": "omits", "unsupported": ["300", "saltmarket"], "action": "replaced"},
        ),
        # a later sentence inventing a number ends the reply there
        (
            ["Park at the Saltmarket", " car park.", " It costs 9 euros.", " Bye", " now."],
            True,
            "Park at the Saltmarket car park. ",
            {"verdict": "contradicts", "unsupported": ["9"], "action": "cut"},
        ),
        # the switch off: the invention is spoken
        (["Park in", " the Louvre garage."], False, "Park in the Louvre garage.", None),
    ],
)
def test_the_grounding_guard_replaces_a_reply_that_contradicts_or_omits_the_facts(
    tmp_path: Path, pieces: list[str], guard: bool, spoken: str, event: dict[str, Any] | None
) -> None:
    kiosk_copy(tmp_path)
    index = build_index(docs_of(tmp_path), RagConfig(), None)
    inner, events = ScriptedLlm(pieces), Events()
    llm = KnowledgeLLM(inner, index, events, guard=guard)
    assert run_turn(llm, PARK) == spoken
    assert inner.options == [{"temperature": 0.0}]  # greedy on a knowledge turn
    grounding = [fields for name, fields in events.items if name == "knowledge_grounding"]
    if event is None:
        assert grounding == [] and inner.streamed == len(pieces)
    else:
        [fields] = grounding
        assert {k: fields[k] for k in event} == event
        assert fields["spoken"] == (spoken if event["action"] == "replaced" else None)
        assert inner.closed and inner.streamed < len(pieces)  # the LLM was stopped


@pytest.mark.parametrize(
    ("question", "pieces", "spoken", "event"),
    [
        # nothing retrieved: an invented number is not spoken, the fallback line is
        (
            "Where is the planetarium?",
            ["It is", " 1.5 kilometers", " away.", " Bye."],
            "I do not have that.",
            {"verdict": "invents", "unsupported": ["1", "5"], "action": "replaced"},
        ),
        # nothing retrieved, nothing invented: the reply stands
        ("Where is the planetarium?", ["I do not", " know that."], "I do not know that.", None),
        # a weak match (only "museum"): an invented address is not spoken
        (
            "What is the zip of the museum?",
            ["The museum", " is at 123", " Elm Street.", " Bye."],
            "I do not have that.",
            {"verdict": "invents", "unsupported": ["123", "elm"], "action": "replaced"},  # decided early
        ),
        # the guard off: the invention is spoken
        ("Where is the planetarium?", ["It is 3 km", " away."], "It is 3 km away.", "off"),
    ],
)
def test_a_reply_inventing_facts_nothing_retrieved_covers_is_replaced_by_the_fallback(
    tmp_path: Path, question: str, pieces: list[str], spoken: str, event: dict[str, Any] | str | None
) -> None:
    kiosk_copy(tmp_path)
    index = build_index(docs_of(tmp_path), RagConfig(), None)
    inner, events = ScriptedLlm(pieces), Events()
    llm = KnowledgeLLM(inner, index, events, guard=event != "off", fallback="I do not have that.")
    messages = [{"role": "system", "content": "You are a kiosk."}, {"role": "user", "content": question}]
    assert run_turn(llm, messages) == spoken
    grounding = [fields for name, fields in events.items if name == "knowledge_grounding"]
    if not isinstance(event, dict):
        assert grounding == [] and inner.streamed == len(pieces)
    else:
        [fields] = grounding
        assert {k: fields[k] for k in event} == event and fields["spoken"] == spoken
        assert inner.closed and inner.streamed < len(pieces)  # the LLM was stopped


def test_the_fallback_line_is_configurable_per_language(tmp_path: Path) -> None:
    config = kiosk_copy(tmp_path)
    raw = yaml.safe_load(config.read_text())
    assert (
        load_config(config, log_warnings=False).appliance.local.knowledge_fallback_text("de")
        == (kn.KNOWLEDGE_FALLBACKS["de"])
    )
    raw["appliance"]["local"] = {"knowledge_fallback": {"en": "Ask at the desk.", "de": "Frag am Empfang."}}
    config.write_text(yaml.safe_dump(raw))
    local = load_config(config, log_warnings=False).appliance.local
    assert local.knowledge_fallback_text("de") == "Frag am Empfang."
    assert local.knowledge_fallback_text("fr") == "Ask at the desk."
    raw["appliance"]["local"] = {"knowledge_fallback": ""}
    config.write_text(yaml.safe_dump(raw))
    with pytest.raises(Exception, match=r"appliance\.local\.knowledge_fallback"):
        load_config(config, log_warnings=False)


def test_a_temperature_set_in_the_prompt_is_kept(tmp_path: Path) -> None:
    kiosk_copy(tmp_path)
    index = build_index(docs_of(tmp_path), RagConfig(), None)
    inner = ScriptedLlm(["The Saltmarket car park."])
    llm = KnowledgeLLM(inner, index, Events())

    async def go() -> None:
        async for _ in llm.stream_chat(PARK, None, {"temperature": 0.7}):
            pass

    asyncio.run(go())
    assert inner.options == [{"temperature": 0.7}]


def test_rag_disabled_retrieves_nothing_but_faq_still_answers(tmp_path: Path) -> None:
    kiosk_copy(tmp_path)
    index = build_index(docs_of(tmp_path), RagConfig(enabled=False), None)
    assert index.retrieve("Who carried the Albatross chronometer?").hits == ()
    assert index.retrieve("Where is the toilet?").faq_answer is not None


def write_config(tmp_path: Path, kb: list[dict[str, Any]], **prompt: Any) -> Path:
    cfg = yaml.safe_load((KIOSK / "kiosk.yaml").read_text())
    cfg["conversation_config"]["agent"]["prompt"]["knowledge_base"] = kb
    cfg["conversation_config"]["agent"]["prompt"].update(prompt)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_check_config_names_every_broken_path(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "bad.faq.yaml").write_text("faq: 3")
    path = write_config(
        tmp_path,
        [
            {"path": "missing.md"},
            {"path": "empty"},
            {"path": "bad.faq.yaml"},
            {"name": "cloud doc", "id": "x"},
        ],
    )
    cfg, problems = check_config(path)
    assert cfg is None
    base = "conversation_config.agent.prompt.knowledge_base"
    assert problems[0] == f"{base}[0].path: {tmp_path / 'missing.md'} does not exist"
    assert problems[1].startswith(f"{base}[1].path: {tmp_path / 'empty'} holds no .txt, .md, .html")
    assert problems[2].startswith(f"{base}[2].path: {tmp_path / 'bad.faq.yaml'}: an FAQ file holds")
    assert len(problems) == 3


def test_an_entry_without_a_path_warns_once(tmp_path: Path) -> None:
    path = write_config(tmp_path, [{"type": "file", "name": "cloud doc", "id": "x"}])
    cfg, warnings = check_config(path)
    assert cfg is not None
    assert (
        warnings.count(
            "conversation_config.agent.prompt.knowledge_base[0]: platform document without a local path, "
            "ignored on the device"
        )
        == 1
    )
    assert knowledge_for(cfg, tmp_path / "cache") is None


def test_prompt_mode_documents_go_into_the_system_prompt(tmp_path: Path) -> None:
    from appliance.runtime.local_agent import conversation_settings

    kiosk_copy(tmp_path)
    path = write_config(tmp_path, [{"path": "docs/visiting.md", "name": "Visiting", "usage_mode": "prompt"}])
    cfg = load_config(path, log_warnings=False)
    prompt = conversation_settings(cfg, {}).system_prompt
    assert "## Visiting\n# Visiting the Harbourlight" in prompt and "Saltmarket" in prompt
    index = knowledge_for(cfg, tmp_path / "cache")
    assert index is not None and index.chunks == []  # prompt documents are not retrieved again


def test_a_prompt_mode_document_too_big_for_the_context_is_named(tmp_path: Path) -> None:
    big = tmp_path / "manual.md"
    big.write_text("The clock manual says many things. " * 2000)  # ~70 000 characters
    path = write_config(tmp_path, [{"path": "manual.md", "usage_mode": "prompt"}])
    cfg, problems = check_config(path)
    text = " ".join(problems)
    assert "n_ctx" in text or "n_ctx" in " ".join(cfg.warnings if cfg else [])
    # the line (a problem with the real tokenizer, a warning with the estimate) names the file
    lines = problems if cfg is None else [w for w in (check_config(path)[1]) if "n_ctx" in w]
    assert any(f"{big} " in line and "usage_mode: prompt" in line for line in lines)


def test_kb_list_and_search(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = kiosk_copy(tmp_path)
    cache = str(tmp_path / "cache")
    assert main(["kb", "-c", str(config), "--cache-dir", cache, "list"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("index: built (") and "25 chunks" in out
    assert "harbourlight/kiosk.faq.yaml  [auto]" in out and "10 FAQ entries (threshold 0.62)" in out
    assert main(["kb", "-c", str(config), "--cache-dir", cache, "list"]) == 0
    assert capsys.readouterr().out.startswith("index: cached (")
    assert main(["kb", "-c", str(config), "--cache-dir", cache, "search", "Where can I park my car?"]) == 0
    out = capsys.readouterr().out
    assert "harbourlight/visiting.md#" in out and "Saltmarket" in out
    assert (
        main(["kb", "-c", str(config), "--cache-dir", cache, "search", "--json", "Is there an elevator?"])
        == 0
    )
    fields = json.loads(capsys.readouterr().out)
    assert fields["faq_used"] is True and fields["faq_score"] == 1.0


def test_kb_without_a_knowledge_base(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["kb", "list"]) == 0
    assert "no knowledge base" in capsys.readouterr().out


def test_a_misheard_name_still_retrieves_its_page(tmp_path: Path) -> None:
    kiosk_copy(tmp_path)
    index = build_index(docs_of(tmp_path), RagConfig(max_retrieved_rag_chunks_count=1), None)
    # whisper heard "Vosberg" for "Vossberg": the stems differ, the trigrams nearly match
    found = index.retrieve("When was the Vosberg built?")
    assert "vossb" in found.terms and found.hits[0].chunk.document_id == "h/galleries.html"
    assert "built in 1741" in " ".join(index.facts(found))
    [only] = index.retrieve("Tell me about the Vosberg.").hits  # no other word to find it by
    assert "Vossberg" in only.chunk.text


def test_the_speech_recogniser_gets_the_knowledge_base_names(tmp_path: Path) -> None:
    from appliance.runtime.knowledge_base import VOCABULARY_CHARS, knowledge_vocabulary

    config = load_config(kiosk_copy(tmp_path), log_warnings=False)
    names = knowledge_vocabulary(config)
    assert {"Vossberg", "Cuckoo Gallery", "Harbourlight-Guest"} <= set(names)
    assert len(", ".join(names)) <= VOCABULARY_CHARS
    (tmp_path / "docs" / "services.txt").write_bytes(b"\xff\xfe broken")  # unreadable: no names
    assert knowledge_vocabulary(config) == []
    bare = tmp_path / "bare.yaml"
    bare.write_text("conversation_config: {agent: {prompt: {prompt: hi}}}\nappliance: {mode: local}\n")
    assert knowledge_vocabulary(load_config(bare, log_warnings=False)) == []


class EchoingLlm:
    async def stream_chat(
        self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None, options: Mapping[str, Any]
    ) -> AsyncIterator[LlmOutput]:
        for piece in ("Inform", "ation:", " Captain", " Ilse Marrow."):
            yield TextDelta(piece)


def test_the_label_a_small_model_echoes_is_not_spoken(tmp_path: Path) -> None:
    kiosk_copy(tmp_path)
    index = build_index(docs_of(tmp_path), RagConfig(max_retrieved_rag_chunks_count=2), None)
    llm = KnowledgeLLM(EchoingLlm(), index, Events())
    messages = [{"role": "user", "content": "Who carried the Albatross chronometer?"}]
    assert run_turn(llm, messages) == "Captain Ilse Marrow."
