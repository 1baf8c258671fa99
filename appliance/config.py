"""One YAML file configures the appliance; `load_config` reads, validates and returns it.

Top-level keys: `conversation_config` and `platform_settings` (the ElevenLabs agent, field for
field, see `appliance.agent_config`) and `appliance` (the device; unknown keys are errors).
Every problem is collected and raised at once as a `ConfigError`, one line each:
`<dotted.path>: <value> <what is allowed>`. Secrets are never read from the file (`read_secret`).

The CLI's `appliance check-config FILE` calls `check_config(FILE)`: on `(config, warnings)` it
prints "OK" and the warnings and exits 0; on `(None, problems)` it prints the problems, exit 2.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Hashable, Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal, Self, TypeVar

import yaml
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
    Bool,
    ClientEvent,
    ConversationConfig,
    Int,
    Num,
    PlatformSettings,
    Text,
    VariableMap,
    agent_warnings,
    between,
    cloud_only_warnings,
    fail,
    matches,
    problem_line,
    show,
    url_with,
)
from appliance.core.endpointing import END_SILENCE_S, EndpointConfig, TurnEagerness
from appliance.core.wakeword import WakeWordRule
from appliance.errors import ConfigError

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


class WakeWord(_Device):
    name: str = ""
    path: Text | None = None
    threshold: Annotated[Num, between(0, 1, exclusive=True)] = 0.5
    patience_frames: Annotated[Int, between(1, 25, "frames")] = 1
    refractory_s: Annotated[Num, between(0, 30, "seconds")] = 2.0
    dynamic_variables: VariableMap = {}

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
    end_silence_s: Annotated[Num, between(0.1, 5, "seconds")] | None = None
    max_utterance_s: Annotated[Num, between(1, 120, "seconds")] = 15.0
    no_speech_timeout_s: Annotated[Num, between(1, 60, "seconds")] = 8.0
    preroll_s: Annotated[Num, between(0, 2, "seconds")] = 0.3
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
    beam_size: Annotated[Int, between(1, 10)] = 1


class LlmConfig(_Device):
    backend: Literal["llama_cpp", "openai"] = "llama_cpp"
    model: Text = "smollm2-135m-instruct"
    n_ctx: Annotated[Int, between(256, 32768, "tokens")] = 2048
    threads: Annotated[Int, between(1, 16)] = 2
    history_tokens: Annotated[Int, between(64, None, "tokens")] = 1024


class LocalVoice(_Device):
    model: Text
    config: Text | None = None
    speaker: Annotated[Int, between(0)] = 0
    speed: Annotated[Num, between(0.7, 1.2)] = 1.0
    noise_scale: Annotated[Num, between(0, 2)] | None = None
    noise_w_scale: Annotated[Num, between(0, 2)] | None = None
    language: Text = "en"


class LocalConfig(_Device):
    stt: SttConfig = Field(default_factory=SttConfig)
    llm: LlmConfig = Field(default_factory=LlmConfig)
    voices: dict[str, LocalVoice] = Field(
        default_factory=lambda: {"joe": LocalVoice(model="piper-en_US-joe-medium")}
    )
    default_voice: Text = "joe"
    preload_voices: list[str] = []
    voice_cache_size: Annotated[Int, between(1, 10, "voices")] = 3


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

    def endpoint_config(self) -> EndpointConfig:
        vad = self.appliance.vad
        return EndpointConfig(
            threshold=vad.threshold,
            release_threshold=min(EndpointConfig.release_threshold, vad.threshold),
            min_speech_s=vad.min_speech_s,
            end_silence_s=self.end_silence_s,
            max_utterance_s=vad.max_utterance_s,
            preroll_s=vad.preroll_s,
        )

    def wake_word_rules(self) -> dict[str, WakeWordRule]:
        return {
            w.name: WakeWordRule(w.name, w.threshold, w.patience_frames, w.refractory_s)
            for w in self.appliance.wake_words.words
        }

    def resolve_path(self, path: str | Path) -> Path:
        p = Path(path).expanduser()
        return p if p.is_absolute() or self.base_dir is None else self.base_dir / p


class _Loader(yaml.SafeLoader):
    """YAML 1.2 booleans (`no`, `on`, `yes` stay strings: `no` is Norwegian) and no duplicate keys."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Hashable, Any]:
        seen: set[object] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *anchor` may be overridden
                continue
            key = self.construct_object(key_node, deep=True)
            if isinstance(key, Hashable):
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key {show(key)}", key_node.start_mark
                    )
                seen.add(key)
        return super().construct_mapping(node, deep)


_Loader.yaml_implicit_resolvers = {
    ch: [r for r in rs if r[0] != "tag:yaml.org,2002:bool"]
    for ch, rs in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


def _parse(text: str) -> object:
    try:
        return yaml.load(text, Loader=_Loader)
    except yaml.MarkedYAMLError as err:
        # Never str(err): its snippet of the line could show a secret.
        mark = err.problem_mark or err.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "YAML"
        raise ConfigError([f"{where}: {err.problem or err.context or 'invalid YAML'}"]) from None
    except yaml.YAMLError as err:
        raise ConfigError([f"invalid YAML ({type(err).__name__})"]) from None


def _strip_secrets(node: object, path: str, problems: list[str]) -> object:
    """A copy of the document without plain-string secrets; each one becomes a problem."""
    if isinstance(node, dict):
        out: dict[object, object] = {}
        for key, value in node.items():
            sub = f"{path}.{key}" if path else str(key)
            if isinstance(key, str) and key.lower() in SECRET_KEYS and isinstance(value, str):
                problems.append(f"{sub}: {SECRET_PROBLEM}")
            else:
                out[key] = _strip_secrets(value, sub, problems)
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


def _joint_checks(cc: ConversationConfig, ap: ApplianceConfig | None) -> tuple[list[str], list[str]]:
    problems: list[str] = []
    warnings: list[str] = []
    prompt = cc.agent.prompt
    if prompt.custom_llm is None or prompt.custom_llm.url is None:
        path = "conversation_config.agent.prompt.custom_llm.url"
        if ap is not None and ap.local.llm.backend == "openai":
            problems.append(f"{path}: required when appliance.local.llm.backend is 'openai'")
        elif prompt.llm == "custom-llm":
            problems.append(f"{path}: required when conversation_config.agent.prompt.llm is 'custom-llm'")
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
        data = _parse(text)
    except ConfigError as err:
        raise ConfigError(err.problems, source=source) from None
    problems: list[str] = []
    warnings: list[str] = []
    if not isinstance(data, dict):
        what = "empty" if data is None else f"{show(data)}, not a mapping"
        raise ConfigError(
            [f"top level: the document is {what} (expected keys: {', '.join(SECTIONS)})"], source=source
        )
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
    if problems or cc is None or ps is None or ap is None:
        raise ConfigError(problems, source=source)
    if log_warnings:
        for warning in warnings:
            _LOGGER.warning("%s: %s", source, warning)
    return Config(cc, ps, ap, warnings, source, base_dir)


def load_config(path: str | Path | None, *, log_warnings: bool = True) -> Config:
    """Load the file at `path`, or the embedded default configuration when `path` is None."""
    if path is None:
        text = resources.files("appliance").joinpath("assets/default-config.yaml").read_text("utf-8")
        return load_config_text(text, DEFAULT_SOURCE, log_warnings=log_warnings)
    p = Path(path).expanduser()
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError([f"{p}: not UTF-8 text (bad byte at offset {err.start})"], source=str(p)) from None
    except OSError as err:  # missing, a directory, no permission...
        raise ConfigError([f"{p}: cannot read the file ({err.strerror or err})"], source=str(p)) from None
    return load_config_text(text, str(p), base_dir=p.resolve().parent, log_warnings=log_warnings)


def check_config(path: str | Path | None) -> tuple[Config | None, list[str]]:
    """`(config, warnings)` when the file is valid, else `(None, problems)`; nothing is logged."""
    try:
        cfg = load_config(path, log_warnings=False)
    except ConfigError as err:
        return None, err.problems
    from appliance.core.pronunciation import LexiconError, load_pls

    broken: list[str] = []  # local pronunciation dictionaries: `<file>:<line>: <problem>`
    for locator in cfg.conversation_config.tts.pronunciation_dictionary_locators:
        try:
            if locator.path is not None:
                load_pls(cfg.resolve_path(locator.path))
        except LexiconError as err:
            broken.append(str(err))
    return (None, broken) if broken else (cfg, cfg.warnings)


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
