"""The ElevenLabs agent part of the configuration: `conversation_config` and `platform_settings`.

Field names mirror an agent exported from the ElevenLabs platform (seed digest §6), so an export
loads unchanged. Only the fields the device uses are modelled, with their documented types,
ranges and defaults; every other field is kept (`extra="allow"`) and reported by
`cloud_only_warnings` as a cloud-only setting. A `null` for a modelled field means its default,
as in the platform's exports. The shared validators live in `appliance.validation`.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, Literal, Self
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    model_validator,
)

from appliance.core.endpointing import TurnEagerness
from appliance.validation import (
    Bool,
    Int,
    Num,
    Text,
    between,
    fail,
    length,
    matches,
    rule,
    show,
    url_with,
)

CLOUD_ONLY = "cloud-only setting, ignored on the device"


def _scalar(v: object) -> object:
    if not isinstance(v, str | int | float):  # bool is an int
        fail(f"{show(v)} is not a string, number or boolean")
    return v


def _variable_names(v: dict[str, Any]) -> dict[str, Any]:
    for name in v:
        if name.startswith("system__"):
            fail(f"{show(name)} uses the reserved prefix system__ (system variables are set by the agent)")
    return v


def _is_zone(name: str) -> bool:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return False
    return True


Scalar = Annotated[str | int | float | bool, BeforeValidator(_scalar)]
VariableMap = Annotated[dict[str, Scalar], AfterValidator(_variable_names)]
Speed = Annotated[Num, between(0.7, 1.2)]
AudioFormatName = Literal[
    "pcm_8000", "pcm_16000", "pcm_22050", "pcm_24000", "pcm_44100", "pcm_48000", "ulaw_8000"
]


class ClientEvent(StrEnum):
    """Server events an agent sends (`conversation.client_events`), digest §1.2."""

    CONVERSATION_INITIATION_METADATA = "conversation_initiation_metadata"
    ASR_INITIATION_METADATA = "asr_initiation_metadata"
    PING = "ping"
    AUDIO = "audio"
    INTERRUPTION = "interruption"
    USER_TRANSCRIPT = "user_transcript"
    TENTATIVE_USER_TRANSCRIPT = "tentative_user_transcript"
    AGENT_RESPONSE = "agent_response"
    AGENT_RESPONSE_CORRECTION = "agent_response_correction"
    CLIENT_TOOL_CALL = "client_tool_call"
    MCP_TOOL_CALL = "mcp_tool_call"
    MCP_CONNECTION_STATUS = "mcp_connection_status"
    AGENT_TOOL_RESPONSE = "agent_tool_response"
    VAD_SCORE = "vad_score"
    INTERNAL_TURN_PROBABILITY = "internal_turn_probability"
    INTERNAL_TENTATIVE_AGENT_RESPONSE = "internal_tentative_agent_response"
    AGENT_CHAT_RESPONSE_PART = "agent_chat_response_part"


# The documented default when an agent does not list its client events (it includes barge-in).
DEFAULT_CLIENT_EVENTS = (
    ClientEvent.AUDIO,
    ClientEvent.INTERRUPTION,
    ClientEvent.AGENT_RESPONSE,
    ClientEvent.USER_TRANSCRIPT,
    ClientEvent.TENTATIVE_USER_TRANSCRIPT,
    ClientEvent.CONVERSATION_INITIATION_METADATA,
    ClientEvent.PING,
)


def _known_event(v: object) -> object:
    if not isinstance(v, str):
        fail(f"{show(v)} is not a string")
    return ClientEvent(v) if v in ClientEvent.__members__.values() else v


ClientEventName = Annotated[ClientEvent | str, BeforeValidator(_known_event)]
"""A known `ClientEvent`, or a newer platform name kept as a string (a warning, not an error)."""


class Mirror(BaseModel):
    """A platform object: unknown fields are kept (cloud-only), `null` means the default."""

    model_config = ConfigDict(extra="allow", protected_namespaces=())

    @model_validator(mode="before")
    @classmethod
    def _null_is_default(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        fields = cls.model_fields
        return {
            k: v
            for k, v in data.items()
            if not (
                v is None and k in fields and not fields[k].is_required() and fields[k].default is not None
            )
        }


class AsrConfig(Mirror):
    user_input_audio_format: AudioFormatName = "pcm_16000"
    keywords: list[Annotated[str, length(1, 100)]] = []
    """Words to boost (names, jargon): faster-whisper hot words on the device."""


class SoftTimeoutConfig(Mirror):
    timeout_seconds: Annotated[Num, between(0.5, 8.0, "seconds", off=-1)] = -1.0
    message: Annotated[str, length(1, 200)] = "Hhmmmm...yeah."
    use_llm_generated_message: Bool = False


class TurnConfig(Mirror):
    turn_timeout: Annotated[Num, between(1, 30, "seconds")] = 7.0
    silence_end_call_timeout: Annotated[Num, between(0, None, "seconds", off=-1, exclusive=True)] = -1.0
    turn_eagerness: TurnEagerness = TurnEagerness.NORMAL
    soft_timeout_config: SoftTimeoutConfig = Field(default_factory=SoftTimeoutConfig)


class SupportedVoice(Mirror):
    label: Annotated[str, matches(r"[^<>/]*\S[^<>/]*", "a label is not blank and has no < > /")]
    voice_id: Text
    description: str | None = None
    language: str | None = None
    speed: Speed | None = None


def _supported_voices(voices: list[SupportedVoice]) -> list[SupportedVoice]:
    if len(voices) > 9:
        fail(f"{len(voices)} voices; at most 9 (10 voices per agent including the default voice)")
    labels = [v.label for v in voices]
    for label in dict.fromkeys(labels):
        if labels.count(label) > 1:
            fail(f"label {show(label)} is used {labels.count(label)} times; labels must be unique")
    return voices


class PronunciationDictionaryLocator(Mirror):
    pronunciation_dictionary_id: str | None = None
    version_id: str | None = None
    path: Text | None = None
    """Device-side extension: a local W3C PLS lexicon file (not an ElevenLabs field)."""

    @model_validator(mode="after")
    def _has_source(self) -> Self:
        if self.pronunciation_dictionary_id is None and self.path is None:
            fail("give pronunciation_dictionary_id (platform) or path (a local .pls file)")
        return self


class TtsConfig(Mirror):
    voice_id: str | None = None
    speed: Speed = 1.0
    supported_voices: Annotated[list[SupportedVoice], AfterValidator(_supported_voices)] = []
    pronunciation_dictionary_locators: list[PronunciationDictionaryLocator] = []
    agent_output_audio_format: AudioFormatName = "pcm_16000"


class ConversationOptions(Mirror):
    """`conversation_config.conversation` (not `core.conversation.ConversationSettings`, the
    local conversation machine's settings, which the runtime derives from this and more)."""

    text_only: Bool = False
    max_duration_seconds: Annotated[Int, between(0, None, "seconds", exclusive=True)] = 600
    client_events: list[ClientEventName] = list(DEFAULT_CLIENT_EVENTS)


class SecretRef(Mirror):
    secret_id: str


def _header_value(v: object) -> object:
    if isinstance(v, str):
        return v
    if isinstance(v, dict) and any(isinstance(v.get(k), str) for k in ("secret_id", "variable_name")):
        return v
    fail(f"{show(v)} is not a string, {{secret_id: ...}} or {{variable_name: ...}}")


class CustomLlm(Mirror):
    """The platform's custom LLM: an OpenAI-compatible server the local agent calls when
    `prompt.llm` is `custom-llm` (see `appliance.config.custom_llm_access` for the key)."""

    url: Annotated[str, url_with("http", "https")] | None = None
    model_id: str | None = None
    api_key: SecretRef | None = None
    """A platform secret; on the device APPLIANCE_LLM_API_KEY or APPLIANCE_SECRET_<ID>."""
    request_headers: dict[str, Annotated[Any, AfterValidator(_header_value)]] = {}
    """name → a string, a platform secret {secret_id} or a dynamic variable {variable_name}."""
    api_version: str | None = None
    """Sent as the `api-version` query parameter (Azure OpenAI style) when set."""


class Assignment(Mirror):
    source: Literal["response"] = "response"
    dynamic_variable: str
    value_path: str


class SystemTool(Mirror):
    type: Literal["system"] = "system"
    name: str = ""
    """Defaults to the `built_in_tools` slot name."""
    description: str = ""
    response_timeout_secs: Annotated[Int, between(1, 120, "seconds")] = 20
    disable_interruptions: Bool = False
    force_pre_tool_speech: Bool = False
    assignments: list[Assignment] = []
    params: dict[str, Any] = {}


CLOUD_TOOLS = ("transfer_to_agent", "transfer_to_number", "play_keypad_touch_tone", "voicemail_detection")


class BuiltInTools(Mirror):
    end_call: SystemTool | None = None
    language_detection: SystemTool | None = None
    skip_turn: SystemTool | None = None
    transfer_to_agent: SystemTool | None = None
    transfer_to_number: SystemTool | None = None
    play_keypad_touch_tone: SystemTool | None = None
    voicemail_detection: SystemTool | None = None

    @model_validator(mode="after")
    def _fill_names(self) -> Self:
        for slot, tool in self.enabled().items():
            tool.name = tool.name or slot
            tool.params.setdefault("system_tool_type", slot)
        return self

    def enabled(self) -> dict[str, SystemTool]:
        """The system tools switched on, by slot name."""
        return {
            name: tool
            for name in type(self).model_fields
            if isinstance(tool := getattr(self, name), SystemTool)
        }


TOOL_TYPES = ("webhook", "client", "system")


def _legacy_tool(tool: dict[str, Any]) -> dict[str, Any]:
    if not isinstance(tool.get("type"), str):
        fail(f"type {show(tool.get('type'))} is not a tool type such as 'webhook', 'client' or 'system'")
    return tool


class KnowledgeBaseLocator(Mirror):
    """A `prompt.knowledge_base` document; on the device it needs a local `path`."""

    type: Literal["file", "url", "text"] | None = None
    name: str | None = None
    id: str | None = None
    usage_mode: Literal["auto", "prompt"] = "auto"
    path: Text | None = None
    """Device-side extension: a local file or folder (text, Markdown, HTML, `.faq.yaml`),
    relative to the configuration file (not an ElevenLabs field)."""
    faq_threshold: Annotated[Num, between(0, 1)] | None = None
    """Device-side extension: how close a question must be to an FAQ entry of this document for
    its answer to be spoken as written (0..1; default 0.62)."""


class RagConfig(Mirror):
    enabled: Bool = True
    max_documents_length: Annotated[Int, between(1, None)] = 10_000
    max_retrieved_rag_chunks_count: Annotated[Int, between(1, 100)] = 3


class PromptConfig(Mirror):
    prompt: str = ""
    llm: str | None = None
    """Any platform LLM name; only `custom-llm` means something to the local agent."""
    temperature: Annotated[Num, between(0, 2)] | None = None
    max_tokens: Annotated[Int, between(0, None, off=-1, off_means="no limit", exclusive=True)] = -1
    timezone: (
        Annotated[str, rule(_is_zone, "is not a known time zone (e.g. 'Europe/Berlin', 'UTC')")] | None
    ) = None
    custom_llm: CustomLlm | None = None
    built_in_tools: BuiltInTools = Field(default_factory=BuiltInTools)
    tools: list[Annotated[dict[str, Any], AfterValidator(_legacy_tool)]] = []
    """Deprecated by ElevenLabs (use tool_ids + built_in_tools); accepted with a warning."""
    tool_ids: list[str] = []
    knowledge_base: list[KnowledgeBaseLocator] = []
    rag: RagConfig = Field(default_factory=RagConfig)


class DynamicVariables(Mirror):
    dynamic_variable_placeholders: VariableMap = {}


class AgentConfig(Mirror):
    first_message: str = ""
    language: str = "en"
    disable_first_message_interruptions: Bool = False
    dynamic_variables: DynamicVariables = Field(default_factory=DynamicVariables)
    prompt: PromptConfig = Field(default_factory=PromptConfig)


class PromptOverride(Mirror):
    prompt: str | None = None


class AgentOverride(Mirror):
    first_message: str | None = None
    language: str | None = None
    prompt: PromptOverride | None = None


class TtsOverride(Mirror):
    voice_id: str | None = None
    speed: Speed | None = None


class ConversationOverride(Mirror):
    text_only: Bool | None = None


class ConfigOverride(Mirror):
    agent: AgentOverride | None = None
    tts: TtsOverride | None = None
    conversation: ConversationOverride | None = None


class FirstMessageTranslation(Mirror):
    source_hash: str = ""
    text: str = ""


class LanguagePreset(Mirror):
    overrides: ConfigOverride
    first_message_translation: FirstMessageTranslation | None = None


class ConversationConfig(Mirror):
    asr: AsrConfig = Field(default_factory=AsrConfig)
    turn: TurnConfig = Field(default_factory=TurnConfig)
    tts: TtsConfig = Field(default_factory=TtsConfig)
    conversation: ConversationOptions = Field(default_factory=ConversationOptions)
    agent: AgentConfig = Field(default_factory=AgentConfig)
    language_presets: dict[str, LanguagePreset] = {}


class Privacy(Mirror):
    # The platform records audio by default; the device records nothing unless asked to.
    record_voice: Bool = False
    retention_days: Annotated[Int, between(-1, None, "days")] = 730
    delete_transcript_and_pii: Bool = False
    delete_audio: Bool = False
    apply_to_existing_conversations: Bool = False
    zero_retention_mode: Bool = False


class TtsPermissions(Mirror):
    voice_id: Bool = False
    stability: Bool = False
    speed: Bool = False
    similarity_boost: Bool = False


class ConversationPermissions(Mirror):
    text_only: Bool = False


class PromptPermissions(Mirror):
    prompt: Bool = False
    native_mcp_server_ids: Bool = False


class AgentPermissions(Mirror):
    first_message: Bool = False
    language: Bool = False
    prompt: PromptPermissions = Field(default_factory=PromptPermissions)


class OverridePermissionTree(Mirror):
    tts: TtsPermissions = Field(default_factory=TtsPermissions)
    conversation: ConversationPermissions = Field(default_factory=ConversationPermissions)
    agent: AgentPermissions = Field(default_factory=AgentPermissions)


class OverridePermissions(Mirror):
    """Which client overrides a session may send (all off by default, as on the platform)."""

    conversation_config_override: OverridePermissionTree = Field(default_factory=OverridePermissionTree)
    custom_llm_extra_body: Bool = False
    enable_conversation_initiation_client_data_from_webhook: Bool = False


class PlatformSettings(Mirror):
    privacy: Privacy = Field(default_factory=Privacy)
    overrides: OverridePermissions = Field(default_factory=OverridePermissions)


def cloud_only_warnings(value: object, path: str) -> list[str]:
    """One warning per unmodelled field that is set (not null, not empty), by dotted path."""
    out: list[str] = []
    if isinstance(value, BaseModel):
        for name, extra in (value.model_extra or {}).items():
            if extra is not None and extra != [] and extra != {}:
                out.append(f"{path}.{name}: {CLOUD_ONLY}")
        for name in type(value).model_fields:
            out += cloud_only_warnings(getattr(value, name), f"{path}.{name}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            out += cloud_only_warnings(item, f"{path}[{i}]")
    elif isinstance(value, dict):
        for key, item in value.items():
            out += cloud_only_warnings(item, f"{path}.{key}")
    return out


def agent_warnings(cc: ConversationConfig) -> list[str]:
    """Cloud-only and deprecated settings of the agent part, one line each."""
    out = cloud_only_warnings(cc, "conversation_config")
    prompt = cc.agent.prompt
    base = "conversation_config.agent.prompt"
    if prompt.tools:
        out.append(
            f"{base}.tools: deprecated by ElevenLabs; use tool_ids and built_in_tools "
            "(device tools go under appliance.tools)"
        )
    for i, tool in enumerate(prompt.tools):
        if tool["type"] not in TOOL_TYPES:
            out.append(f"{base}.tools[{i}].type: {show(tool['type'])} is not known to this device; ignored")
    for i, event in enumerate(cc.conversation.client_events):
        if not isinstance(event, ClientEvent):
            out.append(
                f"conversation_config.conversation.client_events[{i}]: {show(event)} is not known to "
                "this device; ignored"
            )
    for slot in prompt.built_in_tools.enabled():
        if slot in CLOUD_TOOLS:
            out.append(f"{base}.built_in_tools.{slot}: cloud-only tool, ignored on the device")
    for i, loc in enumerate(cc.tts.pronunciation_dictionary_locators):
        if loc.path is None:
            out.append(
                f"conversation_config.tts.pronunciation_dictionary_locators[{i}]: platform dictionary "
                "without a local path, ignored on the device"
            )
    for i, doc in enumerate(prompt.knowledge_base):
        if doc.path is None:
            out.append(
                f"{base}.knowledge_base[{i}]: platform document without a local path, ignored on the device"
            )
    return out
