"""Voice rendering by ear: real piper synthesis (the registry joe voice under two labels with
different settings), checked with faster-whisper tiny.en; and the whole appliance in process
with a scripted OpenAI-compatible server streaming a tagged reply cut at awkward points."""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"  # before faster-whisper / huggingface_hub are imported

import asyncio
import json
import re
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from appliance.adapters.piper_tts import PiperTts, PiperVoiceSpec
from appliance.adapters.resample import resample
from appliance.adapters.whisper_stt import FasterWhisperStt
from appliance.config import load_config_text
from appliance.core.conversation import ConversationSettings
from appliance.core.endpointing import UtteranceEnded
from appliance.core.pronunciation import parse_pls
from appliance.ports import LlmOutput, Pcm16, TextDelta
from appliance.runtime.local_session import LocalAgentDeps, LocalAgentSession
from appliance.runtime.timers import Timers
from appliance.runtime.voice_rendering import LabelVoice, VoiceRenderer
from appliance.testing.fakes import FixedClock, FixedStt, RecordingEvents, RecordingSpeaker, until
from appliance.testing.openai_server import ScriptedOpenAiServer, text_reply
from appliance.testing.speech import concat, joe_voice_paths, silence, write_wav

pytestmark = [pytest.mark.models, pytest.mark.slow]

RATE = 16000
PLS = """<?xml version="1.0" encoding="UTF-8"?>
<lexicon version="1.0" xmlns="http://www.w3.org/2005/01/pronunciation-lexicon" alphabet="ipa">
  <lexeme><grapheme>UN</grapheme><alias>United Nations</alias></lexeme>
  <lexeme><grapheme>Zorblax</grapheme><phoneme>bəˈnænə</phoneme></lexeme>
  <lexeme><grapheme>Glimfo</grapheme><phoneme alphabet="cmu-arpabet">T AH0 M EY1 T OW2</phoneme></lexeme>
</lexicon>
"""


def words(text: str) -> str:
    return " ".join(re.sub(r"[^a-z0-9 ]", " ", text.lower()).split())


@pytest.fixture(scope="module")
def whisper(models_dir: Path) -> FasterWhisperStt:
    return FasterWhisperStt(models_dir / "whisper-tiny.en")


@pytest.fixture(scope="module")
def tts() -> PiperTts:
    """joe, and joe_calm: the same model file at 0.8 speed (one ONNX session).

    Both without noise (`noise_scale` and `noise_w_scale` 0): Piper's VITS model draws random
    noise for the phoneme durations and the waveform, scaled by these two values, so with 0 the
    same text and settings always give the same samples and the checks below cannot flake.
    """
    model, config = joe_voice_paths()
    quiet = {"noise_scale": 0.0, "noise_w_scale": 0.0}
    return PiperTts(
        {
            "joe": PiperVoiceSpec("joe", model, config, **quiet),
            "joe_calm": PiperVoiceSpec("joe_calm", model, config, speed=0.8, **quiet),
        },
        "joe",
    )


def hear(whisper: FasterWhisperStt, audio: Pcm16, rate: int) -> str:
    text, _ = whisper.transcribe(resample(audio, rate, RATE), "en")
    return words(text)


# ------------------------------------------------------------------------- pronunciation by ear
def test_alias_ipa_and_arpabet_entries_change_what_is_heard(tts: PiperTts, whisper: FasterWhisperStt) -> None:
    sentence = "The UN will eat a Zorblax and a Glimfo for lunch."
    plain = VoiceRenderer(tts)
    dictionary = VoiceRenderer(tts, {}, parse_pls(PLS, "words.pls"))
    spoken = dictionary.pronounce(sentence, "joe")  # all phonemes: espeak-ng in context + the entries
    assert spoken.startswith("[[ ðə juːnˈaɪɾᵻd nˈeɪʃənz ") and spoken.endswith(" ]]")
    assert "ɐ bənˈænə ænd ɐ təmˈeɪtˌoʊ fɔːɹ" in spoken
    before = hear(whisper, *plain.synthesize(sentence, None, "joe", 1.0))
    after = hear(whisper, *dictionary.synthesize(sentence, None, "joe", 1.0))
    for heard_word in ("united nations", "banana", "tomato"):
        assert heard_word not in before, before
        assert heard_word in after, after


def test_phoneme_entries_keep_the_context_of_the_words_around_them(tts: PiperTts) -> None:
    """Piper phonemizes the text around an inline `[[ ... ]]` span on its own: "a" before it
    ends a clause and is read as the letter A, the comma after it is lost. In context it is not."""
    symbols, espeak_voice = tts.phoneme_symbols("joe")  # joe's phoneme_id_map: IPA ɡ, not ASCII g
    assert espeak_voice == "en-us" and {"ɡ", "ɹ", "ˈ", "ː"} <= symbols and "g" not in symbols
    renderer = VoiceRenderer(tts, {}, parse_pls(PLS, "words.pls"))
    text = "I would like a Zorblax, please."
    assert renderer.pronounce(text, "joe") == "[[ aɪ wʊd lˈaɪk ɐ bənˈænə, plˈiːz. ]]"
    assert tts.phonemize("I would like a banana, please.", "joe") == "aɪ wʊd lˈaɪk ɐ bɐnˈænə, plˈiːz."
    inline = "I would like a [[ bənˈænə ]], please."
    piper_voice = tts._voice("joe")  # what Piper itself makes of the inline form
    assert "".join(piper_voice.phonemize(inline)[0]).startswith("aɪ wʊd lˈaɪk ˈeɪ bənˈænəpl")


# ------------------------------------------------------------------------- segments by ear
class ScriptedLlm:
    def __init__(self, deltas: list[str]) -> None:
        self.deltas = deltas

    async def stream_chat(
        self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None, options: Mapping[str, Any]
    ) -> AsyncIterator[LlmOutput]:
        for delta in self.deltas:
            await asyncio.sleep(0)
            yield TextDelta(delta)


STT = FixedStt("Tell me about the lighthouse.")
SENTENCE = "The old keeper climbed the stairs."
REPLY = f"<Narrator>{SENTENCE}</Narrator> <Joe>{SENTENCE}</Joe> Then everyone went home for dinner."


def test_piper_without_noise_is_deterministic(tts: PiperTts) -> None:
    """What the test below relies on: with both noise scales 0, Piper gives the same samples."""
    first, rate = tts.synthesize(SENTENCE, "joe", 1.0)
    again, _ = tts.synthesize(SENTENCE, "joe", 1.0)
    assert rate == 22050 and first.size > rate and np.array_equal(first, again)


def test_segments_play_in_order_with_their_voice_settings(
    tts: PiperTts, whisper: FasterWhisperStt, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Narrator: joe_calm (0.8) × label speed 0.9; Joe: joe × 1.2 — the same sentence. What the
    renderer asks Piper for (text, length scale, noise) is recorded per segment, in order, and
    each played segment is exactly what Piper makes from those settings; whisper hears each
    segment's own words."""
    from piper import PiperVoice, SynthesisConfig

    asked: list[tuple[str, SynthesisConfig | None]] = []
    piper_synthesize = PiperVoice.synthesize

    def spy(self: PiperVoice, text: str, syn_config: SynthesisConfig | None = None) -> Any:
        asked.append((text, syn_config))
        return piper_synthesize(self, text, syn_config=syn_config)

    monkeypatch.setattr(PiperVoice, "synthesize", spy)
    speaker, events = RecordingSpeaker(), RecordingEvents()
    deltas = [REPLY[i : i + 3] for i in range(0, len(REPLY), 3)]  # every tag cut somewhere
    labels = {
        "Narrator": LabelVoice("Narrator", "joe_calm", speed=0.9),
        "Joe": LabelVoice("Joe", "joe", speed=1.2),
    }

    async def run() -> None:
        clock = FixedClock()
        executor = ThreadPoolExecutor(1)
        deps = LocalAgentDeps(
            stt=STT, llm=ScriptedLlm(deltas), tts=tts, speaker=speaker, events=events, clock=clock,
            timers=Timers(clock), stt_executor=executor, tts_executor=executor, voice="joe", speed=1.0,
            renderer=VoiceRenderer(tts, labels),
        )  # fmt: skip
        settings = ConversationSettings(
            system_prompt="x", max_duration_s=None, voice_labels=frozenset(labels)
        )
        session = LocalAgentSession(settings, deps)
        await session.start()
        await session.utterance(UtteranceEnded(0.0, 1.0, "silence", b"\0\0" * 1600))
        await until(
            lambda: bool(events.of("agent_response")) and not session.busy, 30.0, "the agent's answer"
        )
        await session.end("test")
        await asyncio.wait_for(session.closed(), 10)
        executor.shutdown()

    asyncio.run(run())
    monkeypatch.undo()
    audio_events = [e for e in events.items if e["type"] == "audio"]
    assert [(e["text"], e["voice_label"]) for e in audio_events] == [
        (SENTENCE, "Narrator"),
        (SENTENCE, "Joe"),
        ("Then everyone went home for dinner.", None),
    ]
    # what Piper was asked for, per segment and in order: length scale = 1 / (voice speed ×
    # label speed × tts.speed), the voices' noise settings (0: deterministic)
    expected_scales = [1 / (0.8 * 0.9), 1 / 1.2, 1.0]
    assert [text for text, _ in asked] == [SENTENCE, SENTENCE, "Then everyone went home for dinner."]
    for (_, config), length_scale in zip(asked, expected_scales, strict=True):
        assert config is not None
        assert config.length_scale == pytest.approx(length_scale)
        assert (config.noise_scale, config.noise_w_scale, config.speaker_id) == (0.0, 0.0, 0)
    # each segment played is exactly Piper's audio for those settings (one model: joe's)
    piper_voice = tts._voice("joe")
    assert len(speaker.played) == 3
    for (played, rate), (text, _), length_scale in zip(speaker.played, asked, expected_scales, strict=True):
        reference = SynthesisConfig(length_scale=length_scale, noise_scale=0.0, noise_w_scale=0.0)
        chunks = list(piper_voice.synthesize(text, syn_config=reference))
        assert rate == chunks[0].sample_rate
        assert np.array_equal(played, np.concatenate([c.audio_int16_array for c in chunks]))
    narrator, joe, default = speaker.played
    # the slower voice takes longer (not in exact proportion: Piper rounds each phoneme's length
    # up to whole frames); deterministic, so this cannot flake
    assert narrator[0].size > 1.3 * joe[0].size, (narrator[0].size, joe[0].size)
    for segment in (narrator, joe):  # (a fast voice may lose a word ending: "climb")
        heard = set(hear(whisper, *segment).split())
        assert {"old", "keeper", "stairs"} <= heard and "dinner" not in heard, heard
    heard = set(hear(whisper, *default).split())
    assert {"everyone", "home", "dinner"} <= heard and "keeper" not in heard, heard
    # the variants share joe's one ONNX session
    assert tts.load_count == 1 and {"joe_calm@0.9", "joe@1.2"} <= set(tts.voices)
    response = next(e for e in events.items if e["type"] == "agent_response")
    assert response["agent_response"] == f"{SENTENCE} {SENTENCE} Then everyone went home for dinner."


# ------------------------------------------------------------------------- the whole appliance
AWKWARD_REPLY = [
    "<Narr", "ator", ">Once upon a time", ", a fox lived here.<", "/Narrator> <", "J", "oe>Hello",
    ", I am the", " fox!</Jo", "e", "> The UN ", "<Bob>cheered</Bob>", ". <Joe>Good", " night.",
]  # fmt: skip


@pytest.fixture
def scripted() -> Iterator[ScriptedOpenAiServer]:
    with ScriptedOpenAiServer() as server:
        yield server


def test_appliance_streams_a_tagged_reply_as_voice_segments(
    tmp_path: Path,
    models_dir: Path,
    scripted: ScriptedOpenAiServer,
    say: Callable[[str], np.ndarray],
) -> None:
    from appliance.runtime.app import Preloaded, RunOptions, load_listeners, run_async
    from appliance.runtime.local_agent import load_local_models

    os.environ["APPLIANCE_MODELS_DIR"] = str(models_dir)
    (tmp_path / "words.pls").write_text(PLS, encoding="utf-8")
    scripted.add(text_reply(*AWKWARD_REPLY))
    raw: dict[str, Any] = {
        "conversation_config": {
            "agent": {
                "first_message": "",
                "prompt": {
                    "prompt": "You tell stories.",
                    "llm": "custom-llm",
                    "custom_llm": {"url": scripted.url, "model_id": "scripted-model"},
                },
            },
            "turn": {"turn_timeout": 7},
            "tts": {
                "speed": 1.1,
                "supported_voices": [
                    {
                        "label": "Narrator",
                        "voice_id": "joe_calm",
                        "description": "For narration",
                        "speed": 0.9,
                    },
                    {"label": "Joe", "voice_id": "joe", "description": "Whenever Joe is speaking"},
                ],
                "pronunciation_dictionary_locators": [{"path": "words.pls"}],
            },
        },
        "appliance": {
            "local": {
                "llm": {"backend": "openai"},
                "voices": {
                    "joe": {"model": "piper-en_US-joe-medium"},
                    "joe_calm": {"model": "piper-en_US-joe-medium", "speed": 0.8, "noise_scale": 0.3},
                },
            }
        },
    }
    cfg = load_config_text(yaml.safe_dump(raw), str(tmp_path / "config.yaml"), base_dir=tmp_path)
    detector, vad = load_listeners(cfg)
    models = Preloaded(detector, vad, load_local_models(cfg))
    audio = concat(silence(1.0), say("Hey Jarvis!"), silence(0.5), say("Tell me a story."), silence(4.0))
    wav = write_wav(tmp_path / "in.wav", audio)
    events_path = tmp_path / "events.jsonl"
    options = RunOptions(
        input=str(wav), output=str(tmp_path / "out.wav"), events=str(events_path), realtime=False
    )
    asyncio.run(run_async(cfg, options, models))
    events = [json.loads(line) for line in events_path.read_text().splitlines()]

    # the platform's prompt block went to the LLM
    system = scripted.chat_requests[0].body["messages"][0]["content"]
    assert "- Narrator: For narration\n- Joe: Whenever Joe is speaking" in system
    audio_events = [(e["text"], e["voice_label"]) for e in events if e["type"] == "audio"]
    assert audio_events == [
        ("Once upon a time,", "Narrator"),
        ("a fox lived here.", "Narrator"),
        ("Hello, I am the fox!", "Joe"),
        ("The UN cheered.", None),  # the unknown <Bob> label: tags dropped, default voice
        ("Good night.", "Joe"),  # unclosed at the end of the reply: still Joe
    ]
    [response] = [e for e in events if e["type"] == "agent_response"]
    assert (
        response["agent_response"]
        == "Once upon a time, a fox lived here. Hello, I am the fox! The UN cheered. Good night."
    )
    assert response["multivoice_message"]["parts"] == [
        {"text": "Once upon a time, a fox lived here.", "voice_label": "Narrator"},
        {"text": "Hello, I am the fox!", "voice_label": "Joe"},
        {"text": "The UN cheered.", "voice_label": None},
        {"text": "Good night.", "voice_label": "Joe"},
    ]
    assert not any("<" in json.dumps(e) for e in events if e["type"] in ("audio", "agent_response"))
    # two labels, one model file: joe was loaded once; the Narrator spoke through its variant
    tts = models.local_models.tts
    assert tts.load_count == 1 and "joe_calm@0.9" in tts.voices
