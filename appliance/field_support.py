"""Every modelled configuration field: honoured by the local agent, or ignored and why.

`FIELD_SUPPORT` is the one table: a field's dotted path (`[]` for any list item, `*` for any
mapping key or built-in tool slot) → `"honoured"` (with what acts on it) or `"ignored: <why>"`.
A test walks the pydantic models so that no modelled field is missing. `ignored_field_warnings`
gives `check-config` one line per ignored field that a configuration sets to something other
than its default (in `remote` mode the platform's agent runs, so nothing is listed).
Unmodelled (cloud-only) fields are reported by `agent_config.cloud_only_warnings`.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from appliance.agent_config import CLOUD_TOOLS, BuiltInTools

HONOURED = "honoured"
_LATER = "not applied by the local agent yet"
_SYSTEM_RUN = "system tools run inside the device's conversation machine, at once"

FIELD_SUPPORT: dict[str, str] = {
    # conversation_config.asr
    "conversation_config.asr.user_input_audio_format": "honoured: the remote session's microphone format",
    "conversation_config.asr.keywords": "honoured: faster-whisper hot words for the local STT",
    # conversation_config.turn
    "conversation_config.turn.turn_timeout": "honoured: re-prompt after this silence",
    "conversation_config.turn.silence_end_call_timeout": "honoured: end the call after this silence",
    "conversation_config.turn.turn_eagerness": "honoured: endpointing silence",
    "conversation_config.turn.soft_timeout_config.timeout_seconds": "honoured: filler after this delay",
    "conversation_config.turn.soft_timeout_config.message": "honoured: the filler",
    "conversation_config.turn.soft_timeout_config.use_llm_generated_message": "honoured: LLM filler",
    # conversation_config.tts
    "conversation_config.tts.voice_id": "honoured: the local voice of that name (else the default)",
    "conversation_config.tts.speed": "honoured: piper length scale",
    "conversation_config.tts.supported_voices[].label": "honoured: multi-voice tags",
    "conversation_config.tts.supported_voices[].voice_id": "honoured: the local voice of that name",
    "conversation_config.tts.supported_voices[].description": "honoured: in the system prompt",
    "conversation_config.tts.supported_voices[].language": "honoured: the voice for that language",
    "conversation_config.tts.supported_voices[].speed": "honoured: that voice's speed",
    "conversation_config.tts.pronunciation_dictionary_locators[].pronunciation_dictionary_id": (
        "ignored: platform dictionaries live in the cloud; give path: to a local .pls file"
    ),
    "conversation_config.tts.pronunciation_dictionary_locators[].version_id": (
        "ignored: platform dictionaries live in the cloud; give path: to a local .pls file"
    ),
    "conversation_config.tts.pronunciation_dictionary_locators[].path": "honoured: a local PLS lexicon",
    "conversation_config.tts.agent_output_audio_format": "honoured: the remote session's audio format",
    # conversation_config.conversation
    "conversation_config.conversation.text_only": (
        "ignored: the local agent is a voice agent (the remote session sends it as an override)"
    ),
    "conversation_config.conversation.max_duration_seconds": "honoured: the conversation's bound",
    "conversation_config.conversation.client_events": "honoured: interruption enables barge-in",
    # conversation_config.agent
    "conversation_config.agent.first_message": "honoured",
    "conversation_config.agent.language": "honoured: the STT language",
    "conversation_config.agent.disable_first_message_interruptions": "honoured",
    "conversation_config.agent.dynamic_variables.dynamic_variable_placeholders": "honoured",
    "conversation_config.agent.prompt.prompt": "honoured: the system prompt",
    "conversation_config.agent.prompt.llm": "honoured: custom-llm calls custom_llm, others run llama.cpp",
    "conversation_config.agent.prompt.temperature": "honoured",
    "conversation_config.agent.prompt.max_tokens": "honoured",
    "conversation_config.agent.prompt.timezone": "honoured: system__time",
    "conversation_config.agent.prompt.custom_llm.url": "honoured",
    "conversation_config.agent.prompt.custom_llm.model_id": "honoured",
    "conversation_config.agent.prompt.custom_llm.api_key.secret_id": "honoured: APPLIANCE_SECRET_<ID>",
    "conversation_config.agent.prompt.custom_llm.request_headers": "honoured",
    "conversation_config.agent.prompt.custom_llm.api_version": "honoured: the api-version parameter",
    "conversation_config.agent.prompt.built_in_tools.*.type": "honoured",
    "conversation_config.agent.prompt.built_in_tools.*.name": "honoured: the tool's name for the LLM",
    "conversation_config.agent.prompt.built_in_tools.*.description": "honoured: the tool's description",
    "conversation_config.agent.prompt.built_in_tools.*.params": "honoured",
    "conversation_config.agent.prompt.built_in_tools.*.response_timeout_secs": f"ignored: {_SYSTEM_RUN}",
    "conversation_config.agent.prompt.built_in_tools.*.assignments[].source": f"ignored: {_SYSTEM_RUN}",
    "conversation_config.agent.prompt.built_in_tools.*.assignments[].dynamic_variable": (
        f"ignored: {_SYSTEM_RUN}"
    ),
    "conversation_config.agent.prompt.built_in_tools.*.assignments[].value_path": f"ignored: {_SYSTEM_RUN}",
    "conversation_config.agent.prompt.built_in_tools.*.disable_interruptions": (
        "honoured: the turn that calls it cannot be interrupted"
    ),
    "conversation_config.agent.prompt.built_in_tools.*.force_pre_tool_speech": (
        "honoured: the LLM is told to speak before calling it"
    ),
    "conversation_config.agent.prompt.tools": (
        "ignored: deprecated by ElevenLabs; device tools go under appliance.tools"
    ),
    # conversation_config.agent.prompt.knowledge_base and rag (runtime/knowledge_base.py)
    "conversation_config.agent.prompt.knowledge_base[].type": (
        "ignored: the device reads what the local path holds (text, Markdown, HTML, .faq.yaml)"
    ),
    "conversation_config.agent.prompt.knowledge_base[].name": ("honoured: the document's name in kb list"),
    "conversation_config.agent.prompt.knowledge_base[].id": (
        "honoured: the document id in knowledge_retrieved"
    ),
    "conversation_config.agent.prompt.knowledge_base[].usage_mode": (
        "honoured: prompt (in the system prompt) or auto (retrieved per turn)"
    ),
    "conversation_config.agent.prompt.knowledge_base[].path": (
        "honoured: the local file or folder (device-only field)"
    ),
    "conversation_config.agent.prompt.knowledge_base[].faq_threshold": (
        "honoured: when an FAQ answer is spoken as written (device-only field)"
    ),
    "conversation_config.agent.prompt.rag.enabled": ("honoured: retrieval on or off for usage_mode auto"),
    "conversation_config.agent.prompt.rag.max_documents_length": (
        "honoured: characters of retrieved text per turn"
    ),
    "conversation_config.agent.prompt.rag.max_retrieved_rag_chunks_count": (
        "honoured: chunks retrieved per turn"
    ),
    "conversation_config.agent.prompt.tool_ids": (
        "ignored: platform tools live in the cloud; device tools go under appliance.tools"
    ),
    # conversation_config.language_presets
    "conversation_config.language_presets.*.overrides.agent.first_message": (
        "honoured: the first message when the conversation starts in that language"
    ),
    "conversation_config.language_presets.*.overrides.agent.language": "honoured: the preset's language",
    "conversation_config.language_presets.*.overrides.agent.prompt.prompt": (
        "honoured: the system prompt in that language (at the start or after a switch)"
    ),
    "conversation_config.language_presets.*.overrides.tts.voice_id": "honoured: the voice after a switch",
    "conversation_config.language_presets.*.overrides.tts.speed": "honoured: the speed after a switch",
    "conversation_config.language_presets.*.overrides.conversation.text_only": (
        "ignored: the local agent is a voice agent"
    ),
    "conversation_config.language_presets.*.first_message_translation.source_hash": (
        "honoured: a translation of another first message is not used"
    ),
    "conversation_config.language_presets.*.first_message_translation.text": (
        "honoured: the first message in that language when the preset has none"
    ),
    # platform_settings
    "platform_settings.privacy.record_voice": "honoured: device recordings",
    "platform_settings.privacy.retention_days": "honoured: device recordings",
    "platform_settings.privacy.delete_transcript_and_pii": "honoured: device recordings and turn log",
    "platform_settings.privacy.delete_audio": "honoured: device recordings",
    "platform_settings.privacy.apply_to_existing_conversations": "honoured: device recordings",
    "platform_settings.privacy.zero_retention_mode": "honoured: nothing is kept",
    "platform_settings.overrides.conversation_config_override.tts.voice_id": "honoured: remote overrides",
    "platform_settings.overrides.conversation_config_override.tts.stability": "honoured: remote overrides",
    "platform_settings.overrides.conversation_config_override.tts.speed": "honoured: remote overrides",
    "platform_settings.overrides.conversation_config_override.tts.similarity_boost": (
        "honoured: remote overrides"
    ),
    "platform_settings.overrides.conversation_config_override.conversation.text_only": (
        "honoured: remote overrides"
    ),
    "platform_settings.overrides.conversation_config_override.agent.first_message": (
        "honoured: remote overrides"
    ),
    "platform_settings.overrides.conversation_config_override.agent.language": "honoured: remote overrides",
    "platform_settings.overrides.conversation_config_override.agent.prompt.prompt": (
        "honoured: remote overrides"
    ),
    "platform_settings.overrides.conversation_config_override.agent.prompt.native_mcp_server_ids": (
        "honoured: remote overrides"
    ),
    "platform_settings.overrides.custom_llm_extra_body": "honoured: sends appliance.custom_llm_extra_body",
    "platform_settings.overrides.enable_conversation_initiation_client_data_from_webhook": (
        "ignored: the initiation webhook is called by the cloud"
    ),
    # appliance.tools (the platform's tool shape, run on the device)
    "appliance.tools[].type": "honoured",
    "appliance.tools[].name": "honoured",
    "appliance.tools[].description": "honoured",
    "appliance.tools[].response_timeout_secs": "honoured: one deadline per call",
    "appliance.tools[].disable_interruptions": "honoured: the turn that calls it cannot be interrupted",
    "appliance.tools[].force_pre_tool_speech": "honoured: the LLM is told to speak before calling it",
    "appliance.tools[].assignments[].source": "honoured",
    "appliance.tools[].assignments[].dynamic_variable": "honoured",
    "appliance.tools[].assignments[].value_path": "honoured",
    "appliance.tools[].dynamic_variables": "honoured",
    "appliance.tools[].parameters": "honoured",
    "appliance.tools[].expects_response": "honoured: false = the agent goes on without the result",
    "appliance.tools[].api_schema.url": "honoured",
    "appliance.tools[].api_schema.method": "honoured",
    "appliance.tools[].api_schema.path_params_schema": "honoured",
    "appliance.tools[].api_schema.query_params_schema": "honoured",
    "appliance.tools[].api_schema.request_body_schema": "honoured",
    "appliance.tools[].api_schema.request_headers": "honoured",
    "appliance.tools[].api_schema.auth_connection": "ignored: auth connections live in the cloud",
    "appliance.tools[].handler": "honoured",
}

_WARNED_ELSEWHERE = frozenset(
    {  # agent_warnings already has a line for these
        "conversation_config.tts.pronunciation_dictionary_locators[].pronunciation_dictionary_id",
        "conversation_config.tts.pronunciation_dictionary_locators[].version_id",
        "conversation_config.agent.prompt.tools",
        # a platform document's kind: without a local path the entry is warned as a whole; with
        # one, the files' own extensions decide (a line per document would only repeat that)
        "conversation_config.agent.prompt.knowledge_base[].type",
    }
)


def ignored_field_warnings(value: object, path: str, key: str | None = None) -> list[str]:
    """`<path>: ignored on the device: <why>` for each ignored field of `value` (a model, or a
    list / mapping of them) set to something other than its default."""
    key = path if key is None else key
    out: list[str] = []
    if isinstance(value, BuiltInTools):
        for slot, tool in value.enabled().items():
            if slot not in CLOUD_TOOLS:  # a cloud tool already has its line
                out += ignored_field_warnings(tool, f"{path}.{slot}", f"{key}.*")
    elif isinstance(value, BaseModel):
        for name, info in type(value).model_fields.items():
            child = getattr(value, name)
            sub_path, sub_key = f"{path}.{name}", f"{key}.{name}"
            support = FIELD_SUPPORT.get(sub_key, "")
            if support.startswith("ignored") and sub_key not in _WARNED_ELSEWHERE:
                if not _is_default(child, info.get_default(call_default_factory=True)):
                    out.append(f"{sub_path}: ignored on the device: {support.removeprefix('ignored: ')}")
            elif not support:
                out += ignored_field_warnings(child, sub_path, sub_key)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            out += ignored_field_warnings(item, f"{path}[{i}]", f"{key}[]")
    elif isinstance(value, dict):
        for name, item in value.items():
            out += ignored_field_warnings(item, f"{path}.{name}", f"{key}.*")
    return out


def _is_default(value: Any, default: Any) -> bool:
    return value is None or value == default or value in ([], {}, "")
