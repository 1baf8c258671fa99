"""One YAML file configures the appliance; `load_config` reads, validates and returns it.

Top-level keys: `conversation_config` and `platform_settings` (the ElevenLabs agent, field for
field, see `appliance.agent_config`) and `appliance` (the device; unknown keys are errors).
Every problem is collected and raised at once as a `ConfigError`, one line each:
`<dotted.path>: <value> <what is allowed>`. Secrets are never read from the file (`read_secret`).

The CLI's `appliance check-config FILE` calls `appliance.preflight.check_config(FILE)` (this
loader, then what a session would render): on `(config, warnings)` it prints "OK" and the
warnings and exits 0; on `(None, problems)` it prints the problems, exit 2.

Which LLM the local agent uses follows the platform: `conversation_config.agent.prompt.llm:
custom-llm` calls `prompt.custom_llm` (an OpenAI-compatible server), any other value runs the
device's llama.cpp model; `appliance.local.llm.backend` is an optional explicit override
(`Config.llm_backend` is the one answer). `custom_llm_access` resolves the custom LLM's key and
headers from the environment; every key and URL password the configuration names is registered
with the log redactor when the file is loaded, whatever the mode.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, Self, TypeVar
from urllib.parse import parse_qsl, urlsplit, urlunsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from appliance.agent_config import (
    CLOUD_ONLY,
    Assignment,
    ClientEvent,
    ConversationConfig,
    PlatformSettings,
    VariableMap,
    agent_warnings,
    cloud_only_warnings,
)
from appliance.config_parse import MAX_CONFIG_BYTES, is_json, lone_surrogates, parse_json, parse_yaml
from appliance.core import variables as dv
from appliance.core.conversation import LLM_FAILURE_MESSAGES
from appliance.core.doubletalk import BandDoubleTalkConfig, DoubleTalkConfig, linear_residual_config
from appliance.core.endpointing import END_SILENCE_S, EndpointConfig, TurnEagerness
from appliance.core.knowledge import fallback_text
from appliance.core.wakeword import WakeWordRule
from appliance.errors import ConfigError
from appliance.field_support import ignored_field_warnings
from appliance.logs import MASK, register_secret
from appliance.validation import (
    Bool,
    Int,
    Num,
    Text,
    between,
    fail,
    int_or_auto,
    matches,
    problem_line,
    show,
    threads_or_auto,
    url_with,
)

if TYPE_CHECKING:
    from appliance.wake_word_points import OperatingPoint
    from appliance.word_agents import WordBinding

_LOGGER = logging.getLogger(__name__)

DEFAULT_SOURCE = "<embedded default-config.yaml>"
DEFAULT_ECHO_CANCELLATION = "webrtc"
SECTIONS = ("conversation_config", "platform_settings", "appliance")
EXPORT_KEYS = ("name", "tags", "agent_id", "metadata", "workflow", "phone_numbers", "access_info")
SECRET_KEYS = frozenset({"api_key", "xi_api_key", "xi-api-key", "apikey", "token", "password", "secret"})
SECRET_PROBLEM = (
    "secrets are not read from the config file; "
    "set the ELEVENLABS_API_KEY environment variable or a systemd credential"
)
ELEVENLABS_API_KEY_ENV = "ELEVENLABS_API_KEY"
LLM_API_KEY_ENV = "APPLIANCE_LLM_API_KEY"
"""The custom LLM's key (environment or systemd credential `appliance_llm_api_key`)."""
SECRET_ENV_PREFIX = "APPLIANCE_SECRET_"
"""A platform secret `{secret_id: ID}` is read from APPLIANCE_SECRET_<ID> (upper case, other
characters than letters and digits as `_`), or the systemd credential of that name in lower case."""
CUSTOM_LLM = "custom-llm"
LlmBackend = Literal["llama_cpp", "openai"]
_SECRET_NAME_WORDS = ("auth", "key", "token", "secret", "passw", "cookie", "signature", "credential")


def _device_ref(v: object) -> object:
    if v is None or (isinstance(v, str) and v) or (isinstance(v, int) and not isinstance(v, bool) and v >= 0):
        return v
    fail(f"{show(v)} is not a device name or index")


def _upper(v: object) -> object:
    return v.upper() if isinstance(v, str) else v


DeviceRef = Annotated[str | int | None, BeforeValidator(_device_ref)]


class _Device(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())


class AudioConfig(_Device):
    input_device: DeviceRef = None
    output_device: DeviceRef = None
    input_block_ms: Annotated[Int, between(10, 500, "ms")] = 80
    output_block_ms: Annotated[Int, between(5, 200, "ms")] = 20
    input_queue_blocks: Annotated[Int, between(2, 1024, "blocks")] = 32
    output_volume: Annotated[Num, between(0, 2)] = 1.0
    echo_cancellation: Literal["off", "gate", "webrtc"] | None = None
    """What removes the agent's own voice from the microphone while it speaks: `webrtc` (the
    acoustic echo canceller, WebRTC AEC3), `gate` (subtract a one-tap delayed copy of the
    playback) or `off`. None (default) = `webrtc`, or `off` when the older
    `appliance.vad.playback_gating` is false; when both are set, this one wins."""


class WordAgent(_Device):
    """A wake word's own agent (`appliance/word_agents.py`): an agent file and/or overrides in
    the platform's names, deep-merged over the main config, and its own mode and agent id."""

    name: Text | None = None
    """For events and `check-config`; None = the agent file's `name`, its stem, or the word."""
    config: Text | None = None
    """An agent file (conversation_config / platform_settings), relative to this file."""
    mode: Literal["remote", "local", "auto"] | None = None
    """None = `appliance.mode`."""
    agent_id: Text | None = None
    """The remote agent (required with mode remote or auto; None = the file's `agent_id`)."""
    conversation_config: dict[str, Any] = {}
    platform_settings: dict[str, Any] = {}
    tools: Annotated[list[DeviceTool], AfterValidator(_unique_tools)] | None = None
    """Device tools of this agent in place of `appliance.tools` (None = those)."""


class WakeWord(_Device):
    name: str = ""
    path: Text | None = None
    # None: by the model (openWakeWord for its bundled names and .onnx files, microWakeWord for
    # okay_nabu and .tflite + .json models); see appliance/runtime/wake_words.py
    engine: Literal["openwakeword", "microwakeword"] | None = None
    threshold: Annotated[Num, between(0, 1, exclusive=True)] = 0.5
    patience_frames: Annotated[Int, between(1, 25, "frames")] = 1
    refractory_s: Annotated[Num, between(0, 30, "seconds")] = 2.0
    dynamic_variables: VariableMap = {}
    agent: WordAgent | None = None
    """This word's own agent (None = the main one)."""

    @model_validator(mode="after")
    def _name_from_path(self) -> Self:
        if not self.name:
            if self.path is None:
                fail("give a name (a bundled or custom model) or a path to a model file")
            self.name = Path(self.path).stem
        return self


def _wake_words(words: list[WakeWord]) -> list[WakeWord]:
    if not words:
        fail("at least one wake word is required")
    names = [w.name for w in words]
    if dupes := sorted({n for n in names if names.count(n) > 1}):
        fail(f"{', '.join(map(show, dupes))} listed more than once")
    return words


class WakeWordsConfig(_Device):
    custom_dir: Text | None = None
    words: Annotated[list[WakeWord], AfterValidator(_wake_words)] = Field(
        default_factory=lambda: [WakeWord(name="hey_jarvis")]
    )


class VadConfig(_Device):
    threshold: Annotated[Num, between(0.05, 0.95)] = 0.5
    min_speech_s: Annotated[Num, between(0.03, 2, "seconds")] = 0.2
    barge_in_min_speech_s: Annotated[Num, between(0.03, 2, "seconds")] | None = 0.06
    """While the agent speaks and the echo canceller (not gating) has run for 2.5 s of its turn:
    speech at or above `barge_in_threshold` this long interrupts it (faster than `min_speech_s`,
    which still applies too). None: only `min_speech_s`."""
    barge_in_threshold: Annotated[Num, between(0.05, 0.99)] = 0.8
    min_speech_converging_s: Annotated[Num, between(0.03, 2, "seconds")] | None = 0.4
    """While the agent speaks and the canceller has run less than 2 s of its turn (it is still
    converging and lets some of the agent's voice through), `min_speech_s` is this long instead
    (the longer of the two counts). None: `min_speech_s` throughout."""
    barge_in_double_talk_db: Annotated[Num, between(1, 30, "dB")] | None = 6.0
    """Before those 2.5 s the same rule counts the frames in which the raw microphone is this
    many dB louder, against the playback, than the echo alone has been (a second talker:
    `core.doubletalk`). None: the rule waits the 2.5 s."""
    barge_in_double_talk_bands: Annotated[int, Field(ge=1, le=16)] | None = None
    """The same per frequency band (16 bands of 500 Hz, 10 dB over each band's echo level): in
    frames with at least this many such bands (3 was measured), a second VAD on the raw
    microphone (before the canceller, which can suppress a user starting over loud agent speech)
    counts for the rule too. None (the default): off, no second VAD — in real time it once made
    the agent interrupt itself early in a turn (benchmarks/README.md, `agent.echo`)."""
    barge_in_linear_echo_db: Annotated[Num, between(3, 30, "dB")] | None = 10.0
    """Our own linear echo estimate as barge-in evidence (`adapters/linear_echo.py`, an adaptive
    filter on the raw microphone with the playback as its reference; what the session hears is
    still the canceller's output): in frames where the filter's residual rises this many dB over
    its echo estimate, above the level the echo alone has shown, a second VAD on that residual
    counts for the rule at any time of the turn (it catches the user who starts over loud agent
    speech, whom the canceller suppresses); 10 (the default) was measured. None: off, no filter, no
    second VAD (the agent then notices a user talking over it later: benchmarks/README.md,
    `agent.echo`)."""
    end_silence_s: Annotated[Num, between(0.1, 5, "seconds")] | None = None
    max_utterance_s: Annotated[Num, between(1, 120, "seconds")] = 15.0
    no_speech_timeout_s: Annotated[Num, between(1, 60, "seconds")] = 8.0
    preroll_s: Annotated[Num, between(0, 2, "seconds")] = 0.6
    speculate_after_s: Annotated[Num, between(0.2, 2, "seconds")] | None = 0.2
    """Local agent: this far into a silence, before the end decision, start the turn on the audio
    so far (STT, then the LLM and the first chunk's audio, into buffers; committed if the end
    confirms that audio, discarded without a trace if speech resumes). None: off. The end
    decision itself (turn eagerness, `end_silence_s`) does not change."""
    playback_gating: Bool = True
    """Deprecated: `appliance.audio.echo_cancellation` replaces it (false = off, true = the
    default canceller); `echo_cancellation` wins when both are set."""


class ChimesConfig(_Device):
    enabled: Bool = True
    volume: Annotated[Num, between(0, 1)] = 0.6
    wake: Text | None = None
    done: Text | None = None
    error: Text | None = None


class SttConfig(_Device):
    model: Text = "whisper-tiny.en"
    language: Text | None = None
    threads: Annotated[Int, between(1, 8)] = 2
    compute_type: Literal["int8", "int8_float32", "int16", "float32"] = "int8"
    beam_size: Annotated[int | str, int_or_auto(1, 10)] = "auto"
    """Whisper's beam; `auto`: 5 when the recogniser has a keyword prompt (`asr.keywords`, a
    knowledge base's venue names), else 1 (greedy). Measured on spoken commands, tiny.en, 15 s
    window: with the kiosk's keyword prompt beam 5 cut word errors from 9.1 % to 7.7 % (the
    kiosk's 44 questions: 12.0 % to 6.8 %, right answers 38 -> 39 of 44) for about 10 % more STT
    time; without a prompt it did not help (8.7 % / 9.1 %)."""
    min_window_s: Annotated[Num, between(1, 30, "s")] = 15.0
    """Whisper's encoder reads max(this, speech + 3 s) instead of always 30 s: about 2x less STT
    time on a short command for +0.4 points of word errors (adapters/whisper_stt.py). 30 restores
    Whisper's full window."""


class LlmConfig(_Device):
    backend: LlmBackend | None = None
    """An explicit override; None (default) follows conversation_config.agent.prompt.llm."""
    model: Text = "smollm2-135m-instruct"
    n_ctx: Annotated[Int, between(256, 32768, "tokens")] = 2048
    threads: Annotated[int | str, threads_or_auto(16)] = "auto"
    """llama.cpp threads; `auto`: 1 below 3 usable CPUs (a CPU quota counts), else 2
    (`runtime/cpus.py`). Its threads wait for each other at every step, so when STT and TTS share
    the cores or the CPU is short, more threads make the first chunk later (issue 12: pi-class
    pi5 0.39 s with 1 thread against 4.06 s with 2, first audio 2.5 s against 7.0 s)."""
    history_tokens: Annotated[Int, between(64, None, "tokens")] = 1024


class LocalVoice(_Device):
    model: Text
    config: Text | None = None
    speaker: Annotated[Int, between(0)] = 0
    speed: Annotated[Num, between(0.7, 1.2)] = 1.0
    noise_scale: Annotated[Num, between(0, 2)] | None = None
    noise_w_scale: Annotated[Num, between(0, 2)] | None = None
    language: Text = "en"


def _failure_message(v: object) -> object:
    """One apology (a text) or one per language code (a mapping), each 1–200 characters."""

    def check(text: object, where: str) -> None:
        if not isinstance(text, str):
            fail(f"{where}{show(text)} is not a text")
        if not 1 <= len(text.strip()) <= 200:
            fail(f"{where}{show(text)} is outside 1–200 characters")

    if isinstance(v, dict):
        for code, text in v.items():
            if not isinstance(code, str) or not re.fullmatch(r"[A-Za-z]{2,3}([-_][A-Za-z0-9]{2,8})?", code):
                fail(f"{show(code)} is not a language code (like en or pt-br)")
            check(text, f"{code}: ")
    elif v is not None:
        check(v, "")
    return v


FailureMessage = Annotated[str | dict[str, str] | None, BeforeValidator(_failure_message)]


class LocalConfig(_Device):
    stt: SttConfig = Field(default_factory=SttConfig)
    llm: LlmConfig = Field(default_factory=LlmConfig)
    voices: dict[str, LocalVoice] = Field(
        default_factory=lambda: {"joe": LocalVoice(model="piper-en_US-joe-medium")}
    )
    default_voice: Text = "joe"
    preload_voices: list[str] = []
    voice_cache_size: Annotated[Int, between(1, 10, "voices")] = 3
    tts_threads: Annotated[int | str, threads_or_auto(8)] = "auto"
    """Piper's ONNX intra-op threads; `auto` as for `llm.threads` (`runtime/cpus.py`)."""
    max_reply_seconds: Annotated[Num, between(5, 600, "seconds")] = 45.0
    """A reply ends (at a sentence end) before this much speech, estimated from its text."""
    max_reply_tokens: Annotated[Int, between(16, 8192, "tokens")] = 400
    """The most tokens asked of the LLM per reply (with `prompt.max_tokens` if that is lower)."""
    knowledge_guard: bool = True
    """A local knowledge base's grounding guard: a reply that states numbers or names the
    retrieved facts do not hold, or none of the best fact's, is replaced by that fact (event
    `knowledge_grounding`; docs/knowledge-base.md). False lets the LLM's reply stand."""
    knowledge_fallback: FailureMessage = None
    """With `knowledge_guard`: said instead of a reply that states a number or name nothing
    retrieved, the prompt or the question holds, when retrieval found nothing covering the
    question. One text, or one per language code; None = the built-in line in en, de, fr, es,
    it, pt or nl (English otherwise)."""
    llm_failure_message: FailureMessage = None
    """Said when the LLM fails: one text for every language, or one per language code;
    None = the built-in apology in en, de, fr, es, it, pt or nl (English otherwise)."""

    def llm_failure_messages(self) -> dict[str, str]:
        """The apology per language code (`en` is the fallback for a language without one)."""
        configured = self.llm_failure_message
        if configured is None:
            return dict(LLM_FAILURE_MESSAGES)
        if isinstance(configured, str):
            return {"en": configured.strip()}
        return {code.lower().replace("_", "-"): text.strip() for code, text in configured.items()}

    def knowledge_fallback_text(self, language: str) -> str:
        """The knowledge guard's fallback line in `language` (see `knowledge_fallback`)."""
        configured = self.knowledge_fallback
        if isinstance(configured, str):
            return configured.strip()
        table = (
            None
            if configured is None
            else {k.lower().replace("_", "-"): v.strip() for k, v in configured.items()}
        )
        return fallback_text(language, table)


class RemoteConfig(_Device):
    base_url: Annotated[str, url_with("wss", "ws")] = "wss://api.elevenlabs.io"
    agent_id: Text | None = None
    requires_auth: Bool = False
    chunk_ms: Annotated[Int, between(20, 500, "ms")] = 100
    reconnect_attempts: Annotated[Int, between(0, 10)] = 3
    reconnect_backoff_s: Annotated[Num, between(0.01, 30, "seconds")] = 0.5
    """First reconnect delay; doubles per attempt (up to 8 s), with jitter."""
    stall_timeout_s: Annotated[Num, between(1, 120, "seconds")] = 20.0
    """No frame from the server for this long: the connection is dead (reconnect)."""
    failover_cooldown_s: Annotated[Num, between(0, 3600, "seconds")] = 30.0
    """mode auto: after a remote failure, new conversations go local for this long."""
    user_id: Text | None = None


class ApiSchema(_Device):
    url: Annotated[str, url_with("http", "https")]
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE"] = "GET"
    path_params_schema: dict[str, Any] | None = None
    query_params_schema: dict[str, Any] | None = None
    request_body_schema: dict[str, Any] | None = None
    request_headers: dict[str, Any] | None = None
    auth_connection: dict[str, Any] | None = None


class DeviceTool(_Device):
    """A webhook or client tool in the platform's shape; `handler` is the device-side extra."""

    type: Literal["webhook", "client"]
    name: Annotated[str, matches(r"[a-zA-Z0-9_-]{1,64}", "1–64 letters, digits, _ or -")]
    description: Text
    response_timeout_secs: Annotated[Int, between(1, 120, "seconds")] = 20
    disable_interruptions: Bool = False
    force_pre_tool_speech: Bool = False
    assignments: list[Assignment] = []
    dynamic_variables: dict[str, Any] = {}
    parameters: dict[str, Any] | None = None
    expects_response: Bool = False
    api_schema: ApiSchema | None = Field(None, validate_default=True)
    handler: Annotated[str, matches(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*", "package.module:function")] | None = None
    """Client tools: the Python function that runs it; None = one the runtime registers by name."""

    @field_validator("api_schema", "handler", "parameters", "expects_response")
    @classmethod
    def _for_kind(cls, v: object, info: ValidationInfo) -> object:
        kind, needs = info.data.get("type"), "webhook" if info.field_name == "api_schema" else "client"
        if kind == needs == "webhook" and v is None:
            fail("required for a webhook tool")
        if kind is not None and kind != needs and v not in (None, False):
            fail(f"only for {needs} tools")
        return v


def _unique_tools(tools: list[DeviceTool]) -> list[DeviceTool]:
    names = [t.name for t in tools]
    if dupes := sorted({n for n in names if names.count(n) > 1}):
        fail(f"tool names must be unique: {', '.join(map(show, dupes))} listed more than once")
    return tools


class LoggingConfig(_Device):
    level: Annotated[Literal["DEBUG", "INFO", "WARNING", "ERROR"], BeforeValidator(_upper)] = "INFO"


class StatusConfig(_Device):
    """The status feed for makers (docs/status-feed.md)."""

    enabled: Bool = True
    socket: Text | None = None
    """Unix socket path; None = $RUNTIME_DIRECTORY/appliance.sock, else ~/.cache/appliance/."""


class RecordingConfig(_Device):
    """Local recordings of turns, kept as platform_settings.privacy allows; off by default."""

    enabled: Bool = False
    dir: Text | None = None
    """None = $STATE_DIRECTORY/recordings, else ~/.local/state/appliance/recordings."""


class ApplianceConfig(_Device):
    mode: Literal["remote", "local", "auto"] = "local"
    models_dir: Text | None = None
    audio: AudioConfig = Field(default_factory=AudioConfig)
    wake_words: WakeWordsConfig = Field(default_factory=WakeWordsConfig)
    vad: VadConfig = Field(default_factory=VadConfig)
    chimes: ChimesConfig = Field(default_factory=ChimesConfig)
    local: LocalConfig = Field(default_factory=LocalConfig)
    remote: RemoteConfig = Field(default_factory=RemoteConfig)
    tools: Annotated[list[DeviceTool], AfterValidator(_unique_tools)] = []
    custom_llm_extra_body: dict[str, Any] = {}
    mcp_approval: Literal["deny", "allow", "ask-never"] = "deny"
    """Remote mode: the answer to an MCP tool call awaiting approval (`mcp_tool_approval_result`):
    deny or allow it at once, or `ask-never`: send nothing (the platform's approval timeout,
    300 s by default, rejects it)."""
    logging: LoggingConfig = Field(default_factory=LoggingConfig)
    status: StatusConfig = Field(default_factory=StatusConfig)
    recording: RecordingConfig = Field(default_factory=RecordingConfig)


@dataclass(frozen=True)
class Config:
    conversation_config: ConversationConfig
    platform_settings: PlatformSettings
    appliance: ApplianceConfig
    warnings: list[str] = field(default_factory=list)
    source: str = DEFAULT_SOURCE
    base_dir: Path | None = None
    """Relative paths in the file are relative to this (the file's folder; None = the cwd)."""
    word_agents: Mapping[str, WordBinding] = field(default_factory=dict)
    """The wake words that bring their own agent (`appliance/word_agents.py`), by word."""
    wake_word_points: Mapping[str, OperatingPoint] = field(default_factory=dict)
    """Each word's threshold and patience, a trained word's from its NAME.wakeword.json where the
    config does not set them (`appliance.wake_word_points.operating_points`), by word."""

    def agent_for(self, wake_word: str) -> Config:
        """The configuration of the agent `wake_word` opens (this one unless the word binds its own)."""
        binding = self.word_agents.get(wake_word)
        return binding.config if binding is not None else self

    def agent_configs(self) -> list[Config]:
        """Every agent configuration a session can open: this one (the words without their own
        agent, and push-to-talk), then each word's own."""
        return [self, *(b.config for b in self.word_agents.values())]

    @property
    def uses_local_agent(self) -> bool:
        """Some wake word opens a local agent (mode local or auto): the local models load."""
        return any(c.appliance.mode != "remote" for c in self.agent_configs())

    @property
    def llm_backend(self) -> LlmBackend:
        """The LLM the local agent uses: `openai` calls prompt.custom_llm, `llama_cpp` the
        device's model (`select_llm`)."""
        return select_llm(self.conversation_config.agent.prompt.llm, self.appliance.local.llm.backend)

    @property
    def eagerness(self) -> TurnEagerness:
        return self.conversation_config.turn.turn_eagerness

    @property
    def interruptions_enabled(self) -> bool:
        return ClientEvent.INTERRUPTION in self.conversation_config.conversation.client_events

    @property
    def end_silence_s(self) -> float:
        explicit = self.appliance.vad.end_silence_s
        return END_SILENCE_S[self.eagerness] if explicit is None else explicit

    @property
    def soft_timeout_s(self) -> float | None:
        """Seconds before the filler message is spoken, or None when off."""
        t = self.conversation_config.turn.soft_timeout_config.timeout_seconds
        return None if t == -1 else t

    @property
    def silence_end_call_timeout_s(self) -> float | None:
        t = self.conversation_config.turn.silence_end_call_timeout
        return None if t == -1 else t

    @property
    def echo_cancellation(self) -> str:
        """`off`, `gate` or an engine name: `appliance.audio.echo_cancellation` if set, else
        from the older `appliance.vad.playback_gating` (false = off), else the canceller."""
        chosen = self.appliance.audio.echo_cancellation
        if chosen is not None:
            return chosen
        return DEFAULT_ECHO_CANCELLATION if self.appliance.vad.playback_gating else "off"

    def voice(self, voice_id: str | None) -> tuple[str, LocalVoice]:
        """The local voice for an ElevenLabs voice_id; unknown or None → the default voice."""
        local = self.appliance.local
        name = voice_id if voice_id in local.voices else local.default_voice
        return name, local.voices[name]

    def double_talk_config(self) -> DoubleTalkConfig | None:
        margin = self.appliance.vad.barge_in_double_talk_db
        if margin is None or self.appliance.vad.barge_in_min_speech_s is None:
            return None
        return DoubleTalkConfig(margin_db=float(margin))

    def band_double_talk_config(self) -> BandDoubleTalkConfig | None:
        bands = self.appliance.vad.barge_in_double_talk_bands
        if bands is None or self.appliance.vad.barge_in_min_speech_s is None:
            return None
        return BandDoubleTalkConfig(min_bands=int(bands))

    def linear_echo_config(self) -> DoubleTalkConfig | None:
        margin = self.appliance.vad.barge_in_linear_echo_db
        if margin is None or self.appliance.vad.barge_in_min_speech_s is None:
            return None
        return linear_residual_config(float(margin))

    def endpoint_config(self) -> EndpointConfig:
        vad = self.appliance.vad
        return EndpointConfig(
            threshold=vad.threshold,
            release_threshold=min(EndpointConfig.release_threshold, vad.threshold),
            min_speech_s=vad.min_speech_s,
            barge_in_min_speech_s=vad.barge_in_min_speech_s,
            barge_in_threshold=vad.barge_in_threshold,
            converging_min_speech_s=vad.min_speech_converging_s,
            end_silence_s=self.end_silence_s,
            max_utterance_s=vad.max_utterance_s,
            preroll_s=vad.preroll_s,
            pause_report_s=vad.speculate_after_s,
        )

    def wake_word_rules(self) -> dict[str, WakeWordRule]:
        return {
            w.name: WakeWordRule(
                w.name,
                p.threshold if (p := self.wake_word_points.get(w.name)) else w.threshold,
                p.patience_frames if p else w.patience_frames,
                w.refractory_s,
            )
            for w in self.appliance.wake_words.words
        }

    def resolve_path(self, path: str | Path) -> Path:
        p = Path(path).expanduser()
        return p if p.is_absolute() or self.base_dir is None else self.base_dir / p


def _secret_problem(key: str, value: str, where: str) -> str | None:
    """Why the plain string `value` under `key` is a secret the file must not hold, or None.

    Only where credentials live: a credential key (`api_key`, `token`, ...) outside variable maps,
    a header whose name looks like a credential (`Authorization`, `X-Api-Key`), and the value of a
    `secret__` dynamic variable. A value that refers to variables (`"Bearer {{secret__x}}"`) is
    a template, not a secret; an ordinary variable may be called `token`."""
    if not value:
        return None
    if where == "variables":
        if key.startswith(dv.SECRET_PREFIX):
            return (
                "secret__ values are not read from the config file; set "
                f"{secret_variable_env_name(key)} in the environment or as a systemd credential"
            )
        return None
    if dv.references(value):
        return None
    if where == "headers" and looks_secret(key):
        return (
            "secrets are not read from the config file; use {secret_id: ID} (read from "
            f"{SECRET_ENV_PREFIX}<ID>) or a {{{{secret__...}}}} variable"
        )
    if key.lower() in SECRET_KEYS:
        return SECRET_PROBLEM
    return None


_VARIABLE_MAPS = frozenset({"dynamic_variable_placeholders", "dynamic_variables"})


def _strip_secrets(node: object, path: str, problems: list[str], where: str = "") -> object:
    """A copy of the document without plain-string secrets; each one becomes a problem."""
    if isinstance(node, dict):
        out: dict[object, object] = {}
        for key, value in node.items():
            sub = f"{path}.{key}" if path else str(key)
            plain = isinstance(key, str) and isinstance(value, str)
            problem = _secret_problem(key, value, where) if plain else None
            if problem is not None:
                problems.append(f"{sub}: {problem}")
                continue
            inner = "variables" if key in _VARIABLE_MAPS else "headers" if key == "request_headers" else ""
            out[key] = _strip_secrets(value, sub, problems, inner)
        return out
    if isinstance(node, list):
        return [_strip_secrets(v, f"{path}[{i}]", problems) for i, v in enumerate(node)]
    return node


M = TypeVar("M", bound=BaseModel)


def _validate(cls: type[M], data: object, section: str, problems: list[str]) -> M | None:
    try:
        return cls.model_validate({} if data is None else data)
    except ValidationError as err:
        problems.extend(problem_line(cls, section, e) for e in err.errors())
        return None


def _device_checks(ap: ApplianceConfig) -> list[str]:
    local, out = ap.local, []
    voices = ", ".join(local.voices) or "none"
    if local.default_voice not in local.voices:
        out.append(f"appliance.local.default_voice: {show(local.default_voice)} is not in voices ({voices})")
    for i, name in enumerate(local.preload_voices):
        if name not in local.voices:
            out.append(f"appliance.local.preload_voices[{i}]: {show(name)} is not in voices ({voices})")
    if local.llm.history_tokens > local.llm.n_ctx:
        out.append(
            f"appliance.local.llm.history_tokens: {local.llm.history_tokens} is outside 64–{local.llm.n_ctx}"
            " tokens (at most n_ctx)"
        )
    if ap.mode != "local" and ap.remote.agent_id is None:
        out.append(f"appliance.remote.agent_id: required when appliance.mode is {show(ap.mode)}")
    return out


def _device_warnings(ap: ApplianceConfig) -> list[str]:
    if "playback_gating" not in ap.vad.model_fields_set:
        return []
    gating, chosen = ap.vad.playback_gating, ap.audio.echo_cancellation
    path = "appliance.vad.playback_gating"
    if chosen is None:
        meaning = f"{DEFAULT_ECHO_CANCELLATION} (the default)" if gating else "off"
        return [f"{path}: deprecated, use appliance.audio.echo_cancellation (now {meaning})"]
    if gating != (chosen != "off"):
        return [f"{path}: {show(gating)} ignored: appliance.audio.echo_cancellation ({show(chosen)}) wins"]
    return []


def select_llm(platform_llm: str | None, override: LlmBackend | None) -> LlmBackend:
    """The platform's meaning: `custom-llm` calls the custom LLM (`openai`), any other LLM name
    (or none) runs the device's own model (`llama_cpp`); an explicit `override` wins (a
    contradicting one is refused by `load_config`)."""
    if override is not None:
        return override
    return "openai" if platform_llm == CUSTOM_LLM else "llama_cpp"


def _llm_checks(cc: ConversationConfig, ap: ApplianceConfig | None) -> list[str]:
    prompt = cc.agent.prompt
    override = ap.local.llm.backend if ap is not None else None
    problems: list[str] = []
    if prompt.llm == CUSTOM_LLM and override == "llama_cpp":
        problems.append(
            "appliance.local.llm.backend: 'llama_cpp' contradicts conversation_config.agent.prompt.llm "
            "'custom-llm' (which calls prompt.custom_llm): remove the override to use the custom LLM, "
            "or set prompt.llm to another model to use the device's llama.cpp model"
        )
    if prompt.custom_llm is None or prompt.custom_llm.url is None:
        path = "conversation_config.agent.prompt.custom_llm.url"
        if override == "openai":
            problems.append(f"{path}: required when appliance.local.llm.backend is 'openai'")
        elif prompt.llm == CUSTOM_LLM:
            problems.append(f"{path}: required when conversation_config.agent.prompt.llm is 'custom-llm'")
    return problems


def _joint_checks(cc: ConversationConfig, ap: ApplianceConfig | None) -> tuple[list[str], list[str]]:
    problems = _llm_checks(cc, ap)
    warnings: list[str] = []
    if ap is None or ap.mode == "remote" or ap.local.default_voice not in ap.local.voices:
        return problems, warnings
    used = [("conversation_config.tts.voice_id", cc.tts.voice_id)]
    used += [
        (f"conversation_config.tts.supported_voices[{i}].voice_id", v.voice_id)
        for i, v in enumerate(cc.tts.supported_voices)
    ]
    for lang, preset in cc.language_presets.items():
        if preset.overrides.tts is not None:
            used.append(
                (
                    f"conversation_config.language_presets.{lang}.overrides.tts.voice_id",
                    preset.overrides.tts.voice_id,
                )
            )
    for path, voice_id in used:
        if voice_id is not None and voice_id not in ap.local.voices:
            default = show(ap.local.default_voice)
            warnings.append(
                f"{path}: unknown local voice {show(voice_id)}; the default voice {default} is used"
            )
    return problems, warnings


def load_config_text(
    text: str, source: str, *, base_dir: Path | None = None, log_warnings: bool = True
) -> Config:
    """Parse and validate a whole configuration; raise `ConfigError` with every problem."""
    try:
        data = parse_json(text) if is_json(text, source) else parse_yaml(text)
    except ConfigError as err:
        raise ConfigError(err.problems, source=source) from None
    problems: list[str] = []
    warnings: list[str] = []
    if not isinstance(data, dict):
        what = "empty" if data is None else f"{show(data)}, not a mapping"
        raise ConfigError(
            [f"top level: the document is {what} (expected keys: {', '.join(SECTIONS)})"], source=source
        )
    lone_surrogates(data, "", problems)
    doc = _strip_secrets(data, "", problems)
    assert isinstance(doc, dict)
    for key in doc:
        if key in EXPORT_KEYS:
            warnings += [f"{key}: {CLOUD_ONLY}"] if doc[key] not in (None, [], {}) else []
        elif key not in SECTIONS:
            allowed = ", ".join(SECTIONS + EXPORT_KEYS)
            problems.append(f"{key}: unknown top-level key (allowed: {allowed})")
    cc = _validate(ConversationConfig, doc.get("conversation_config"), "conversation_config", problems)
    ps = _validate(PlatformSettings, doc.get("platform_settings"), "platform_settings", problems)
    ap = _validate(ApplianceConfig, doc.get("appliance"), "appliance", problems)
    if ap is not None:
        problems += _device_checks(ap)
        warnings += _device_warnings(ap)
    if cc is not None:
        more_problems, more_warnings = _joint_checks(cc, ap)
        problems += more_problems
        warnings += agent_warnings(cc) + more_warnings
    if ps is not None:
        warnings += cloud_only_warnings(ps, "platform_settings")
    if cc is not None and ps is not None and ap is not None and ap.mode != "remote":
        warnings += ignored_field_warnings(cc, "conversation_config")
        warnings += ignored_field_warnings(ps, "platform_settings")
        warnings += ignored_field_warnings(ap.tools, "appliance.tools")
    if problems or cc is None or ps is None or ap is None:
        raise ConfigError(problems, source=source)
    config = Config(cc, ps, ap, warnings, source, base_dir)
    from appliance.wake_word_points import operating_points

    points, problems = operating_points(config)  # a trained word's NAME.wakeword.json
    if problems:
        raise ConfigError(problems, source=source)
    config = dataclasses.replace(config, wake_word_points=points)
    if any(w.agent is not None for w in ap.wake_words.words):
        from appliance.word_agents import bind_word_agents

        bindings, problems, more_warnings = bind_word_agents(doc, config)
        if problems:
            raise ConfigError(problems, source=source)
        warnings += more_warnings
        config = dataclasses.replace(config, word_agents=bindings)
    for agent in [config, *(b.config for b in config.word_agents.values())]:
        register_config_secrets(agent)  # a word's agent file may name its own
    if log_warnings:
        for warning in warnings:
            _LOGGER.warning("%s: %s", source, warning)
    return config


def load_config(path: str | Path | None, *, log_warnings: bool = True) -> Config:
    """Load the file at `path`, or the embedded default configuration when `path` is None."""
    if path is None:
        text = resources.files("appliance").joinpath("assets/default-config.yaml").read_text("utf-8")
        return load_config_text(text, DEFAULT_SOURCE, log_warnings=log_warnings)
    p = Path(path).expanduser()
    try:
        with p.open("rb") as f:  # bounded: /dev/zero or a huge file must not fill the memory
            raw = f.read(MAX_CONFIG_BYTES + 1)
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError([f"{p}: not UTF-8 text (bad byte at offset {err.start})"], source=str(p)) from None
    except OSError as err:  # missing, a directory, no permission...
        raise ConfigError([f"{p}: cannot read the file ({err.strerror or err})"], source=str(p)) from None
    if len(raw) > MAX_CONFIG_BYTES:
        limit = MAX_CONFIG_BYTES // (1024 * 1024)
        raise ConfigError([f"{p}: larger than {limit} MiB; this is not a configuration file"], source=str(p))
    return load_config_text(text, str(p), base_dir=p.resolve().parent, log_warnings=log_warnings)


def read_secret(name: str, env: Mapping[str, str] | None = None) -> str | None:
    """The secret `name` from the environment, else `$CREDENTIALS_DIRECTORY/<name lowercased>`
    (systemd `LoadCredential=`), else None. Surrounding whitespace is removed."""
    env = os.environ if env is None else env
    value = env.get(name, "").strip()
    if value:
        return value
    cred_dir = env.get("CREDENTIALS_DIRECTORY")
    if cred_dir:
        try:
            value = (Path(cred_dir) / name.lower()).read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError):
            return None
    return value or None


def resolve_models_dir(cfg: Config, env: Mapping[str, str] | None = None) -> Path:
    """`appliance.models_dir`, else $APPLIANCE_MODELS_DIR, $XDG_CACHE_HOME/appliance/models or
    ~/.cache/appliance/models."""
    env = os.environ if env is None else env
    if cfg.appliance.models_dir is not None:
        return cfg.resolve_path(cfg.appliance.models_dir)
    if env.get("APPLIANCE_MODELS_DIR"):
        return Path(env["APPLIANCE_MODELS_DIR"]).expanduser()
    cache = Path(env["XDG_CACHE_HOME"]) if env.get("XDG_CACHE_HOME") else None
    if cache is None:
        home = Path(env["HOME"]) if env.get("HOME") else Path.home()
        cache = home / ".cache"
    return cache / "appliance" / "models"


# ---------------------------------------------------------------------- the custom LLM's access


def secret_env_name(secret_id: str) -> str:
    """Where the device reads the platform secret `{secret_id: ...}`: APPLIANCE_SECRET_<ID>."""
    return SECRET_ENV_PREFIX + re.sub(r"[^A-Za-z0-9]", "_", secret_id).upper()


def secret_variable_env_name(name: str) -> str:
    """Where the device reads the dynamic variable `secret__x`: APPLIANCE_SECRET_X."""
    return secret_env_name(name.removeprefix(dv.SECRET_PREFIX))


def _header_variables(value: object) -> list[str]:
    if isinstance(value, Mapping) and isinstance(value.get("variable_name"), str):
        return [value["variable_name"]]
    return dv.references(value) if isinstance(value, str) else []


def _secret_variable_uses(config: Config) -> dict[str, str]:
    """Every `secret__` variable the configuration names → where (a dotted path): the first
    header that uses it, else where it is declared."""
    agent = config.conversation_config.agent
    uses: dict[str, str] = {}
    custom = agent.prompt.custom_llm
    for header, value in (custom.request_headers if custom is not None else {}).items():
        for name in _header_variables(value):
            uses.setdefault(name, f"conversation_config.agent.prompt.custom_llm.request_headers.{header}")
    for i, tool in enumerate(config.appliance.tools):
        for header, value in ((tool.api_schema.request_headers or {}) if tool.api_schema else {}).items():
            for name in _header_variables(value):
                uses.setdefault(name, f"appliance.tools[{i}].api_schema.request_headers.{header}")
    placeholders = "conversation_config.agent.dynamic_variables.dynamic_variable_placeholders"
    for name in agent.dynamic_variables.dynamic_variable_placeholders:
        uses.setdefault(name, f"{placeholders}.{name}")
    for i, word in enumerate(config.appliance.wake_words.words):
        for name in word.dynamic_variables:
            uses.setdefault(name, f"appliance.wake_words.words[{i}].dynamic_variables.{name}")
    return {name: where for name, where in uses.items() if name.startswith(dv.SECRET_PREFIX)}


def secret_variables(config: Config, env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The `secret__` dynamic variables the configuration names, with their values from the
    environment (`APPLIANCE_SECRET_<NAME>`, `secret__` removed) or systemd credentials; a variable
    the device has no value for is left out."""
    out: dict[str, str] = {}
    for name in _secret_variable_uses(config):
        value = read_secret(secret_variable_env_name(name), env)
        if value is not None:
            out[name] = value
    return out


def device_secret_problems(config: Config, env: Mapping[str, str] | None = None) -> list[str]:
    """Secrets a tool header or the custom LLM's variable headers need and the device cannot
    resolve: a `{secret_id}` header of a webhook tool, a `secret__` variable used in a header.
    `check-config` and the start refuse them, so no call fails for a missing secret."""
    problems: list[str] = []
    assigned = {a.dynamic_variable for tool in config.appliance.tools for a in tool.assignments}
    for name, where in _secret_variable_uses(config).items():
        in_header = ".request_headers." in where and name not in assigned
        if in_header and read_secret(secret_variable_env_name(name), env) is None:
            problems.append(
                f"{where}: the secret variable {name} has no value on the device (set "
                f"{secret_variable_env_name(name)} in the environment or as a systemd credential)"
            )
    for i, tool in enumerate(config.appliance.tools):
        for header, value in ((tool.api_schema.request_headers or {}) if tool.api_schema else {}).items():
            if isinstance(value, Mapping) and isinstance(value.get("secret_id"), str):
                name = secret_env_name(value["secret_id"])
                if read_secret(name, env) is None:
                    problems.append(
                        f"appliance.tools[{i}].api_schema.request_headers.{header}: the platform secret "
                        f"{show(value['secret_id'])} is not on the device (set {name} in the environment "
                        "or as a systemd credential)"
                    )
    return problems


def looks_secret(name: str) -> bool:
    """A header or query parameter name whose value works as a credential."""
    lowered = name.lower()
    return any(word in lowered for word in _SECRET_NAME_WORDS)


def url_credentials(url: str) -> list[str]:
    """The parts of a URL that are credentials: the password (the user name when it stands
    alone, as a token), and query values whose names look secret (`?api_key=...`)."""
    try:
        parts = urlsplit(url)
        username, password = parts.username, parts.password
    except ValueError:
        return []
    out = [password] if password else [username] if username else []
    out += [value for name, value in parse_qsl(parts.query, keep_blank_values=False) if looks_secret(name)]
    return [v for v in out if v]


def display_url(url: str) -> str:
    """`url` for people to read: the password (or a lone user name) and secret query values as ***."""
    try:
        parts = urlsplit(url)
        username, password, host = parts.username, parts.password, parts.hostname
        port = parts.port
    except ValueError:
        return MASK
    netloc = parts.netloc
    if username or password:
        hostport = (host or "") + (f":{port}" if port is not None else "")
        netloc = f"{username}:{MASK}@{hostport}" if password else f"{MASK}@{hostport}"
    query = "&".join(
        f"{name}={MASK}" if looks_secret(name) else pair
        for pair in parts.query.split("&")
        if pair
        for name in [pair.partition("=")[0]]
    )
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


@dataclass(frozen=True)
class CustomLlmAccess:
    """How the device calls `prompt.custom_llm`, with what the environment provides."""

    url: str
    model_id: str | None
    api_key: str | None
    api_key_source: str
    """Where the key came from (an environment variable name), or "none"."""
    headers: dict[str, str]
    """Constant headers and resolved `{secret_id}` headers."""
    variable_headers: dict[str, str]
    """Header name → dynamic variable (`{variable_name}`), filled in per conversation."""
    api_version: str | None
    notes: list[str]
    """What could not be resolved, one line each with its dotted path."""
    secrets: list[str]
    """Values never to show: the key, secret headers, credentials in the URL."""


def custom_llm_access(config: Config, env: Mapping[str, str] | None = None) -> CustomLlmAccess | None:
    """The resolved key and headers of the custom LLM; None when no URL is configured.

    The key: APPLIANCE_LLM_API_KEY, else the platform secret `custom_llm.api_key` from
    APPLIANCE_SECRET_<ID>. Headers: a string is sent as is, `{secret_id}` is read like the key,
    `{variable_name}` takes that dynamic variable's value in each conversation."""
    env = os.environ if env is None else env
    custom = config.conversation_config.agent.prompt.custom_llm
    if custom is None or custom.url is None:
        return None
    base = "conversation_config.agent.prompt.custom_llm"
    notes: list[str] = []
    key, source = read_secret(LLM_API_KEY_ENV, env), LLM_API_KEY_ENV
    if key is None and custom.api_key is not None:
        name = secret_env_name(custom.api_key.secret_id)
        key, source = read_secret(name, env), name
        if key is None:
            notes.append(
                f"{base}.api_key: the platform secret {show(custom.api_key.secret_id)} is not on the device "
                f"(set {LLM_API_KEY_ENV} or {name} in the environment or as a systemd credential); "
                "requests are sent without a key"
            )
    headers: dict[str, str] = {}
    variable_headers: dict[str, str] = {}
    secrets = [key] if key else []
    secrets += url_credentials(custom.url)
    for header, value in custom.request_headers.items():
        if isinstance(value, str):
            headers[header] = value
            if looks_secret(header):
                secrets.append(value)
        elif isinstance(value, Mapping) and isinstance(value.get("secret_id"), str):
            name = secret_env_name(value["secret_id"])
            secret = read_secret(name, env)
            if secret is None:
                notes.append(
                    f"{base}.request_headers.{header}: the platform secret {show(value['secret_id'])} is not "
                    f"on the device (set {name} in the environment or as a systemd credential); "
                    "the header is not sent"
                )
            else:
                headers[header] = secret
                secrets.append(secret)
        elif isinstance(value, Mapping) and isinstance(value.get("variable_name"), str):
            variable_headers[header] = value["variable_name"]
    return CustomLlmAccess(
        url=custom.url,
        model_id=custom.model_id,
        api_key=key,
        api_key_source=source if key is not None else "none",
        headers=headers,
        variable_headers=variable_headers,
        api_version=custom.api_version,
        notes=notes,
        secrets=secrets,
    )


def register_config_secrets(config: Config, env: Mapping[str, str] | None = None) -> None:
    """Register every key, header secret and URL password the configuration uses with the log
    redactor (in every mode), so none can reach a log line, an event, an error or a transcript."""
    env = os.environ if env is None else env
    register_secret(read_secret(ELEVENLABS_API_KEY_ENV, env))
    register_secret(read_secret(LLM_API_KEY_ENV, env))
    access = custom_llm_access(config, env)
    for secret in access.secrets if access is not None else ():
        register_secret(secret)
    for credential in url_credentials(config.appliance.remote.base_url):
        register_secret(credential)
    for tool in config.appliance.tools:
        if tool.api_schema is not None:
            for credential in url_credentials(tool.api_schema.url):
                register_secret(credential)
            for header, value in (tool.api_schema.request_headers or {}).items():
                if isinstance(value, str) and looks_secret(header):
                    register_secret(value)
    for value in secret_variables(config, env).values():
        register_secret(value)
    for tool in config.appliance.tools:
        for value in ((tool.api_schema.request_headers or {}) if tool.api_schema else {}).values():
            if isinstance(value, Mapping) and isinstance(value.get("secret_id"), str):
                register_secret(read_secret(secret_env_name(value["secret_id"]), env))


def llm_summary(config: Config, env: Mapping[str, str] | None = None) -> list[str]:
    """Which LLM the device will use, for `check-config` and the start log (URL password masked),
    then anything about its access that could not be resolved."""
    if not config.uses_local_agent:
        return ["LLM: the remote agent's (appliance.mode is remote: no LLM runs on the device)"]
    prefix = "LLM (local fallback)" if config.appliance.mode == "auto" else "LLM"
    if config.llm_backend == "llama_cpp":
        return [f"{prefix}: local llama.cpp {config.appliance.local.llm.model}"]
    access = custom_llm_access(config, env)
    if access is None:  # refused by load_config; kept for a hand-built Config
        return [f"{prefix}: custom LLM without a URL (set conversation_config.agent.prompt.custom_llm.url)"]
    model = f"model {access.model_id}" if access.model_id else "the server's default model"
    key = f"key from {access.api_key_source}" if access.api_key else "no API key"
    return [f"{prefix}: custom LLM at {display_url(access.url)} ({model}, {key})", *access.notes]
