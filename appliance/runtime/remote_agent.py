"""Builds remote conversations: an `ElevenLabsAgentSession` per wake word (`mode: remote`), or
a `FailoverSession` around one and a local agent session (`mode: auto`).

What the device sends in `conversation_initiation_client_data`:
- `conversation_config_override`: the agent fields of the config whose override the agent
  allows (`platform_settings.overrides.conversation_config_override`, all off by default, as
  on the platform, which rejects an override it does not allow);
- `custom_llm_extra_body`: `appliance.custom_llm_extra_body`, when
  `platform_settings.overrides.custom_llm_extra_body` is on;
- `dynamic_variables`: the config's placeholders, the wake word's own variables, and the
  device values `device_name` (host name) and `device_wake_word`;
- `user_id` (`appliance.remote.user_id`) and `source_info` (`unknown`, `appliance/<version>`).

The API key (private agents, `requires_auth`) comes from `ELEVENLABS_API_KEY` or the systemd
credential `elevenlabs_api_key`; it is registered as a secret before anything can log it.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from appliance import __version__
from appliance.config import Config, device_secret_problems, read_secret, secret_variables
from appliance.core import variables as dv
from appliance.core.elevenlabs_protocol import InitiationData, permitted_overrides
from appliance.core.playout import Backoff
from appliance.core.remote_session import RemoteSettings
from appliance.errors import ApplianceError, ConfigError
from appliance.logs import register_secret
from appliance.ports import AgentSession, Clock, EventSink, Speaker
from appliance.runtime.clock import MonotonicClock

if TYPE_CHECKING:
    from appliance.adapters.elevenlabs.session import ElevenLabsAgentSession
    from appliance.runtime.local_agent import LocalModels
    from appliance.runtime.wiring import Wiring

_LOGGER = logging.getLogger(__name__)

API_KEY_ENV = "ELEVENLABS_API_KEY"
SOURCE = "unknown"  # the platform's source_info enum has no value for third-party clients


def override_candidates(config: Config) -> dict[str, Any]:
    """The agent fields a session could override, from the config (ElevenLabs names)."""
    cc = config.conversation_config
    return {
        "agent": {
            "prompt": {"prompt": cc.agent.prompt.prompt},
            "first_message": cc.agent.first_message,
            "language": cc.agent.language,
        },
        "tts": {"voice_id": cc.tts.voice_id, "speed": cc.tts.speed},
        "conversation": {"text_only": cc.conversation.text_only},
    }


def dynamic_variables(config: Config, wake_word: str, device_name: str) -> dict[str, dv.VariableValue]:
    placeholders = dict(config.conversation_config.agent.dynamic_variables.dynamic_variable_placeholders)
    per_wake: dict[str, dv.VariableValue] = {}
    for word in config.appliance.wake_words.words:
        if word.name == wake_word:
            per_wake = dict(word.dynamic_variables)
    device: dict[str, dv.VariableValue] = {"device_name": device_name, "device_wake_word": wake_word}
    merged = {**device, **placeholders, **per_wake, **secret_variables(config)}
    for name in dv.secret_names(merged):
        value = merged[name]
        if isinstance(value, str):
            register_secret(value)
    return merged


def initiation_for(config: Config, wake_word: str, *, device_name: str | None = None) -> InitiationData:
    permissions = config.platform_settings.overrides.conversation_config_override.model_dump()
    overrides, _ = permitted_overrides(override_candidates(config), permissions)
    extra = config.appliance.custom_llm_extra_body
    allowed_extra = config.platform_settings.overrides.custom_llm_extra_body
    return InitiationData(
        conversation_config_override=overrides,
        custom_llm_extra_body=dict(extra) if allowed_extra else {},
        dynamic_variables=dynamic_variables(config, wake_word, device_name or socket.gethostname()),
        user_id=config.appliance.remote.user_id,
        source=SOURCE,
        version=f"appliance/{__version__}",
    )


def remote_settings(config: Config) -> RemoteSettings:
    remote = config.appliance.remote
    if remote.agent_id is None:
        raise ConfigError(
            [f"appliance.remote.agent_id: required when appliance.mode is '{config.appliance.mode}'"]
        )
    first = bool(config.conversation_config.agent.first_message)
    return RemoteSettings(
        agent_id=remote.agent_id,
        base_url=remote.base_url,
        chunk_ms=remote.chunk_ms,
        reconnect_attempts=remote.reconnect_attempts,
        backoff=Backoff(base_s=remote.reconnect_backoff_s),
        stall_timeout_s=remote.stall_timeout_s,
        first_message_wait_s=3.0 if first else 1.0,
        mcp_approval=config.appliance.mcp_approval,
    )


def api_key(config: Config) -> str | None:
    """The API key for private agents; a clear error when one is needed and missing."""
    key = read_secret(API_KEY_ENV)
    register_secret(key)
    if config.appliance.remote.requires_auth and not key:
        raise ApplianceError(
            "appliance.remote.requires_auth is true but there is no API key: set ELEVENLABS_API_KEY "
            "in the environment or the systemd credential elevenlabs_api_key",
            code="api_key_missing",
        )
    return key


def error_alert(config: Config, speaker: Speaker) -> Callable[[], Awaitable[None]] | None:
    """Plays the error chime (the user hears that the connection is being retried)."""
    from appliance.runtime.chimes import BUNDLED_DIR, read_wav_mono

    chimes = config.appliance.chimes
    if not chimes.enabled:
        return None
    path = config.resolve_path(chimes.error) if chimes.error else BUNDLED_DIR / "error.wav"
    try:
        audio, rate = read_wav_mono(Path(path))
    except (OSError, ValueError) as err:
        _LOGGER.warning("no error chime for the remote agent (%s)", err)
        return None
    scaled = np.clip(audio.astype(np.float32) * chimes.volume, -32768, 32767).astype(np.int16)

    async def alert() -> None:
        await speaker.play(scaled, rate)

    return alert


def remote_session_factory(
    config: Config,
    *,
    speaker: Speaker,
    events: EventSink,
    clock: Clock,
    stopwatch: Clock | None = None,
) -> Callable[[str], ElevenLabsAgentSession]:
    from appliance.adapters.elevenlabs.session import ElevenLabsAgentSession
    from appliance.adapters.resample import Resampler
    from appliance.runtime.tools import DeviceToolRunner, ToolSetupError

    settings = remote_settings(config)
    key = api_key(config)
    provider = None
    if config.appliance.remote.requires_auth and key:
        from appliance.adapters.elevenlabs.signed_url import SignedUrlProvider

        provider = SignedUrlProvider(settings.base_url, settings.agent_id, key)
    device_tools = list(config.appliance.tools)
    try:  # resolve client-tool handlers now: a typo fails at start, not mid-conversation
        DeviceToolRunner(device_tools, {}, events=events, clock=clock)
    except ToolSetupError as err:
        raise ConfigError([str(err)], source=config.source) from err
    if missing := device_secret_problems(config):  # at the start, never at a call
        raise ConfigError(missing, source=config.source)
    permissions = config.platform_settings.overrides.conversation_config_override.model_dump()
    _, dropped = permitted_overrides(override_candidates(config), permissions)
    if dropped:
        _LOGGER.debug("not sent as overrides (the agent does not allow them): %s", ", ".join(dropped))
    alert = error_alert(config, speaker)
    watch = stopwatch or MonotonicClock()

    def make(wake_word: str) -> ElevenLabsAgentSession:
        initiation = initiation_for(config, wake_word)
        variables = dict(initiation.dynamic_variables)
        runner = (
            DeviceToolRunner(device_tools, variables, events=events, clock=clock) if device_tools else None
        )
        return ElevenLabsAgentSession(
            settings,
            initiation,
            speaker=speaker,
            events=events,
            stopwatch=watch,
            url_provider=provider,
            tools=runner,
            resampler=lambda a, b: Resampler(a, b).process,
            alert=alert,
        )

    return make


def agent_session_factory(
    config: Config, wiring: Wiring, local_models: LocalModels | None
) -> Callable[[str], AgentSession]:
    """`mode: remote`: remote sessions; `mode: auto`: remote sessions that fail over to local."""
    remote = remote_session_factory(config, speaker=wiring.speaker, events=wiring.events, clock=wiring.clock)
    if config.appliance.mode != "auto" or local_models is None:
        return remote
    from appliance.runtime.failover_session import FailoverPolicy, FailoverSession
    from appliance.runtime.local_agent import local_session_factory

    local = local_session_factory(
        config,
        local_models,
        speaker=wiring.speaker,
        events=wiring.events,
        clock=wiring.clock,
        timers=wiring.timers,
    )
    policy = FailoverPolicy(wiring.clock, config.appliance.remote.failover_cooldown_s)

    def make(wake_word: str) -> AgentSession:
        return FailoverSession(
            lambda: remote(wake_word), lambda: local(wake_word), policy=policy, events=wiring.events
        )

    return make
