"""The configuration file: defaults, ranges, exact problem lines, warnings and secrets."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest
import yaml

from appliance.agent_config import CLOUD_ONLY, ClientEvent
from appliance.config import (
    DEFAULT_SOURCE,
    Config,
    load_config,
    load_config_text,
    read_secret,
    resolve_models_dir,
)
from appliance.core.endpointing import TurnEagerness
from appliance.core.wakeword import WakeWordRule
from appliance.errors import ConfigError
from appliance.preflight import check_config

ASSETS = Path(__file__).parents[1] / "appliance" / "assets"
FIXTURES = Path(__file__).parent / "fixtures"
SECRET = "sk_live_0123456789abcdef"


def build(settings: dict[str, Any]) -> str:
    """A YAML document with each dotted path set to its value."""
    doc: dict[str, Any] = {}
    for path, value in settings.items():
        node = doc
        *parents, last = path.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    return yaml.safe_dump(doc, allow_unicode=True)


def load(settings: dict[str, Any]) -> Config:
    return load_config_text(build(settings), "test.yaml", log_warnings=False)


def problems(settings: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as exc:
        load(settings)
    assert exc.value.source == "test.yaml"
    return exc.value.problems


def voices(n: int) -> list[dict[str, str]]:
    return [{"label": f"v{i}", "voice_id": "joe"} for i in range(n)]


# --- shipped files -------------------------------------------------------------------------


def test_default_config_loads_without_warnings() -> None:
    cfg = load_config(None)
    assert cfg.warnings == []
    assert cfg.source == DEFAULT_SOURCE and cfg.base_dir is None
    cc, ap = cfg.conversation_config, cfg.appliance
    assert ap.mode == "local"
    assert [w.name for w in ap.wake_words.words] == ["hey_jarvis"]
    assert cc.agent.language == "en" and cc.agent.first_message == ""
    assert "# Personality" in cc.agent.prompt.prompt and "# Guardrails" in cc.agent.prompt.prompt
    assert cc.turn.turn_timeout == 7 and cfg.eagerness is TurnEagerness.NORMAL
    assert cfg.soft_timeout_s == 3.0 and cc.turn.soft_timeout_config.message == "Hhmmmm...yeah."
    assert cfg.interruptions_enabled
    assert cc.tts.speed == 1.0 and cfg.voice(cc.tts.voice_id)[0] == "joe"
    assert cfg.platform_settings.privacy.record_voice is False


def test_example_config_loads_without_problems() -> None:
    cfg, warnings = check_config(ASSETS / "example-config.yaml")
    assert cfg is not None, warnings
    assert warnings == []
    assert cfg.base_dir == ASSETS.resolve()
    assert [t.name for t in cfg.appliance.tools] == ["set_timer", "get_weather"]
    assert cfg.resolve_path("lexicons/names.pls") == ASSETS.resolve() / "lexicons" / "names.pls"
    assert set(cfg.conversation_config.agent.prompt.built_in_tools.enabled()) == {"end_call", "skip_turn"}


def test_empty_mapping_gives_the_documented_defaults() -> None:
    cfg = load_config_text("{}", "empty.yaml")
    cc, ap = cfg.conversation_config, cfg.appliance
    assert cfg.warnings == []
    assert cc.turn.turn_timeout == 7 and cc.turn.silence_end_call_timeout == -1
    assert cfg.soft_timeout_s is None and cfg.silence_end_call_timeout_s is None
    assert cc.conversation.max_duration_seconds == 600
    assert ClientEvent.INTERRUPTION in cc.conversation.client_events
    assert ap.audio.input_block_ms == 80 and ap.vad.no_speech_timeout_s == 8
    assert ap.local.default_voice == "joe" and ap.remote.base_url == "wss://api.elevenlabs.io"
    assert cfg.wake_word_rules() == {"hey_jarvis": WakeWordRule("hey_jarvis", 0.5, 1, 2.0)}


# --- ranges: inside is fine, outside is one exact line ----------------------------------------

T = "conversation_config.turn"
S = "conversation_config.turn.soft_timeout_config"
A = "appliance"

RANGE_CASES: list[tuple[str, Any, str | None]] = [
    (f"{T}.turn_timeout", 1, None),
    (f"{T}.turn_timeout", 30, None),
    (f"{T}.turn_timeout", 0.5, f"{T}.turn_timeout: 0.5 is outside 1–30 seconds"),
    (f"{T}.turn_timeout", 45, f"{T}.turn_timeout: 45 is outside 1–30 seconds"),
    (f"{T}.silence_end_call_timeout", -1, None),
    (f"{T}.silence_end_call_timeout", 20, None),
    (
        f"{T}.silence_end_call_timeout",
        0,
        f"{T}.silence_end_call_timeout: 0 is not more than 0 seconds (-1 = off)",
    ),
    (f"{T}.turn_eagerness", "patient", None),
    (
        f"{T}.turn_eagerness",
        "slow",
        f"{T}.turn_eagerness: 'slow' is not one of 'eager', 'normal' or 'patient'",
    ),
    (f"{S}.timeout_seconds", -1, None),
    (f"{S}.timeout_seconds", 0.5, None),
    (f"{S}.timeout_seconds", 8.0, None),
    (f"{S}.timeout_seconds", 0.3, f"{S}.timeout_seconds: 0.3 is outside 0.5–8.0 seconds (-1 = off)"),
    (f"{S}.timeout_seconds", 8.5, f"{S}.timeout_seconds: 8.5 is outside 0.5–8.0 seconds (-1 = off)"),
    (f"{S}.message", "x" * 200, None),
    (f"{S}.message", "", f"{S}.message: '' is outside 1–200 characters"),
    (f"{S}.message", "x" * 201, f"{S}.message: {'x' * 37!r}... (201 characters) is outside 1–200 characters"),
    (f"{S}.use_llm_generated_message", "yes", f"{S}.use_llm_generated_message: 'yes' is not true or false"),
    ("conversation_config.tts.speed", 0.7, None),
    ("conversation_config.tts.speed", 1.2, None),
    ("conversation_config.tts.speed", 0.69, "conversation_config.tts.speed: 0.69 is outside 0.7–1.2"),
    ("conversation_config.tts.speed", 1.21, "conversation_config.tts.speed: 1.21 is outside 0.7–1.2"),
    ("conversation_config.tts.speed", "fast", "conversation_config.tts.speed: 'fast' is not a number"),
    ("conversation_config.tts.supported_voices", voices(9), None),
    (
        "conversation_config.tts.supported_voices",
        voices(10),
        "conversation_config.tts.supported_voices: 10 voices; at most 9 (10 voices per agent including the "
        "default voice)",
    ),
    (
        "conversation_config.tts.agent_output_audio_format",
        "mp3_44100",
        "conversation_config.tts.agent_output_audio_format: 'mp3_44100' is not one of 'pcm_8000', "
        "'pcm_16000', 'pcm_22050', 'pcm_24000', 'pcm_44100', 'pcm_48000' or 'ulaw_8000'",
    ),
    ("conversation_config.asr.user_input_audio_format", "ulaw_8000", None),
    ("conversation_config.conversation.max_duration_seconds", 1, None),
    (
        "conversation_config.conversation.max_duration_seconds",
        0,
        "conversation_config.conversation.max_duration_seconds: 0 is not more than 0 seconds",
    ),
    (
        "conversation_config.conversation.max_duration_seconds",
        1.5,
        "conversation_config.conversation.max_duration_seconds: 1.5 is not an integer",
    ),
    ("conversation_config.agent.prompt.temperature", 2, None),
    (
        "conversation_config.agent.prompt.temperature",
        2.5,
        "conversation_config.agent.prompt.temperature: 2.5 is outside 0–2",
    ),
    ("conversation_config.agent.prompt.max_tokens", 256, None),
    (
        "conversation_config.agent.prompt.max_tokens",
        0,
        "conversation_config.agent.prompt.max_tokens: 0 is not more than 0 (-1 = no limit)",
    ),
    ("conversation_config.agent.prompt.timezone", "Europe/Helsinki", None),
    (
        "conversation_config.agent.prompt.timezone",
        "Mars/Olympus",
        "conversation_config.agent.prompt.timezone: 'Mars/Olympus' is not a known time zone (e.g. "
        "'Europe/Berlin', 'UTC')",
    ),
    ("platform_settings.privacy.retention_days", -1, None),
    (
        "platform_settings.privacy.retention_days",
        -2,
        "platform_settings.privacy.retention_days: -2 is not at least -1 days",
    ),
    (f"{A}.mode", "cloud", f"{A}.mode: 'cloud' is not one of 'remote', 'local' or 'auto'"),
    (f"{A}.audio.input_device", "USB", None),
    (f"{A}.audio.input_device", 2, None),
    (f"{A}.audio.input_device", -1, f"{A}.audio.input_device: -1 is not a device name or index"),
    (f"{A}.audio.input_block_ms", 10, None),
    (f"{A}.audio.input_block_ms", 501, f"{A}.audio.input_block_ms: 501 is outside 10–500 ms"),
    (f"{A}.audio.output_block_ms", 4, f"{A}.audio.output_block_ms: 4 is outside 5–200 ms"),
    (f"{A}.audio.input_queue_blocks", 1, f"{A}.audio.input_queue_blocks: 1 is outside 2–1024 blocks"),
    (f"{A}.audio.output_volume", 2.5, f"{A}.audio.output_volume: 2.5 is outside 0–2"),
    (f"{A}.vad.threshold", 0.96, f"{A}.vad.threshold: 0.96 is outside 0.05–0.95"),
    (f"{A}.vad.min_speech_s", 0.02, f"{A}.vad.min_speech_s: 0.02 is outside 0.03–2 seconds"),
    (f"{A}.vad.end_silence_s", 5, None),
    (f"{A}.vad.end_silence_s", 0.05, f"{A}.vad.end_silence_s: 0.05 is outside 0.1–5 seconds"),
    (f"{A}.vad.max_utterance_s", 121, f"{A}.vad.max_utterance_s: 121 is outside 1–120 seconds"),
    (f"{A}.vad.no_speech_timeout_s", 61, f"{A}.vad.no_speech_timeout_s: 61 is outside 1–60 seconds"),
    (f"{A}.vad.preroll_s", 2.5, f"{A}.vad.preroll_s: 2.5 is outside 0–2 seconds"),
    (f"{A}.chimes.volume", 1.5, f"{A}.chimes.volume: 1.5 is outside 0–1"),
    (f"{A}.local.stt.threads", 9, f"{A}.local.stt.threads: 9 is outside 1–8"),
    (f"{A}.local.stt.beam_size", 0, f"{A}.local.stt.beam_size: 0 is outside 1–10"),
    (
        f"{A}.local.stt.beam_size",
        "wide",
        f"{A}.local.stt.beam_size: 'wide' is neither a whole number (1–10) nor 'auto'",
    ),
    (
        f"{A}.local.stt.compute_type",
        "fp16",
        f"{A}.local.stt.compute_type: 'fp16' is not one of 'int8', 'int8_float32', 'int16' or 'float32'",
    ),
    (f"{A}.local.llm.n_ctx", 255, f"{A}.local.llm.n_ctx: 255 is outside 256–32768 tokens"),
    (f"{A}.local.llm.threads", 17, f"{A}.local.llm.threads: 17 is outside 1–16"),
    (
        f"{A}.local.llm.threads",
        "many",
        f"{A}.local.llm.threads: 'many' is neither a thread count (1–16) nor 'auto'",
    ),
    (f"{A}.local.tts_threads", 0, f"{A}.local.tts_threads: 0 is outside 1–8"),
    (
        f"{A}.local.llm.history_tokens",
        4096,
        f"{A}.local.llm.history_tokens: 4096 is outside 64–2048 tokens (at most n_ctx)",
    ),
    (f"{A}.local.voice_cache_size", 11, f"{A}.local.voice_cache_size: 11 is outside 1–10 voices"),
    (f"{A}.remote.chunk_ms", 19, f"{A}.remote.chunk_ms: 19 is outside 20–500 ms"),
    (f"{A}.remote.reconnect_attempts", 11, f"{A}.remote.reconnect_attempts: 11 is outside 0–10"),
    (
        f"{A}.remote.base_url",
        "https://api.elevenlabs.io",
        f"{A}.remote.base_url: 'https://api.elevenlabs.io' is not a wss:// or ws:// URL",
    ),
    (f"{A}.logging.level", "debug", None),
    (
        f"{A}.logging.level",
        "TRACE",
        f"{A}.logging.level: 'TRACE' is not one of 'DEBUG', 'INFO', 'WARNING' or 'ERROR'",
    ),
]


@pytest.mark.parametrize(("path", "value", "expected"), RANGE_CASES)
def test_ranges(path: str, value: Any, expected: str | None) -> None:
    if expected is None:
        load({path: value})
    else:
        assert problems({path: value}) == [expected]


WAKE = "appliance.wake_words.words"


@pytest.mark.parametrize(
    ("word", "expected"),
    [
        ({"name": "alexa", "threshold": 0.99, "patience_frames": 25, "refractory_s": 30}, None),
        ({"name": "alexa", "threshold": 0}, f"{WAKE}[0].threshold: 0 is outside 0–1 (exclusive)"),
        ({"name": "alexa", "threshold": 1}, f"{WAKE}[0].threshold: 1 is outside 0–1 (exclusive)"),
        ({"name": "alexa", "patience_frames": 26}, f"{WAKE}[0].patience_frames: 26 is outside 1–25 frames"),
        ({"name": "alexa", "refractory_s": 31}, f"{WAKE}[0].refractory_s: 31 is outside 0–30 seconds"),
        ({"threshold": 0.5}, f"{WAKE}[0]: give a name (a bundled or custom model) or a path to a model file"),
        (
            {"name": "alexa", "dynamic_variables": {"system__time": "x"}},
            f"{WAKE}[0].dynamic_variables: 'system__time' uses the reserved prefix system__ "
            "(system variables are set by the agent)",
        ),
        (
            {"name": "alexa", "dynamic_variables": {"room": ["a"]}},
            f"{WAKE}[0].dynamic_variables.room: a list is not a string, number or boolean",
        ),
    ],
)
def test_wake_word_fields(word: dict[str, Any], expected: str | None) -> None:
    if expected is None:
        load({WAKE: [word]})
    else:
        assert problems({WAKE: [word]}) == [expected]


def test_wake_word_lists() -> None:
    assert problems({WAKE: []}) == [f"{WAKE}: at least one wake word is required"]
    assert problems({WAKE: [{"name": "alexa"}, {"name": "alexa"}]}) == [
        f"{WAKE}: 'alexa' listed more than once"
    ]
    cfg = load({WAKE: [{"path": "models/hey_kitchen.onnx", "threshold": 0.6}]})
    assert cfg.wake_word_rules() == {"hey_kitchen": WakeWordRule("hey_kitchen", 0.6, 1, 2.0)}


V = "conversation_config.tts.supported_voices"


@pytest.mark.parametrize(
    ("entries", "expected"),
    [
        (
            [{"label": " ", "voice_id": "joe"}],
            f"{V}[0].label: ' ' is not allowed (a label is not blank and has no < > /)",
        ),
        (
            [{"label": "<x>", "voice_id": "joe"}],
            f"{V}[0].label: '<x>' is not allowed (a label is not blank and has no < > /)",
        ),
        ([{"label": "x"}], f"{V}[0].voice_id: required"),
        ([{"label": "x", "voice_id": "joe", "speed": 1.3}], f"{V}[0].speed: 1.3 is outside 0.7–1.2"),
        (
            [{"label": "Joe", "voice_id": "joe"}, {"label": "Joe", "voice_id": "joe"}],
            f"{V}: label 'Joe' is used 2 times; labels must be unique",
        ),
    ],
)
def test_supported_voices(entries: list[dict[str, Any]], expected: str) -> None:
    assert problems({V: entries}) == [expected]


def test_supported_voices_cloud_fields_are_warnings() -> None:
    cfg = load({V: [{"label": "Narrator", "voice_id": "joe", "model_family": "flash", "stability": 0.4}]})
    assert cfg.warnings == [f"{V}[0].model_family: {CLOUD_ONLY}", f"{V}[0].stability: {CLOUD_ONLY}"]


# --- unknown keys, top level, several problems at once ---------------------------------------


def test_unknown_appliance_keys_name_the_allowed_keys() -> None:
    assert problems({"appliance.audio.inptu_device": 1}) == [
        "appliance.audio.inptu_device: unknown key (allowed: input_device, output_device, input_block_ms, "
        "output_block_ms, input_queue_blocks, output_volume, echo_cancellation)"
    ]
    (line,) = problems({"appliance.local.voices": {"joe": {"model": "m", "sped": 1.0}}})
    assert line.startswith(
        "appliance.local.voices.joe.sped: unknown key (allowed: model, config, speaker, speed,"
    )
    (line,) = problems({"appliance.colour": "red"})
    assert line.startswith("appliance.colour: unknown key (allowed: mode, models_dir, audio, wake_words,")


def test_top_level() -> None:
    (line,) = problems({"conversation_config": {}, "agent": {}})
    assert line.startswith(
        "agent: unknown top-level key (allowed: conversation_config, platform_settings, appliance"
    )
    for text, expected in [("", "empty"), ("- a\n", "a list, not a mapping"), ("7\n", "7, not a mapping")]:
        with pytest.raises(ConfigError) as exc:
            load_config_text(text, "t.yaml")
        assert exc.value.problems == [
            f"top level: the document is {expected} "
            "(expected keys: conversation_config, platform_settings, appliance)"
        ]
    assert problems({"appliance": [1]}) == ["appliance: a list is not a mapping"]
    assert load({"appliance": None}).appliance.mode == "local"


def test_several_problems_are_reported_together() -> None:
    with pytest.raises(ConfigError) as exc:
        load(
            {
                f"{T}.turn_timeout": 45,
                "conversation_config.tts.speed": "fast",
                "appliance.audio.inptu_device": 1,
                "appliance.vad.threshold": 0,
            }
        )
    assert len(exc.value.problems) == 4
    text = str(exc.value)
    assert text.startswith("invalid configuration in test.yaml:\n  ")
    assert f"{T}.turn_timeout: 45 is outside 1–30 seconds" in text
    assert "conversation_config.tts.speed: 'fast' is not a number" in text
    assert exc.value.code == "config_invalid"


def test_cross_field_checks() -> None:
    assert problems({"appliance.mode": "remote"}) == [
        "appliance.remote.agent_id: required when appliance.mode is 'remote'"
    ]
    assert problems({"appliance.mode": "auto"}) == [
        "appliance.remote.agent_id: required when appliance.mode is 'auto'"
    ]
    assert (
        load({"appliance.mode": "remote", "appliance.remote.agent_id": "agent_123"}).appliance.mode
        == "remote"
    )
    assert problems({"appliance.local.default_voice": "amy"}) == [
        "appliance.local.default_voice: 'amy' is not in voices (joe)"
    ]
    assert problems({"appliance.local.preload_voices": ["joe", "amy"]}) == [
        "appliance.local.preload_voices[1]: 'amy' is not in voices (joe)"
    ]
    assert problems({"appliance.local.llm.backend": "openai"}) == [
        "conversation_config.agent.prompt.custom_llm.url: "
        "required when appliance.local.llm.backend is 'openai'"
    ]
    assert problems({"conversation_config.agent.prompt.llm": "custom-llm"}) == [
        "conversation_config.agent.prompt.custom_llm.url: required when conversation_config.agent.prompt.llm "
        "is 'custom-llm'"
    ]
    cfg = load(
        {
            "appliance.local.llm.backend": "openai",
            "conversation_config.agent.prompt.custom_llm.url": "http://h:8/v1",
        }
    )
    assert cfg.conversation_config.agent.prompt.custom_llm is not None


def test_unknown_voice_ids_fall_back_to_the_default_voice_with_a_warning() -> None:
    cfg = load({"conversation_config.tts.voice_id": "amy", V: [{"label": "Kid", "voice_id": "kid"}]})
    assert cfg.warnings == [
        "conversation_config.tts.voice_id: unknown local voice 'amy'; the default voice 'joe' is used",
        f"{V}[0].voice_id: unknown local voice 'kid'; the default voice 'joe' is used",
    ]
    assert cfg.voice("amy")[0] == "joe" and cfg.voice(None)[0] == "joe"
    remote = {
        "appliance.mode": "remote",
        "appliance.remote.agent_id": "a",
        "conversation_config.tts.voice_id": "x",
    }
    assert load(remote).warnings == []


# --- ElevenLabs export and cloud-only fields ---------------------------------------------------


def test_elevenlabs_export_loads_with_one_warning_per_cloud_only_field(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="appliance.config"):
        cfg = load_config(FIXTURES / "elevenlabs_export.yaml")
    cloud = [
        "agent_id",
        "name",
        "tags",
        "metadata",
        "access_info",
        "conversation_config.vad",
        "conversation_config.asr.quality",
        "conversation_config.asr.provider",
        "conversation_config.turn.mode",
        "conversation_config.tts.model_id",
        "conversation_config.tts.optimize_streaming_latency",
        "conversation_config.tts.stability",
        "conversation_config.tts.similarity_boost",
        "conversation_config.agent.prompt.rag.embedding_model",
        "conversation_config.agent.prompt.rag.max_vector_distance",
        "platform_settings.auth",
        "platform_settings.evaluation",
        "platform_settings.widget",
        "platform_settings.call_limits",
        "platform_settings.workspace_overrides",
        "platform_settings.safety",
    ]
    voice = (
        "conversation_config.tts.voice_id: unknown local voice 'cjVigY5qzO86Huf0OWal'; "
        "the default voice 'joe' is used"
    )
    assert sorted(cfg.warnings) == sorted([f"{p}: {CLOUD_ONLY}" for p in cloud] + [voice])
    assert len(caplog.records) == len(cfg.warnings)
    assert {r.getMessage() for r in caplog.records} == {f"{cfg.source}: {w}" for w in cfg.warnings}
    cc, ps = cfg.conversation_config, cfg.platform_settings
    assert cfg.eagerness is TurnEagerness.EAGER and cfg.end_silence_s == 0.40
    assert cc.agent.first_message == "Hi, what can I do for you?"
    assert cc.agent.prompt.built_in_tools.enabled()["end_call"].params == {"system_tool_type": "end_call"}
    assert ps.overrides.conversation_config_override.tts.voice_id is True
    assert ps.overrides.conversation_config_override.agent.prompt.prompt is False
    assert ps.privacy.record_voice is True and ps.privacy.retention_days == -1


def test_deprecated_and_cloud_only_tools_warn() -> None:
    base = "conversation_config.agent.prompt"
    cfg = load(
        {f"{base}.tools": [{"type": "webhook", "name": "x"}], f"{base}.built_in_tools.transfer_to_number": {}}
    )
    assert cfg.warnings == [
        f"{base}.tools: deprecated by ElevenLabs; use tool_ids and built_in_tools "
        "(device tools go under appliance.tools)",
        f"{base}.built_in_tools.transfer_to_number: cloud-only tool, ignored on the device",
    ]
    assert problems({f"{base}.tools": [{"name": "x"}]}) == [
        f"{base}.tools[0]: type null is not a tool type such as 'webhook', 'client' or 'system'"
    ]


@pytest.mark.parametrize(
    ("settings", "warning"),
    [
        (  # a client event newer than the device
            {"conversation_config.conversation.client_events": ["audio", "agent_response_metadata"]},
            "conversation_config.conversation.client_events[1]: 'agent_response_metadata' is not known "
            "to this device; ignored",
        ),
        (  # a tool type newer than the device
            {"conversation_config.agent.prompt.tools": [{"type": "mcp", "name": "x"}]},
            "conversation_config.agent.prompt.tools[0].type: 'mcp' is not known to this device; ignored",
        ),
    ],
)
def test_values_newer_than_the_device_are_warnings_naming_the_path(
    settings: dict[str, Any], warning: str
) -> None:
    assert warning in load(settings).warnings


def test_unknown_llm_names_load_and_known_client_events_stay_typed() -> None:
    cfg = load(
        {
            "conversation_config.agent.prompt.llm": "gemini-9-ultra-preview",
            "conversation_config.conversation.client_events": ["interruption", "brand_new"],
        }
    )
    assert cfg.conversation_config.agent.prompt.llm == "gemini-9-ultra-preview"
    assert cfg.conversation_config.conversation.client_events == [ClientEvent.INTERRUPTION, "brand_new"]
    assert cfg.interruptions_enabled
    assert problems({"conversation_config.conversation.client_events": [5]}) == [
        "conversation_config.conversation.client_events[0]: 5 is not a string"
    ]


def test_pronunciation_dictionaries() -> None:
    loc = "conversation_config.tts.pronunciation_dictionary_locators"
    cfg = load({loc: [{"path": "names.pls"}, {"pronunciation_dictionary_id": "abc", "version_id": "v1"}]})
    assert cfg.warnings == [f"{loc}[1]: platform dictionary without a local path, ignored on the device"]
    assert problems({loc: [{"version_id": "v1"}]}) == [
        f"{loc}[0]: give pronunciation_dictionary_id (platform) or path (a local .pls file)"
    ]


def test_dynamic_variable_placeholders() -> None:
    path = "conversation_config.agent.dynamic_variables.dynamic_variable_placeholders"
    values = {"user_name": "Thor", "age": 30, "ratio": 1.5, "vip": True}
    assert (
        load({path: values}).conversation_config.agent.dynamic_variables.dynamic_variable_placeholders
        == values
    )
    assert problems({path: {"system__agent_id": "x"}}) == [
        f"{path}: 'system__agent_id' uses the reserved prefix system__ "
        "(system variables are set by the agent)"
    ]


# --- device tools ------------------------------------------------------------------------------

HOOK = {
    "type": "webhook",
    "name": "get_weather",
    "description": "d",
    "api_schema": {"url": "https://x.test/a"},
}
CLIENT = {"type": "client", "name": "set_timer", "description": "d", "handler": "pkg.tools:set_timer"}


@pytest.mark.parametrize(
    ("tool", "expected"),
    [
        (HOOK, None),
        (CLIENT, None),
        ({**HOOK, "api_schema": None}, "appliance.tools[0].api_schema: required for a webhook tool"),
        ({**CLIENT, "handler": None}, None),
        ({**HOOK, "handler": "pkg.tools:get"}, "appliance.tools[0].handler: only for client tools"),
        ({**HOOK, "expects_response": True}, "appliance.tools[0].expects_response: only for client tools"),
        (
            {**CLIENT, "api_schema": {"url": "https://x.test"}},
            "appliance.tools[0].api_schema: only for webhook tools",
        ),
        (
            {**CLIENT, "handler": "pkg.tools"},
            "appliance.tools[0].handler: 'pkg.tools' is not allowed (package.module:function)",
        ),
        (
            {**CLIENT, "name": "set timer"},
            "appliance.tools[0].name: 'set timer' is not allowed (1–64 letters, digits, _ or -)",
        ),
        (
            {**CLIENT, "name": "x" * 65},
            f"appliance.tools[0].name: {'x' * 37!r}... (65 characters) "
            "is not allowed (1–64 letters, digits, _ or -)",
        ),
        (
            {**CLIENT, "response_timeout_secs": 121},
            "appliance.tools[0].response_timeout_secs: 121 is outside 1–120 seconds",
        ),
        (
            {**HOOK, "api_schema": {"url": "ftp://x.test"}},
            "appliance.tools[0].api_schema.url: 'ftp://x.test' is not a http:// or https:// URL",
        ),
        (
            {"type": "mcp", "name": "x", "description": "d"},
            "appliance.tools[0].type: 'mcp' is not one of 'webhook' or 'client'",
        ),
    ],
)
def test_device_tools(tool: dict[str, Any], expected: str | None) -> None:
    if expected is None:
        assert load({"appliance.tools": [tool]}).appliance.tools[0].name == tool["name"]
    else:
        assert problems({"appliance.tools": [tool]}) == [expected]


def test_device_tool_unknown_keys_and_kept_dicts() -> None:
    tool = {**HOOK, "api_schema": {"url": "https://x.test", "verb": 1}}
    (line,) = problems({"appliance.tools": [tool]})
    assert line == (
        "appliance.tools[0].api_schema.verb: unknown key (allowed: url, method, path_params_schema, "
        "query_params_schema, request_body_schema, request_headers, auth_connection)"
    )
    params = {"type": "object", "properties": {"minutes": {"type": "integer"}}}
    cfg = load({"appliance.tools": [{**CLIENT, "parameters": params, "expects_response": True}]})
    assert cfg.appliance.tools[0].parameters == params


def test_device_tool_names_are_unique() -> None:
    assert problems({"appliance.tools": [CLIENT, CLIENT]}) == [
        "appliance.tools: tool names must be unique: 'set_timer' listed more than once"
    ]


# --- secrets -----------------------------------------------------------------------------------

SECRET_LINE = (
    "secrets are not read from the config file; "
    "set the ELEVENLABS_API_KEY environment variable or a systemd credential"
)


@pytest.mark.parametrize(
    "path",
    [
        "conversation_config.agent.prompt.custom_llm.api_key",
        "appliance.remote.api_key",
        "appliance.remote.xi_api_key",
        "platform_settings.widget.token",
        "appliance.local.llm.password",
        "appliance.Secret",
        "appliance.ApiKey",
    ],
)
def test_plain_string_secrets_are_errors_and_never_echoed(path: str) -> None:
    with pytest.raises(ConfigError) as exc:
        load({path: SECRET})
    assert exc.value.problems == [f"{path}: {SECRET_LINE}"]
    assert SECRET not in str(exc.value)


def test_secret_in_a_list_and_secret_references() -> None:
    tools = [{**HOOK, "api_schema": {"url": "https://x.test", "request_headers": {"token": SECRET}}}]
    with pytest.raises(ConfigError) as exc:
        load({"appliance.tools": tools})
    assert exc.value.problems == [f"appliance.tools[0].api_schema.request_headers.token: {HEADER_LINE}"]
    assert SECRET not in str(exc.value)
    ref = {"url": "https://llm.test/v1", "api_key": {"secret_id": "abc"}}
    assert load(
        {"conversation_config.agent.prompt.custom_llm": ref}
    ).conversation_config.agent.prompt.custom_llm


HEADER_LINE = (
    "secrets are not read from the config file; use {secret_id: ID} (read from APPLIANCE_SECRET_<ID>) "
    "or a {{secret__...}} variable"
)
PH = "conversation_config.agent.dynamic_variables.dynamic_variable_placeholders"
LLM_HEADERS = "conversation_config.agent.prompt.custom_llm.request_headers"
HOOK_HEADERS = "appliance.tools[0].api_schema.request_headers"


def hook_with(headers: dict[str, Any]) -> list[dict[str, Any]]:
    return [{**HOOK, "api_schema": {"url": "https://x.test", "request_headers": headers}}]


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        # ordinary variables may have any name
        ({PH: {"token": "abc", "api_key": "shown-to-the-llm", "password": ""}}, []),
        ({"appliance.wake_words.words": [{"name": "alexa", "dynamic_variables": {"token": "t"}}]}, []),
        # templates in headers are not secrets
        ({"appliance.tools": hook_with({"api_key": "{{secret__x}}", "Authorization": "Bearer {{secret__x}}"})
          }, []),
        ({"appliance.tools": hook_with({"X-Device": "kiosk", "Accept": "application/json"})}, []),
        # a real secret in a secret__ placeholder, a wake word or a credential header
        ({PH: {"secret__x": SECRET}},
         [f"{PH}.secret__x: secret__ values are not read from the config file; set APPLIANCE_SECRET_X in "
          "the environment or as a systemd credential"]),
        ({"appliance.wake_words.words": [{"name": "alexa",
                                          "dynamic_variables": {"secret__user-token": SECRET}}]},
         ["appliance.wake_words.words[0].dynamic_variables.secret__user-token: secret__ values are not read "
          "from the config file; set APPLIANCE_SECRET_USER_TOKEN in the environment or as a systemd "
          "credential"]),
        ({"appliance.tools": hook_with({"Authorization": f"Bearer {SECRET}"})},
         [f"{HOOK_HEADERS}.Authorization: {HEADER_LINE}"]),
        ({f"{LLM_HEADERS}.xi-api-key": SECRET, "conversation_config.agent.prompt.custom_llm.url": "https://l.test"},
         [f"{LLM_HEADERS}.xi-api-key: {HEADER_LINE}"]),
    ],
)  # fmt: skip
def test_secrets_are_detected_only_where_credentials_live(
    settings: dict[str, Any], expected: list[str]
) -> None:
    if not expected:
        load(settings)
        return
    assert problems(settings) == expected
    assert all(SECRET not in line for line in expected)


def test_device_secrets_come_from_the_environment_and_unresolved_ones_fail_check_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from appliance.config import device_secret_problems, secret_variables

    headers = {"X-Key": {"secret_id": "weather-key"}, "Authorization": "Bearer {{secret__token}}"}
    settings = {"appliance.tools": hook_with(headers), PH: {"secret__token": "", "secret__unused": ""}}
    cfg = load(settings)
    assert device_secret_problems(cfg, {}) == [
        f"{HOOK_HEADERS}.Authorization: the secret variable secret__token has no value on the device (set "
        "APPLIANCE_SECRET_TOKEN in the environment or as a systemd credential)",
        f"{HOOK_HEADERS}.X-Key: the platform secret 'weather-key' is not on the device (set "
        "APPLIANCE_SECRET_WEATHER_KEY in the environment or as a systemd credential)",
    ]
    (tmp_path / "appliance_secret_weather_key").write_text("wk-123456\n")
    env = {"APPLIANCE_SECRET_TOKEN": "tok-abcdef", "CREDENTIALS_DIRECTORY": str(tmp_path)}
    assert device_secret_problems(cfg, env) == []
    assert secret_variables(cfg, env) == {"secret__token": "tok-abcdef"}
    path = tmp_path / "c.yaml"
    path.write_text(build(settings))
    monkeypatch.delenv("APPLIANCE_SECRET_TOKEN", raising=False)
    monkeypatch.delenv("APPLIANCE_SECRET_WEATHER_KEY", raising=False)
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    checked, lines = check_config(path)
    assert checked is None and any("secret__token has no value" in line for line in lines)
    monkeypatch.setenv("APPLIANCE_SECRET_TOKEN", "tok-abcdef")
    monkeypatch.setenv("APPLIANCE_SECRET_WEATHER_KEY", "wk-123456")
    assert check_config(path)[0] is not None


def test_read_secret_from_env_then_credentials_directory(tmp_path: Path) -> None:
    (tmp_path / "elevenlabs_api_key").write_text("from-file\n")
    creds = {"CREDENTIALS_DIRECTORY": str(tmp_path)}
    assert read_secret("ELEVENLABS_API_KEY", {"ELEVENLABS_API_KEY": "from-env", **creds}) == "from-env"
    assert read_secret("ELEVENLABS_API_KEY", {"ELEVENLABS_API_KEY": "", **creds}) == "from-file"
    assert read_secret("ELEVENLABS_API_KEY", creds) == "from-file"
    assert read_secret("OTHER_KEY", creds) is None
    assert read_secret("ELEVENLABS_API_KEY", {}) is None


# --- YAML and files ----------------------------------------------------------------------------


def test_yaml_syntax_error_gives_line_and_column() -> None:
    text = "appliance:\n  mode: local\n  audio: [1, 2\n  vad: {}\n"
    with pytest.raises(ConfigError) as exc:
        load_config_text(text, "bad.yaml")
    (line,) = exc.value.problems
    assert line.startswith("line 4, column ") and exc.value.source == "bad.yaml"


def test_duplicate_keys_are_errors_and_no_is_not_false() -> None:
    with pytest.raises(ConfigError) as exc:
        load_config_text("appliance:\n  mode: local\n  mode: remote\n", "dup.yaml")
    assert exc.value.problems == ["line 3, column 3: duplicate key 'mode'"]
    cfg = load_config_text("conversation_config:\n  agent:\n    language: no\n", "no.yaml")
    assert cfg.conversation_config.agent.language == "no"
    anchors = "appliance:\n  audio: &a {input_block_ms: 40, output_block_ms: 10}\n  vad: {threshold: .nan}\n"
    with pytest.raises(ConfigError) as exc:
        load_config_text(anchors, "nan.yaml")
    assert exc.value.problems == ["appliance.vad.threshold: nan is not a finite number"]
    merged = (
        "appliance:\n  local:\n    voices:\n"
        "      joe: &j {model: m, speed: 0.9}\n      fast: {<<: *j, speed: 1.2}\n"
    )
    fast = load_config_text(merged, "m.yaml").appliance.local.voices["fast"]
    assert (fast.model, fast.speed) == ("m", 1.2)


def test_missing_and_unreadable_files(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    cfg, lines = check_config(missing)
    assert cfg is None and lines == [f"{missing}: cannot read the file (No such file or directory)"]
    cfg, lines = check_config(tmp_path)
    assert cfg is None and len(lines) == 1 and lines[0].startswith(f"{tmp_path}: cannot read the file")
    binary = tmp_path / "bin.yaml"
    binary.write_bytes(b"appliance:\n  mode: \xff\n")
    assert check_config(binary) == (None, [f"{binary}: not UTF-8 text (bad byte at offset 19)"])


def test_check_config_returns_warnings_without_logging(
    caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(build({"name": "x", "conversation_config.tts.model_id": "eleven_flash_v2"}))
    with caplog.at_level(logging.WARNING):
        cfg, warnings = check_config(path)
    assert cfg is not None and cfg.base_dir == tmp_path.resolve()
    assert warnings == [f"name: {CLOUD_ONLY}", f"conversation_config.tts.model_id: {CLOUD_ONLY}"]
    assert caplog.records == []


# --- accessors ---------------------------------------------------------------------------------


def test_accessors() -> None:
    cfg = load(
        {
            f"{T}.turn_eagerness": "patient",
            f"{T}.silence_end_call_timeout": 12,
            f"{S}.timeout_seconds": 2.5,
            "conversation_config.conversation.client_events": ["audio", "agent_response"],
            "appliance.vad.threshold": 0.3,
        }
    )
    assert cfg.eagerness is TurnEagerness.PATIENT and cfg.end_silence_s == 1.5
    assert cfg.interruptions_enabled is False
    assert cfg.soft_timeout_s == 2.5 and cfg.silence_end_call_timeout_s == 12
    endpoint = cfg.endpoint_config()
    assert endpoint.threshold == 0.3 and endpoint.release_threshold == 0.3 and endpoint.end_silence_s == 1.5
    assert load({"appliance.vad.end_silence_s": 1.0}).end_silence_s == 1.0
    # speculative turns: on at 0.2 s of silence by default (at least 0.2 s: the paused audio is
    # then the audio the end hands over); null switches them off
    assert endpoint.pause_report_s == 0.2 and endpoint.preroll_s == 0.6
    assert load({"appliance.vad.speculate_after_s": None}).endpoint_config().pause_report_s is None
    assert load({"appliance.vad.speculate_after_s": 0.5}).endpoint_config().pause_report_s == 0.5
    assert problems({"appliance.vad.speculate_after_s": 0.1}) == [
        "appliance.vad.speculate_after_s: 0.1 is outside 0.2–2 seconds"
    ]


def test_resolve_models_dir(tmp_path: Path) -> None:
    cfg = load({})
    env = {"HOME": "/home/pi"}
    assert resolve_models_dir(cfg, env) == Path("/home/pi/.cache/appliance/models")
    assert resolve_models_dir(cfg, {**env, "XDG_CACHE_HOME": "/var/cache"}) == Path(
        "/var/cache/appliance/models"
    )
    assert resolve_models_dir(cfg, {**env, "APPLIANCE_MODELS_DIR": "/opt/models"}) == Path("/opt/models")
    path = tmp_path / "c.yaml"
    path.write_text(build({"appliance.models_dir": "models"}))
    assert (
        resolve_models_dir(load_config(path), {"APPLIANCE_MODELS_DIR": "/opt/models"})
        == tmp_path.resolve() / "models"
    )


# --- hostile YAML: bounded before anything is copied ---------------------------------------------


def alias_bomb(levels: int, under: str = "appliance:\n  custom_llm_extra_body:\n") -> str:
    """A "billion laughs" document: level i is nine aliases of level i-1 (9**levels values)."""
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, levels + 1)]
    return under + "".join(f"    {line}\n" for line in lines)


def only_problem(text: str) -> str:
    with pytest.raises(ConfigError) as exc:
        load_config_text(text, "hostile.yaml")
    assert exc.value.source == "hostile.yaml"
    (line,) = exc.value.problems
    return line


@pytest.mark.parametrize("levels", [5, 6])
def test_a_yaml_alias_bomb_is_refused_before_it_is_expanded(levels: int) -> None:
    # 8 levels took 59 s and 2.2 GB in _strip_secrets before; the limit refuses any depth at once
    assert only_problem(alias_bomb(levels)) == (
        "line 8, column 9: more than 100,000 values once aliases are expanded (a YAML alias bomb?); "
        "a configuration needs far fewer"
    )


def test_a_document_with_too_many_values_is_refused_without_aliases_too() -> None:
    flat = "appliance:\n  custom_llm_extra_body:\n    x: [" + "1, " * 100_001 + "]\n"
    assert only_problem(flat).startswith("line 3, column 8: more than 100,000 values once aliases are")


def test_aliases_within_the_budget_still_work() -> None:
    cfg = load_config_text(alias_bomb(3), "ok.yaml")  # 9**4 = 6561 values: a big but sane document
    body = cfg.appliance.custom_llm_extra_body
    assert len(body["a3"]) == 9 and body["a3"][0][0][0] == ["lol"] * 9


def test_nesting_is_limited_with_a_line_and_column_instead_of_a_recursion_error() -> None:
    deep = "appliance:\n  custom_llm_extra_body:\n    x: " + "[" * 600 + "]" * 600 + "\n"
    # the root, appliance and custom_llm_extra_body mappings and 97 lists: the 98th is refused
    assert only_problem(deep) == "line 3, column 105: nested more than 100 levels deep"
    flow = "[" * 2000 + "]" * 2000
    assert only_problem(flow) == "line 1, column 101: nested more than 100 levels deep"
    fine = "appliance:\n  custom_llm_extra_body:\n    x: " + "[" * 90 + "]" * 90 + "\n"
    node = load_config_text(fine, "ok.yaml").appliance.custom_llm_extra_body["x"]
    for _ in range(89):
        (node,) = node
    assert node == []


def test_aliases_cannot_nest_deeper_or_refer_to_themselves() -> None:
    # each anchor is 60 levels deep; the alias puts one inside the other: 120 levels once expanded
    inner = "[" * 59 + "1" + "]" * 59
    text = f"appliance:\n  custom_llm_extra_body:\n    a: &a {inner}\n    b: {'[' * 59}*a{']' * 59}\n"
    assert only_problem(text).endswith("nested more than 100 levels deep once aliases are expanded")
    recursive = "appliance:\n  custom_llm_extra_body:\n    a: &a [1, *a]\n"
    assert only_problem(recursive) == (
        "line 3, column 8: an alias refers to a node that contains it (a recursive structure)"
    )
    merge = "appliance:\n  custom_llm_extra_body: &m\n    <<: *m\n"
    assert only_problem(merge).endswith("(a recursive structure)")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("1" * 5000, "cannot be read as an integer (Exceeds the limit (4300 digits) for integer string "
         "conversion)"),
        ("2024-02-30", "cannot be read as a date (day is out of range for month)"),
    ],
)  # fmt: skip
def test_scalars_that_cannot_be_converted_are_problems_with_a_position(value: str, expected: str) -> None:
    assert (
        only_problem(f"appliance:\n  audio:\n    input_device: {value}\n") == f"line 3, column 19: {expected}"
    )


def test_control_characters_and_huge_files(tmp_path: Path) -> None:
    assert only_problem("appliance:\n  mode: lo\x00cal\n") == (
        "offset 21: unacceptable character #x0000 (special characters are not allowed)"
    )
    huge = tmp_path / "huge.yaml"
    huge.write_bytes(b"# padding\n" * 500_000)  # 5 MB of comments
    cfg, lines = check_config(huge)
    assert cfg is None and lines == [f"{huge}: larger than 4 MiB; this is not a configuration file"]


# --- JSON exports: parsed as JSON, with the same bounds and validation ------------------------


def json_problem(text: str) -> str:
    with pytest.raises(ConfigError) as exc:
        load_config_text(text, "agent.json")
    (line,) = exc.value.problems
    return line


def test_a_tab_indented_json_export_with_exponents_and_emoji_loads() -> None:
    text = (
        '{\n\t"conversation_config": {\n\t\t"agent": {\n'
        '\t\t\t"first_message": "Hi \\ud83d\\ude00",\n\t\t\t"prompt": {"temperature": 1e-05}\n\t\t},\n'
        '\t\t"turn": {"turn_timeout": 1E1}\n\t}\n}\n'
    )
    for source in ("agent.json", "agent.conf"):  # by name, or by the first character
        cc = load_config_text(text, source, log_warnings=False).conversation_config
        assert cc.agent.first_message == "Hi \U0001f600"
        assert cc.agent.prompt.temperature == 1e-05 and cc.turn.turn_timeout == 10.0


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            '{"conversation_config": {"agent": {"first_message": "Hi \\ud83d!"}}}',
            "conversation_config.agent.first_message: a lone UTF-16 surrogate escape (half of an "
            "emoji's \\uXXXX\\uXXXX pair); write the character or its complete pair",
        ),
        ('{"appliance": {"mode": "local",\n "mode": "remote"}}', "JSON: duplicate key 'mode'"),
        ('{"appliance": {"vad": {"threshold": NaN}}}', "invalid JSON (NaN is not a JSON number)"),
        ('{"appliance": {\n  "mode": "local",\n}}', "line 3, column 1: Expecting property name enclosed "
         "in double quotes (invalid JSON)"),
        ("[" * 2000 + "]" * 2000, "line 1, column 101: nested more than 100 levels deep"),
        ('{"appliance": {"custom_llm_extra_body": {"x": [' + "1, " * 100_000 + "1]}}}",
         "more than 100,000 values; a configuration needs far fewer"),
    ],
)  # fmt: skip
def test_json_problems(text: str, expected: str) -> None:
    assert json_problem(text) == expected


def test_yaml_surrogate_escapes_are_refused_too() -> None:
    text = 'conversation_config:\n  agent:\n    first_message: "Hi \\ud83d"\n'
    with pytest.raises(ConfigError) as exc:
        load_config_text(text, "a.yaml")
    assert exc.value.problems[0].startswith("conversation_config.agent.first_message: a lone UTF-16")


def test_json_brackets_in_strings_do_not_count_as_nesting() -> None:
    text = '{"appliance": {"custom_llm_extra_body": {"s": "[[[[{{{{", "x": ' + "[" * 97 + "]" * 97 + "}}}"
    body = load_config_text(text, "ok.json").appliance.custom_llm_extra_body
    assert body["s"] == "[[[[{{{{" and len(body["x"]) == 1


# --- a rich platform export (JSON, tab-indented): loads, with exactly these warnings -------------

RICH_WARNINGS = [
    f"agent_id: {CLOUD_ONLY}",
    f"name: {CLOUD_ONLY}",
    f"tags: {CLOUD_ONLY}",
    f"metadata: {CLOUD_ONLY}",
    f"workflow: {CLOUD_ONLY}",
    f"access_info: {CLOUD_ONLY}",
    f"conversation_config.vad: {CLOUD_ONLY}",
    f"conversation_config.asr.quality: {CLOUD_ONLY}",
    f"conversation_config.asr.provider: {CLOUD_ONLY}",
    f"conversation_config.turn.mode: {CLOUD_ONLY}",
    f"conversation_config.tts.model_id: {CLOUD_ONLY}",
    f"conversation_config.tts.optimize_streaming_latency: {CLOUD_ONLY}",
    f"conversation_config.tts.stability: {CLOUD_ONLY}",
    f"conversation_config.tts.similarity_boost: {CLOUD_ONLY}",
    f"conversation_config.tts.supported_voices[1].model_family: {CLOUD_ONLY}",
    f"conversation_config.tts.supported_voices[1].stability: {CLOUD_ONLY}",
    f"conversation_config.agent.prompt.ignore_default_personality: {CLOUD_ONLY}",
    f"conversation_config.agent.prompt.rag.embedding_model: {CLOUD_ONLY}",
    f"conversation_config.agent.prompt.rag.max_vector_distance: {CLOUD_ONLY}",
    "conversation_config.conversation.client_events[6]: 'agent_response_metadata' is not known "
    "to this device; ignored",
    "conversation_config.agent.prompt.built_in_tools.transfer_to_agent: cloud-only tool, "
    "ignored on the device",
    "conversation_config.agent.prompt.built_in_tools.transfer_to_number: cloud-only tool, "
    "ignored on the device",
    "conversation_config.agent.prompt.built_in_tools.play_keypad_touch_tone: cloud-only tool, "
    "ignored on the device",
    "conversation_config.agent.prompt.built_in_tools.voicemail_detection: cloud-only tool, "
    "ignored on the device",
    *(
        f"conversation_config.agent.prompt.knowledge_base[{i}]: platform document without a local "
        "path, ignored on the device"
        for i in range(3)
    ),
    "conversation_config.tts.voice_id: unknown local voice 'cjVigY5qzO86Huf0OWal'; the default "
    "voice 'joe' is used",
    "conversation_config.tts.supported_voices[0].voice_id: unknown local voice "
    "'JBFqnCBsd6RMkjVDRZzb'; the default voice 'joe' is used",
    "conversation_config.tts.supported_voices[1].voice_id: unknown local voice "
    "'pqHfZKP75CvOlQylNhV4'; the default voice 'joe' is used",
    "conversation_config.language_presets.de.overrides.tts.voice_id: unknown local voice "
    "'v3V1d2rk6528UrLKRuy8'; the default voice 'joe' is used",
    f"platform_settings.auth: {CLOUD_ONLY}",
    f"platform_settings.evaluation: {CLOUD_ONLY}",
    f"platform_settings.widget: {CLOUD_ONLY}",
    f"platform_settings.data_collection: {CLOUD_ONLY}",
    f"platform_settings.call_limits: {CLOUD_ONLY}",
    f"platform_settings.workspace_overrides: {CLOUD_ONLY}",
    f"platform_settings.testing: {CLOUD_ONLY}",
    f"platform_settings.archived: {CLOUD_ONLY}",
    f"platform_settings.safety: {CLOUD_ONLY}",
    "conversation_config.agent.prompt.tool_ids: ignored on the device: platform tools live in "
    "the cloud; device tools go under appliance.tools",
]


def test_a_rich_json_export_loads_with_the_expected_warnings(tmp_path: Path) -> None:
    path = FIXTURES / "elevenlabs_export_rich.json"
    assert "\t\t" in path.read_text() and "\\ud83d\\ude00" in path.read_text()
    cfg, warnings = check_config(path)
    assert cfg is not None, warnings
    assert warnings == RICH_WARNINGS
    cc = cfg.conversation_config
    assert cc.turn.turn_timeout == 10.0 and cc.agent.prompt.temperature == 1e-05
    assert cc.language_presets["de"].overrides.agent is not None
    assert cc.language_presets["de"].overrides.agent.first_message == "Hallo! Wie kann ich helfen? \U0001f600"
    assert [v.label for v in cc.tts.supported_voices] == ["Narrator", "Old Man"]
    # the same export as YAML loads the same way
    as_yaml = tmp_path / "export.yaml"
    as_yaml.write_text(yaml.safe_dump(json.loads(path.read_text()), allow_unicode=True, sort_keys=False))
    assert check_config(as_yaml)[1] == RICH_WARNINGS


def test_mcp_approval_policy() -> None:
    assert load({}).appliance.mcp_approval == "deny"
    assert load({"appliance.mcp_approval": "ask-never"}).appliance.mcp_approval == "ask-never"
    assert problems({"appliance.mcp_approval": "sometimes"}) == [
        "appliance.mcp_approval: 'sometimes' is not one of 'deny', 'allow' or 'ask-never'"
    ]


def test_a_voice_label_with_a_space_loads_without_a_warning() -> None:
    cfg = load({V: [{"label": "Old Man", "voice_id": "joe"}]})
    assert cfg.warnings == [] and cfg.conversation_config.tts.supported_voices[0].label == "Old Man"
