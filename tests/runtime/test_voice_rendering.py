"""Voice rendering in the local agent, with fakes: the prompt block, label → voice and speed,
pronunciation dictionaries from the config, per-language voices, and a whole session streaming a
tagged reply into per-voice segments (with interruption truncation per segment)."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from appliance.config import Config, load_config_text
from appliance.core.conversation import ConversationSettings
from appliance.core.endpointing import UtteranceEnded
from appliance.core.pronunciation import parse_pls
from appliance.errors import ConfigError
from appliance.ports import LlmOutput, Pcm16, TextDelta
from appliance.runtime.local_agent import conversation_settings
from appliance.runtime.local_session import LocalAgentDeps, LocalAgentSession
from appliance.runtime.timers import Timers
from appliance.runtime.voice_rendering import (
    LabelVoice,
    VoiceRenderer,
    label_voices,
    language_voice,
    load_lexicon,
)
from appliance.testing.fakes import FixedClock, FixedStt, RecordingEvents, until

PLS = """<?xml version="1.0" encoding="UTF-8"?>
<lexicon version="1.0" xmlns="http://www.w3.org/2005/01/pronunciation-lexicon" alphabet="ipa">
  <lexeme><grapheme>UN</grapheme><alias>United Nations</alias></lexeme>
  <lexeme><grapheme>Zorblax</grapheme><phoneme>bəˈnænə</phoneme></lexeme>
</lexicon>
"""


def config(tts: dict[str, Any], tmp_path: Path | None = None, **extra: Any) -> Config:
    raw: dict[str, Any] = {
        "conversation_config": {"agent": {"prompt": {"prompt": "Tell stories."}}, "tts": tts, **extra},
        "appliance": {
            "local": {
                "voices": {
                    "joe": {"model": "piper-en_US-joe-medium"},
                    "joe_slow": {"model": "piper-en_US-joe-medium", "speed": 0.8},
                    "pepe": {"model": "piper-en_US-joe-medium", "language": "es"},
                    "jacques": {"model": "piper-en_US-joe-medium", "language": "fr"},
                }
            }
        },
    }
    base = tmp_path if tmp_path is not None else Path.cwd()
    return load_config_text(yaml.safe_dump(raw), str(base / "config.yaml"), base_dir=base, log_warnings=False)


# ------------------------------------------------------------------------------ the prompt block
def test_system_prompt_block_is_the_platforms_word_for_word() -> None:
    cfg = config(
        {
            "supported_voices": [
                {"label": "Joe", "voice_id": "joe", "description": "Whenever Joe is speaking"},
                {"label": "Spanish", "voice_id": "pepe", "description": "For any Spanish words or phrases"},
                {"label": "Narrator", "voice_id": "joe_slow", "description": "For narrative descriptions"},
            ]
        }
    )
    settings = conversation_settings(cfg, {})
    assert settings.system_prompt == (
        "Tell stories.\n"
        "\n"
        "When a message should be spoken by a particular person, use markup: "
        '"<CHARACTER>message</CHARACTER>" where CHARACTER is the character label.\n'
        "\n"
        "Available voices are as follows:\n"
        "- default: any text outside of the CHARACTER tags\n"
        "- Joe: Whenever Joe is speaking\n"
        "- Spanish: For any Spanish words or phrases\n"
        "- Narrator: For narrative descriptions"
    )
    assert settings.voice_labels == {"Joe", "Spanish", "Narrator"}


def test_no_voices_no_block() -> None:
    settings = conversation_settings(config({}), {})
    assert settings.system_prompt == "Tell stories."
    assert settings.voice_labels == frozenset()


def test_a_voice_without_description_is_listed_by_label() -> None:
    cfg = config({"supported_voices": [{"label": "Joe", "voice_id": "joe"}]})
    assert conversation_settings(cfg, {}).system_prompt.endswith(
        "- default: any text outside of the CHARACTER tags\n- Joe"
    )


# ------------------------------------------------------------------------------ labels, languages
def test_label_voices_resolve_local_voices_and_speeds() -> None:
    cfg = config(
        {
            "supported_voices": [
                {"label": "Joe", "voice_id": "joe", "speed": 1.2},
                {"label": "Ghost", "voice_id": "eleven_cloud_voice_id"},
                {"label": "Spanish", "voice_id": "pepe", "language": "es"},
            ]
        }
    )
    assert label_voices(cfg) == {
        "Joe": LabelVoice("Joe", "joe", 1.2),
        "Ghost": LabelVoice("Ghost", None, 1.0),  # not a local voice: the default voice speaks
        "Spanish": LabelVoice("Spanish", "pepe", 1.0, "es"),
    }


def test_unknown_voice_id_is_warned_once_at_load(caplog: pytest.LogCaptureFixture) -> None:
    raw = {
        "conversation_config": {"tts": {"supported_voices": [{"label": "Ghost", "voice_id": "cloud_id"}]}},
    }
    with caplog.at_level(logging.WARNING):
        load_config_text(yaml.safe_dump(raw), "config.yaml")
    lines = [r.getMessage() for r in caplog.records if "cloud_id" in r.getMessage()]
    assert len(lines) == 1 and "the default voice 'joe' is used" in lines[0]


def test_language_voice_prefers_preset_then_supported_voice_then_local_voice() -> None:
    cfg = config(
        {"supported_voices": [{"label": "Spanish", "voice_id": "joe_slow", "language": "es"}]},
        language_presets={"fr": {"overrides": {"tts": {"voice_id": "joe_slow"}}}},
    )
    assert language_voice(cfg, "fr") == "joe_slow"  # the preset's voice beats the French local voice
    assert language_voice(cfg, "es") == "joe_slow"  # the supported voice beats the Spanish local voice
    assert language_voice(cfg, "en") == "joe"
    assert language_voice(cfg, "de") is None  # keep the current voice
    plain = config({})
    assert language_voice(plain, "es") == "pepe"
    assert language_voice(plain, "fr") == "jacques"


# ------------------------------------------------------------------------------ dictionaries
def test_dictionaries_load_relative_to_the_config_in_order(tmp_path: Path) -> None:
    (tmp_path / "words.pls").write_text(PLS, encoding="utf-8")
    (tmp_path / "more.pls").write_text(
        PLS.replace("United Nations", "U N").replace("Zorblax", "Qux"), encoding="utf-8"
    )
    cfg = config(
        {
            "pronunciation_dictionary_locators": [
                {"pronunciation_dictionary_id": "cloud_only"},
                {"pronunciation_dictionary_id": "abc", "path": "words.pls"},
                {"path": "more.pls"},
            ]
        },
        tmp_path,
    )
    lexicon = load_lexicon(cfg)
    assert lexicon is not None
    assert lexicon.for_voice(None).apply("UN Zorblax Qux") == "United Nations [[ bənˈænə ]] [[ bənˈænə ]]"
    assert load_lexicon(config({})) is None


def test_broken_dictionary_is_a_config_error_naming_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "words.pls").write_text(PLS.replace("</alias>", "</alia>"), encoding="utf-8")
    cfg = config(
        {"pronunciation_dictionary_locators": [{"path": "words.pls"}, {"path": "gone.pls"}]}, tmp_path
    )
    with pytest.raises(ConfigError) as caught:
        load_lexicon(cfg)
    assert caught.value.problems[0].startswith(
        f"{tmp_path / 'words.pls'}:3: not well-formed XML: mismatched tag"
    )
    assert caught.value.problems[1].startswith(f"{tmp_path / 'gone.pls'}: cannot read")
    assert str(tmp_path / "config.yaml") in str(caught.value)


# ------------------------------------------------------------------------------ the renderer
@dataclass(frozen=True)
class Spec:
    name: str
    speed: float = 1.0


class FakeTts:
    """Records calls; 50 ms of audio per word; Piper-like `voices` and `phoneme_symbols`."""

    rate = 16000

    def __init__(self, names: tuple[str, ...] = ("joe", "joe_slow")) -> None:
        self.voices: dict[str, Spec] = {n: Spec(n, 0.8 if n == "joe_slow" else 1.0) for n in names}
        self.calls: list[tuple[str, str, float]] = []

    def synthesize(self, text: str, voice: str, speed: float) -> tuple[Pcm16, int]:
        self.calls.append((text, voice, speed))
        return np.ones(int(0.05 * self.rate) * len(text.split()), dtype=np.int16), self.rate

    def phoneme_symbols(self, voice: str) -> tuple[frozenset[str], str]:
        return frozenset("bənæˈ "), "en-us"


class PlainTts:
    """A TTS with no named Piper voices (another engine)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, float]] = []

    def synthesize(self, text: str, voice: str, speed: float) -> tuple[Pcm16, int]:
        self.calls.append((text, voice, speed))
        return np.zeros(160, dtype=np.int16), 16000


def test_renderer_picks_voice_speed_and_pronunciation() -> None:
    tts = FakeTts()
    renderer = VoiceRenderer(
        tts,
        {
            "Joe": LabelVoice("Joe", "joe"),
            "Slow": LabelVoice("Slow", "joe_slow", speed=0.7),
            "Ghost": LabelVoice("Ghost", None, speed=1.2),
        },
        parse_pls(PLS, "w.pls"),
    )
    renderer.synthesize("The UN", None, "joe", 1.1)
    renderer.synthesize("Zorblax!", "Joe", "joe", 1.1)
    renderer.synthesize("slowly", "Slow", "joe", 0.7)
    renderer.synthesize("boo", "Ghost", "joe_slow", 1.0)  # unknown voice id: the current default voice
    renderer.synthesize("hi", "Nobody", "joe", 1.0)  # not a label: the default voice
    assert tts.calls == [
        ("The United Nations", "joe", 1.1),
        ("[[ bənˈænə ]]!", "joe", 1.1),
        ("slowly", "joe_slow@0.7", 0.7),
        ("boo", "joe_slow@1.2", 1.0),
        ("hi", "joe", 1.0),
    ]
    # the variants: same model, speed = voice speed × label speed (× the agent speed at synthesis)
    assert tts.voices["joe_slow@0.7"] == Spec("joe_slow@0.7", pytest.approx(0.8 * 0.7))
    assert tts.voices["joe_slow@1.2"] == Spec("joe_slow@1.2", pytest.approx(0.8 * 1.2))


def test_renderer_without_piper_voices_clamps_the_product(caplog: pytest.LogCaptureFixture) -> None:
    tts = PlainTts()
    renderer = VoiceRenderer(tts, {"Fast": LabelVoice("Fast", "x", speed=1.2)})
    with caplog.at_level(logging.WARNING):
        renderer.synthesize("a", "Fast", "x", 1.0)
        renderer.synthesize("b", "Fast", "x", 1.2)
        renderer.synthesize("c", "Fast", "x", 1.2)
    assert tts.calls == [("a", "x", 1.2), ("b", "x", 1.2), ("c", "x", 1.2)]
    assert [r.getMessage() for r in caplog.records] == ["voice 'x': speed 1.44 clamped to 1.20"]


def test_missing_phonemes_are_warned_once_per_voice(caplog: pytest.LogCaptureFixture) -> None:
    tts = FakeTts()
    lexicon = parse_pls(PLS.replace("bəˈnænə", "bəˈnɑːnə"), "w.pls")
    renderer = VoiceRenderer(tts, {}, lexicon)
    with caplog.at_level(logging.WARNING):
        renderer.synthesize("Zorblax", None, "joe", 1.0)
        renderer.synthesize("Zorblax", None, "joe", 1.0)
    assert tts.calls[0][0] == "[[ bənnˈə ]]"
    assert [r.getMessage() for r in caplog.records] == [
        "pronunciation for voice 'joe': w.pls:4: 'Zorblax': not in the voice's phonemes, dropped: ɑ ː"
    ]


# ------------------------------------------------------------------------------ a whole session
class ScriptedLlm:
    def __init__(self, *replies: list[str]) -> None:
        self.replies = list(replies)

    async def stream_chat(
        self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None, options: Mapping[str, Any]
    ) -> AsyncIterator[LlmOutput]:
        for delta in self.replies.pop(0):
            await asyncio.sleep(0)
            yield TextDelta(delta)


class HeldSpeaker:
    """Plays instantly unless `hold` is set: then the segment plays until `stop()`."""

    def __init__(self) -> None:
        self.played: list[int] = []
        self.hold_index: int | None = None
        self.holding = asyncio.Event()
        self._stopped = asyncio.Event()

    async def play(self, audio: Pcm16, sample_rate_hz: int) -> bool:
        self.played.append(audio.size)
        if self.hold_index is not None and len(self.played) - 1 == self.hold_index:
            self.holding.set()
            await self._stopped.wait()
            return False
        return True

    def stop(self) -> None:
        self._stopped.set()

    @property
    def playing(self) -> bool:
        return self.holding.is_set() and not self._stopped.is_set()

    async def close(self) -> None:
        return None


STT = FixedStt("Tell me a story.")
LABELS = {"Narrator": LabelVoice("Narrator", "joe_slow", speed=0.9), "Joe": LabelVoice("Joe", "joe")}
STORY = (
    "<Narrator>Once upon a time, a fox lived here.</Narrator> <Joe>Hello, I am the fox!</Joe> The UN cheered."
)


async def run_session(
    deltas: list[str], speaker: HeldSpeaker, tts: FakeTts, *, interrupt: bool = False
) -> tuple[RecordingEvents, LocalAgentSession]:
    clock = FixedClock()
    events = RecordingEvents()
    executor = ThreadPoolExecutor(1)
    deps = LocalAgentDeps(
        stt=STT,
        llm=ScriptedLlm(deltas, ["Okay."]),
        tts=tts,
        speaker=speaker,
        events=events,
        clock=clock,
        timers=Timers(clock),
        stt_executor=executor,
        tts_executor=executor,
        voice="joe",
        speed=1.1,
        renderer=VoiceRenderer(tts, LABELS, parse_pls(PLS, "w.pls")),
    )
    settings = ConversationSettings(system_prompt="x", max_duration_s=None, voice_labels=frozenset(LABELS))
    session = LocalAgentSession(settings, deps)
    await session.start()
    await session.speech_started(0.0)
    await session.utterance(UtteranceEnded(0.0, 1.0, "silence", b"\0\0" * 1600))
    if interrupt:
        await asyncio.wait_for(speaker.holding.wait(), 5)
        seg = tts.calls[speaker.hold_index or 0]
        clock.t += 0.05 * len(seg[0].split()) / 2  # half of the held segment has played
        await session.speech_started(clock.t)
    kind = "agent_response_correction" if interrupt else "agent_response"
    await until(lambda: bool(events.of(kind)) and not session.busy, 10.0, f"the {kind}")
    await session.end("test")
    await asyncio.wait_for(session.closed(), 5)
    executor.shutdown()
    return events, session


def awkward_split(text: str) -> list[str]:
    """Cut inside every tag and between `<` and `/`."""
    cuts = sorted({i + k for i, ch in enumerate(text) if ch == "<" for k in (0, 1, 2, 4)})
    return [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True) if text[a:b]]


def test_session_renders_a_tagged_reply_split_at_awkward_points() -> None:
    tts, speaker = FakeTts(), HeldSpeaker()
    deltas = awkward_split(STORY)
    assert len(deltas) > 15 and all("<Narrator>" not in d and "</Joe>" not in d for d in deltas)
    events, _ = asyncio.run(run_session(deltas, speaker, tts))
    audio = [(e["text"], e["voice_label"]) for e in events.of("audio")]
    assert audio == [
        ("Once upon a time,", "Narrator"),
        ("a fox lived here.", "Narrator"),
        ("Hello, I am the fox!", "Joe"),
        ("The UN cheered.", None),
    ]
    assert [(voice, speed) for _, voice, speed in tts.calls] == [
        ("joe_slow@0.9", 1.1), ("joe_slow@0.9", 1.1), ("joe", 1.1), ("joe", 1.1)
    ]  # fmt: skip
    assert tts.calls[-1][0] == "The United Nations cheered."  # the dictionary, at synthesis only
    [response] = events.of("agent_response")
    assert (
        response["agent_response"]
        == "Once upon a time, a fox lived here. Hello, I am the fox! The UN cheered."
    )
    assert response["multivoice_message"]["parts"] == [
        {"text": "Once upon a time, a fox lived here.", "voice_label": "Narrator"},
        {"text": "Hello, I am the fox!", "voice_label": "Joe"},
        {"text": "The UN cheered.", "voice_label": None},
    ]


def test_interruption_truncates_within_the_playing_segment_without_markup() -> None:
    tts, speaker = FakeTts(), HeldSpeaker()
    speaker.hold_index = 2  # "Hello, I am the fox!" in Joe's voice
    events, session = asyncio.run(run_session(awkward_split(STORY), speaker, tts, interrupt=True))
    [correction] = events.of("agent_response_correction")
    assert correction["corrected_agent_response"] == "Once upon a time, a fox lived here. Hello, I"
    assert "<" not in correction["original_agent_response"]
    assistant = [m["content"] for m in session.machine.history.messages() if m["role"] == "assistant"]
    assert assistant[0] == "Once upon a time, a fox lived here. Hello, I"
    assert [e["voice_label"] for e in events.of("audio")] == ["Narrator", "Narrator", "Joe"]


def test_the_example_configs_dictionary_loads() -> None:
    from appliance.config import load_config

    cfg = load_config(Path("appliance/assets/example-config.yaml"))
    lexicon = load_lexicon(cfg)
    assert lexicon is not None
    assert [e.grapheme for e in lexicon.entries] == ["UN", "nginx", "Jarvis"]
    assert lexicon.for_voice(None).apply("Hi Jarvis") == "Hi [[ dʒˈɑːɹvɪs ]]"


def test_a_broken_dictionary_fails_at_start(tmp_path: Path) -> None:
    """The session factory (built when the appliance starts) loads the dictionaries."""
    from types import SimpleNamespace

    from appliance.runtime.local_agent import local_session_factory

    (tmp_path / "words.pls").write_text("<lexicon>\n<lexeme>", encoding="utf-8")
    cfg = config({"pronunciation_dictionary_locators": [{"path": "words.pls"}]}, tmp_path)
    clock = FixedClock()
    models = SimpleNamespace(tts=FakeTts(), stt=STT, llm=ScriptedLlm(), concurrent_llm=False)
    with pytest.raises(ConfigError, match=r"words\.pls:2: not well-formed XML"):
        local_session_factory(
            cfg, models, speaker=HeldSpeaker(), events=RecordingEvents(), clock=clock, timers=Timers(clock)
        )


class ToolThenTextLlm:
    """First a language_detection call, then a reply."""

    def __init__(self, reply: str) -> None:
        self.calls = 0
        self.reply = reply

    async def stream_chat(
        self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None, options: Mapping[str, Any]
    ) -> AsyncIterator[LlmOutput]:
        from appliance.ports import ToolCallRequest

        self.calls += 1
        await asyncio.sleep(0)
        if self.calls == 1:
            arguments = {"reason": "the user speaks Spanish", "language": "es"}
            yield ToolCallRequest("call_1", "language_detection", arguments, json.dumps(arguments))
        else:
            yield TextDelta(self.reply)


def test_after_a_language_switch_the_languages_voice_speaks_outside_tags() -> None:
    tts, speaker, events = FakeTts(("joe", "joe_slow", "pepe")), HeldSpeaker(), RecordingEvents()

    async def run() -> None:
        clock = FixedClock()
        executor = ThreadPoolExecutor(1)
        deps = LocalAgentDeps(
            stt=STT, llm=ToolThenTextLlm("¡Hola! <Joe>Hello!</Joe> Adiós."), tts=tts, speaker=speaker,
            events=events, clock=clock, timers=Timers(clock), stt_executor=executor, tts_executor=executor,
            voice="joe", voice_for_language={"es": "pepe"}.get, renderer=VoiceRenderer(tts, LABELS),
        )  # fmt: skip
        settings = ConversationSettings(
            system_prompt="x",
            max_duration_s=None,
            voice_labels=frozenset(LABELS),
            system_tool_names=frozenset({"language_detection"}),
        )
        session = LocalAgentSession(settings, deps)
        await session.start()
        await session.utterance(UtteranceEnded(0.0, 1.0, "silence", b"\0\0" * 1600))
        await until(
            lambda: bool(events.of("agent_response")) and not session.busy, 10.0, "the agent's answer"
        )
        await session.end("test")
        await asyncio.wait_for(session.closed(), 5)
        executor.shutdown()

    asyncio.run(run())
    assert [e["language"] for e in events.of("language_switched")] == ["es"]
    assert [(text, voice) for text, voice, _ in tts.calls] == [
        ("¡Hola!", "pepe"),  # the default voice is now the Spanish one
        ("Hello!", "joe"),  # a label keeps its own voice
        ("Adiós.", "pepe"),
    ]


def test_reply_text_cannot_inject_raw_phonemes() -> None:
    tts = FakeTts()
    VoiceRenderer(tts, {}, parse_pls(PLS, "w.pls")).synthesize("Say [[ hˈaɪ ]] to Zorblax", None, "joe", 1.0)
    assert tts.calls[0][0] == "Say [ [ hˈaɪ ] ] to [[ bənˈænə ]]"


class PhonemizingTts(FakeTts):
    """A fake phonemizer: the text, lower-cased."""

    def phonemize(self, text: str, voice: str) -> str:
        return text.lower()


def test_phoneme_entries_are_phonemized_in_context_when_the_tts_can() -> None:
    tts = PhonemizingTts()
    renderer = VoiceRenderer(tts, {}, parse_pls(PLS, "w.pls"))
    assert renderer.pronounce("The UN ate a Zorblax, then a Zorblax.", "joe") == (
        "[[ the united nations ate a bənˈænə, then a bənˈænə. ]]"
    )
    # a placeholder word already in the text is not used
    assert renderer.pronounce("A placeholder and a Zorblax", "joe") == "[[ a placeholder and a bənˈænə ]]"
    # no placeholder word left: inline spans
    crowded = "placeholder butterfly telescope umbrella Zorblax"
    assert renderer.pronounce(crowded, "joe") == "placeholder butterfly telescope umbrella [[ bənˈænə ]]"
    assert renderer.pronounce("No entry here.", "joe") == "No entry here."


def test_check_config_reports_a_broken_dictionary(tmp_path: Path) -> None:
    from appliance.preflight import check_config

    (tmp_path / "words.pls").write_text(PLS.replace("<alias>", "<alias>&nbsp;"), encoding="utf-8")
    path = tmp_path / "config.yaml"
    raw = {"conversation_config": {"tts": {"pronunciation_dictionary_locators": [{"path": "words.pls"}]}}}
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    cfg, problems = check_config(path)
    assert cfg is None
    assert problems == [f"{tmp_path / 'words.pls'}:3: not well-formed XML: undefined entity (column 41)"]
    (tmp_path / "words.pls").write_text(PLS, encoding="utf-8")
    cfg, _ = check_config(path)
    assert cfg is not None
