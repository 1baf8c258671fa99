"""Builds the offline agent: models loaded once at start, a `LocalAgentSession` per wake.

The agent configuration is the platform's (`conversation_config`): prompt and first message
with dynamic variables, turn/soft timeouts, interruptions, system tools, custom LLM. The
device side (`appliance.local`) names the STT/LLM models and the piper voices.

The LLM is the platform's choice (`Config.llm_backend`): `prompt.llm: custom-llm` calls
`prompt.custom_llm` over HTTP (key, headers and api_version resolved by
`config.custom_llm_access`), anything else runs the llama.cpp model in-process. At start the
custom LLM is asked whether it answers (`probe_llm`, a few seconds); when it does not, the log
says so with the cause and the device comes up anyway (conversations fail until it answers).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from appliance.config import (
    Config,
    CustomLlmAccess,
    custom_llm_access,
    device_secret_problems,
    llm_summary,
    resolve_models_dir,
    secret_variables,
)
from appliance.core import variables as dv
from appliance.core.conversation import ConversationSettings
from appliance.core.reply_guard import ReplyLimits
from appliance.core.system_tools import client_tool_schema, system_tool_schemas, webhook_tool_schema
from appliance.errors import ApplianceError, ConfigError, ModelError
from appliance.logs import register_secret
from appliance.ports import AgentSession, Clock, EventSink, LanguageModel, Speaker, SpeechToText
from appliance.runtime.knowledge_base import KnowledgeLLM, knowledge_for, knowledge_vocabulary
from appliance.runtime.knowledge_base import prompt_block as knowledge_prompt_block
from appliance.runtime.local_session import (
    FILLER_PROMPT,
    LocalAgentDeps,
    LocalAgentSession,
    SpeculativeEvents,
)
from appliance.runtime.timers import Timers
from appliance.runtime.voice_rendering import (
    VoiceRenderer,
    label_voices,
    language_voice,
    load_lexicon,
    multivoice_prompt,
)
from appliance.word_agents import start_voices

_LOGGER = logging.getLogger(__name__)

LOCAL_AGENT_ID = "local"
LLM_PROBE_TIMEOUT_S = 3.0
"""How long the start waits for the custom LLM to answer before it warns and goes on."""


@dataclass
class LocalModels:
    stt: Any
    llm: LanguageModel
    tts: Any
    concurrent_llm: bool
    stt_executor: ThreadPoolExecutor
    tts_executor: ThreadPoolExecutor
    llm_access: CustomLlmAccess | None = None
    """The custom LLM's resolved access (None with llama.cpp): its per-conversation headers."""


def _threads(configured: int | str) -> int:
    """A configured thread count, or `auto`'s choice from the usable CPUs."""
    from appliance.runtime.cpus import auto_threads

    return configured if isinstance(configured, int) else auto_threads()


def _model_file(config: Config, ref: str, suffix: str) -> Path:
    """A manifest model name (its file with `suffix`) or a path from the config."""
    from appliance.models.manifest import load_manifest
    from appliance.models.store import ModelStore

    candidate = config.resolve_path(ref)
    if candidate.exists() or "/" in ref or (suffix and ref.endswith(suffix)):
        if not candidate.exists():
            raise ModelError(f"model file {candidate} does not exist", code="model_not_installed")
        return candidate
    store = ModelStore(resolve_models_dir(config, os.environ), load_manifest())
    model_dir = store.path(ref)
    if not suffix:
        return model_dir
    files = sorted(p for p in model_dir.iterdir() if p.name.endswith(suffix))
    if not files:
        raise ModelError(f"model '{ref}' has no {suffix} file in {model_dir}", code="model_not_installed")
    return files[0]


def load_local_models(config: Config) -> LocalModels:
    """Load STT, LLM and TTS once (seconds on a Pi); sessions share them."""
    from appliance.adapters.piper_tts import PiperTts, PiperVoiceSpec

    local = config.appliance.local
    stt = speech_recognizer(config)
    llm: LanguageModel
    concurrent = False
    access: CustomLlmAccess | None = None
    summary, *notes = llm_summary(config)
    _LOGGER.info("%s", summary)
    for note in notes:  # a key or header secret the environment does not provide
        _LOGGER.warning("%s", note)
    if config.llm_backend == "openai":
        access = custom_llm_access(config)
        if access is None:
            raise ModelError(
                "the custom LLM needs conversation_config.agent.prompt.custom_llm.url",
                code="llm_not_configured",
            )
        llm = custom_llm_client(access)
        concurrent = True
    else:
        from appliance.adapters.llama_cpp_llm import LlamaCppLlm

        llama = LlamaCppLlm(
            _model_file(config, local.llm.model, ".gguf"),
            n_ctx=local.llm.n_ctx,
            n_threads=_threads(local.llm.threads),
        )
        _prime(config, llama)
        llm = llama
    voices = {
        name: PiperVoiceSpec(
            name=name,
            model=_model_file(config, v.model, ".onnx"),
            config=config.resolve_path(v.config) if v.config else None,
            speaker=v.speaker,
            speed=v.speed,
            noise_scale=v.noise_scale,
            noise_w_scale=v.noise_w_scale,
            language=v.language,
        )
        for name, v in local.voices.items()
    }
    tts = PiperTts(
        voices, local.default_voice, cache_size=local.voice_cache_size, threads=_threads(local.tts_threads)
    )
    tts.preload(start_voices(config, config.word_agents))  # each wake word's agent's voice too
    return LocalModels(
        stt=stt,
        llm=llm,
        tts=tts,
        concurrent_llm=concurrent,
        stt_executor=ThreadPoolExecutor(1, thread_name_prefix="stt"),
        tts_executor=ThreadPoolExecutor(1, thread_name_prefix="tts"),
        llm_access=access,
    )


def speech_recognizer(config: Config) -> SpeechToText:
    """faster-whisper as `config` asks: its model, threads, window, and a keyword prompt from
    `asr.keywords` and the knowledge base's names (the beam `auto` follows that prompt)."""
    from appliance.adapters.whisper_stt import FasterWhisperStt

    stt = config.appliance.local.stt
    keywords = [*config.conversation_config.asr.keywords, *knowledge_vocabulary(config)]
    return FasterWhisperStt(
        _model_file(config, stt.model, ""),
        threads=stt.threads,
        compute_type=stt.compute_type,
        beam_size=stt_beam_size(stt.beam_size, keywords),
        min_window_s=stt.min_window_s,
        keywords=keywords,
    )


def stt_beam_size(configured: int | str, keywords: list[str]) -> int:
    """The configured beam, or for `auto`: 5 with a keyword prompt (it helps whisper find the
    venue's names), else 1 (config.SttConfig.beam_size has the measurements)."""
    from appliance.adapters.whisper_stt import keyword_prompt

    if isinstance(configured, int):
        return configured
    return 5 if keyword_prompt(keywords) is not None else 1


def custom_llm_client(
    access: CustomLlmAccess, *, probe_timeout_s: float = LLM_PROBE_TIMEOUT_S
) -> LanguageModel:
    """The OpenAI-compatible client for `prompt.custom_llm`, after asking whether it answers
    (a warning when it does not: the device still comes up)."""
    from appliance.adapters.openai_llm import OpenAiCompatibleLlm, probe_llm

    for secret in access.secrets:
        register_secret(secret)
    probe = probe_llm(
        access.url,
        access.model_id,
        access.api_key,
        access.headers,
        timeout_s=probe_timeout_s,
        api_version=access.api_version,
    )
    if probe.ok:
        _LOGGER.info("custom LLM: %s", probe.detail)
    else:
        _LOGGER.warning(
            "custom LLM check failed: %s (%s); starting anyway: conversations fail until it answers "
            "(run `appliance doctor`)",
            probe.detail,
            probe.fix or "see the LLM server",
        )
    return OpenAiCompatibleLlm(
        access.url, access.model_id, access.api_key, access.headers, api_version=access.api_version
    )


def _prime(config: Config, llm: Any) -> None:
    """Evaluate the system prompt once at start so the first turn is not a cold start."""
    try:
        variables = session_variables(config, "", "local_prime", datetime.now(UTC))
        settings = conversation_settings(config, variables)
    except ApplianceError as err:  # e.g. a variable that only a session provides
        _LOGGER.info("system prompt not primed: %s", err)
        return
    messages = [{"role": "system", "content": settings.system_prompt}, {"role": "user", "content": "Hello"}]
    seconds = llm.prime(messages, list(settings.tools) or None)  # as a turn renders it
    _LOGGER.info("LLM primed with the system prompt in %.2f s", seconds)


def agent_tools(config: Config) -> tuple[list[dict[str, Any]], frozenset[str], frozenset[str]]:
    """(OpenAI tool schemas, system tool names, device tool names) offered to the LLM."""
    prompt = config.conversation_config.agent.prompt
    built_in = {name: tool.model_dump() for name, tool in prompt.built_in_tools.enabled().items()}
    languages = sorted(
        {config.conversation_config.agent.language, *config.conversation_config.language_presets}
    )
    schemas, unsupported = system_tool_schemas(built_in, languages)
    for name in unsupported:
        _LOGGER.warning("system tool %s is not available on the device (telephony / hosted agents)", name)
    device: list[dict[str, Any]] = []
    for tool in config.appliance.tools:
        raw = tool.model_dump(exclude_none=True)
        device.append(webhook_tool_schema(raw) if tool.type == "webhook" else client_tool_schema(raw))
    system_names = frozenset(s["function"]["name"] for s in schemas)
    device_names = frozenset(t.name for t in config.appliance.tools)
    pre_speech = {t.name for t in prompt.built_in_tools.enabled().values() if t.force_pre_tool_speech}
    pre_speech |= {t.name for t in config.appliance.tools if t.force_pre_tool_speech}
    for schema in [*schemas, *device]:  # force_pre_tool_speech: the platform asks the LLM to talk first
        function = schema["function"]
        if function["name"] in pre_speech:
            function["description"] = f"{function.get('description', '')} {PRE_TOOL_SPEECH}".strip()
    return [*schemas, *device], system_names, device_names


PRE_TOOL_SPEECH = "Before calling this tool, always tell the user in a few words what you are about to do."


def uninterruptible_tools(config: Config) -> frozenset[str]:
    """Tools with `disable_interruptions`: system tools by name, and device tools."""
    built_in = config.conversation_config.agent.prompt.built_in_tools.enabled().values()
    return frozenset(
        [t.name for t in built_in if t.disable_interruptions]
        + [t.name for t in config.appliance.tools if t.disable_interruptions]
    )


def session_variables(
    config: Config, wake_word: str, conversation_id: str, now_utc: datetime
) -> dict[str, dv.VariableValue]:
    agent = config.conversation_config.agent
    per_wake: dict[str, dv.VariableValue] = {}
    for word in config.appliance.wake_words.words:
        if word.name == wake_word:
            per_wake = dict(word.dynamic_variables)
    system = dv.system_variables(
        now_utc=now_utc,
        timezone=agent.prompt.timezone,
        conversation_id=conversation_id,
        agent_id=config.appliance.remote.agent_id or LOCAL_AGENT_ID,
        call_duration_secs=0.0,
    )
    per_wake.update(secret_variables(config))  # secret__ values come from the environment only
    merged = dv.merge_variables(dict(agent.dynamic_variables.dynamic_variable_placeholders), per_wake, system)
    for name in dv.secret_names(merged):
        value = merged[name]
        if isinstance(value, str):
            register_secret(value)
    return merged


def conversation_settings(config: Config, variables: dict[str, dv.VariableValue]) -> ConversationSettings:
    cc = config.conversation_config
    agent = cc.agent
    tools, system_names, device_names = agent_tools(config)
    language = config.appliance.local.stt.language or agent.language
    prompts = {lang: p for lang in cc.language_presets if (p := preset_prompt(config, lang))}
    first = preset_first_message(config, language) or agent.first_message or ""
    system_prompt = dv.render(
        prompts.get(language, agent.prompt.prompt or ""), variables, where="the system prompt"
    )
    first_message = dv.render(first, variables, where="the first message")
    soft = cc.turn.soft_timeout_config
    voices = cc.tts.supported_voices
    extra = ""
    if voices:  # the platform adds this block when voices are configured (seed digest §4.1)
        extra += "\n\n" + multivoice_prompt(voices)
    if tools and config.llm_backend == "llama_cpp":
        extra += textual_tool_instructions(tools)
    extra += knowledge_prompt_block(config)  # knowledge_base documents with usage_mode: prompt
    system_prompt += extra
    language_prompts = {
        lang: dv.render(p, variables, where=f"the {lang} preset's prompt") + extra
        for lang, p in prompts.items()
    }
    return ConversationSettings(
        system_prompt=system_prompt,
        first_message=first_message,
        turn_timeout_s=cc.turn.turn_timeout,
        silence_end_call_timeout_s=config.silence_end_call_timeout_s,
        soft_timeout_s=config.soft_timeout_s,
        soft_timeout_message=soft.message,
        soft_timeout_use_llm=soft.use_llm_generated_message,
        interruptions_enabled=config.interruptions_enabled,
        disable_first_message_interruptions=agent.disable_first_message_interruptions,
        max_duration_s=float(cc.conversation.max_duration_seconds),
        history_budget_tokens=config.appliance.local.llm.history_tokens,
        language=language,
        language_prompts=language_prompts,
        uninterruptible_tools=uninterruptible_tools(config),
        system_tool_names=system_names,
        device_tool_names=device_names,
        tools=tuple(tools),
        voice_labels=frozenset(v.label for v in voices),
        llm_failure_messages=config.appliance.local.llm_failure_messages(),
    )


def preset_prompt(config: Config, language: str) -> str | None:
    """`language_presets.<language>.overrides.agent.prompt.prompt`, or None."""
    preset = config.conversation_config.language_presets.get(language)
    agent = preset.overrides.agent if preset is not None else None
    return (agent.prompt.prompt or None) if agent is not None and agent.prompt is not None else None


def preset_first_message(config: Config, language: str) -> str | None:
    """The first message in `language`: the preset's own, else the platform's translation of
    the agent's first message (unless its `source_hash` says it was made from another text)."""
    cc = config.conversation_config
    preset = cc.language_presets.get(language)
    if preset is None:
        return None
    if preset.overrides.agent is not None and preset.overrides.agent.first_message:
        return preset.overrides.agent.first_message
    translation = preset.first_message_translation
    if translation is None or not translation.text:
        return None
    try:
        source = json.loads(translation.source_hash) if translation.source_hash else {}
    except ValueError:
        source = {}
    stale = (
        isinstance(source, dict)
        and source.get("firstMessage", cc.agent.first_message) != cc.agent.first_message
    )
    return None if stale else translation.text


def preset_speed(config: Config, language: str) -> float | None:
    """`language_presets.<language>.overrides.tts.speed`, or None."""
    preset = config.conversation_config.language_presets.get(language)
    tts = preset.overrides.tts if preset is not None else None
    return tts.speed if tts is not None else None


def llm_headers(variable_headers: dict[str, str], variables: dict[str, dv.VariableValue]) -> dict[str, str]:
    """The custom LLM's `{variable_name}` headers with this conversation's values."""
    headers: dict[str, str] = {}
    for header, name in variable_headers.items():
        if name not in variables:
            raise dv.MissingVariableError(name, f"the custom LLM header '{header}'")
        headers[header] = dv.format_value(variables[name])
    return headers


def textual_tool_instructions(tools: list[dict[str, Any]]) -> str:
    """Small local models have no tool-call format: ask for the `CALL name {json}` line that
    the llama.cpp adapter turns into a tool call (see `adapters/llama_cpp_llm.py`)."""
    lines = [
        "",
        "",
        "# Tools",
        "To use a tool, answer with one line and nothing else: CALL <tool name> <JSON arguments>",
        'For example: CALL end_call {"reason": "the user said goodbye", "message": "Goodbye!"}',
        "Available tools:",
    ]
    for tool in tools:
        fn = tool["function"]
        params = ", ".join(fn.get("parameters", {}).get("properties", {}))
        lines.append(f"- {fn['name']}({params}): {fn.get('description', '')}")
    return "\n".join(lines)


def local_session_factory(
    config: Config,
    models: LocalModels,
    *,
    speaker: Speaker,
    events: EventSink,
    clock: Clock,
    timers: Timers,
    now_utc: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> Callable[[str], AgentSession]:
    prompt = config.conversation_config.agent.prompt
    options: dict[str, Any] = {"temperature": prompt.temperature, "max_tokens": prompt.max_tokens}
    if config.platform_settings.overrides.custom_llm_extra_body:
        options["extra_body"] = dict(config.appliance.custom_llm_extra_body)
    access: CustomLlmAccess | None = getattr(models, "llm_access", None)  # None: a hand-built set
    variable_headers = access.variable_headers if access is not None else {}
    voice_name, _ = config.voice(config.conversation_config.tts.voice_id)

    def voice_for_language(language: str) -> str | None:
        return language_voice(config, language)

    def speed_for_language(language: str) -> float | None:
        return preset_speed(config, language)

    from appliance.runtime.tools import DeviceToolRunner, ToolSetupError

    renderer = VoiceRenderer(models.tts, label_voices(config), load_lexicon(config))
    device_tools = list(config.appliance.tools)
    try:  # resolve client-tool handlers now: a typo fails at start, not mid-conversation
        DeviceToolRunner(device_tools, {}, events=events, clock=clock)
    except ToolSetupError as err:
        raise ConfigError([str(err)], source=config.source) from err
    if missing := device_secret_problems(config):  # at the start, never at a call
        raise ConfigError(missing, source=config.source)
    knowledge = knowledge_for(config)  # indexed once at start (cached on disk)
    held = SpeculativeEvents(events)  # a speculative reply's retrieval is reported at its commit
    guard = config.appliance.local.knowledge_guard
    fallback = config.appliance.local.knowledge_fallback_text(config.conversation_config.agent.language)
    llm = (
        models.llm
        if knowledge is None
        else KnowledgeLLM(models.llm, knowledge, held, FILLER_PROMPT, guard, fallback)
    )

    def make(wake_word: str) -> AgentSession:
        conversation_id = f"local_{os.urandom(8).hex()}"
        variables = session_variables(config, wake_word, conversation_id, now_utc())
        settings = conversation_settings(config, variables)
        session_options = dict(options)
        if variable_headers:
            session_options["headers"] = llm_headers(variable_headers, variables)
        started = clock.now()

        def fresh_system_variables(
            conversation_id: str = conversation_id, started: float = started
        ) -> dict[str, dv.VariableValue]:
            return dict(
                dv.system_variables(
                    now_utc=now_utc(),
                    timezone=config.conversation_config.agent.prompt.timezone,
                    conversation_id=conversation_id,
                    agent_id=config.appliance.remote.agent_id or LOCAL_AGENT_ID,
                    call_duration_secs=clock.now() - started,
                )
            )

        runner = (
            DeviceToolRunner(
                device_tools, variables, events=events, clock=clock, refresh=fresh_system_variables
            )
            if device_tools
            else None
        )
        deps = LocalAgentDeps(
            stt=models.stt,
            llm=llm,
            tts=models.tts,
            speaker=speaker,
            events=events,
            clock=clock,
            timers=timers,
            stt_executor=models.stt_executor,
            tts_executor=models.tts_executor,
            voice=voice_name,
            speed=config.conversation_config.tts.speed,
            llm_options=session_options,
            concurrent_llm=models.concurrent_llm,
            voice_for_language=voice_for_language,
            speed_for_language=speed_for_language,
            renderer=renderer,
            tools=runner,
            conversation_id=conversation_id,
            reply_limits=ReplyLimits(
                max_seconds=config.appliance.local.max_reply_seconds,
                max_tokens=config.appliance.local.max_reply_tokens,
                speed=config.conversation_config.tts.speed,
            ),
        )
        return LocalAgentSession(settings, deps)

    return make
