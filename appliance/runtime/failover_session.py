"""`mode: auto`: a remote conversation that continues on the local agent when the network fails.

`FailoverSession` implements the AgentSession port around two factories. It starts the remote
session; if that ends with `network_error` (it could not connect, or it dropped and used up
its reconnect budget), the conversation goes on with a local agent session, which gets the
transcript so far as a contextual update (and the user's last turn again, if the remote agent
never answered it). New sessions try the remote agent first again, except within
`cooldown_s` of the last failure (measured on the appliance clock), so a dead network costs
one failed attempt, not one per wake word.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Callable
from typing import Any

from appliance.core.endpointing import UtteranceEnded
from appliance.ports import AgentSession, Clock, EventSink, Pcm16

_LOGGER = logging.getLogger(__name__)

FAILOVER_REASONS = frozenset({"network_error"})


class FailoverPolicy:
    """Shared by the sessions of one run: when the remote agent last failed."""

    def __init__(self, clock: Clock, cooldown_s: float = 30.0) -> None:
        self._clock = clock
        self.cooldown_s = cooldown_s
        self.last_failure_at: float | None = None

    def remote_allowed(self) -> bool:
        last = self.last_failure_at
        return last is None or self._clock.now() - last >= self.cooldown_s

    def failed(self) -> None:
        self.last_failure_at = self._clock.now()

    def succeeded(self) -> None:
        self.last_failure_at = None


class FailoverSession:
    def __init__(
        self,
        make_remote: Callable[[], AgentSession],
        make_local: Callable[[], AgentSession],
        *,
        policy: FailoverPolicy,
        events: EventSink,
    ) -> None:
        self._make_remote = make_remote
        self._make_local = make_local
        self._policy = policy
        self._events = events
        self._active: AgentSession | None = None
        self._closed: asyncio.Future[str] | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._ending: str | None = None
        self._last_utterance: UtteranceEnded | None = None
        self.mode = "remote"

    # ------------------------------------------------------------ AgentSession port
    @property
    def busy(self) -> bool:
        active = self._active
        if self._closed is not None and self._closed.done():
            return False
        return True if active is None else active.busy

    @property
    def active(self) -> AgentSession | None:
        return self._active

    async def start(self) -> None:
        self._closed = asyncio.get_running_loop().create_future()
        if not self._policy.remote_allowed():
            self._events.emit("failover", to="local", reason="remote_cooldown")
            _LOGGER.info("the remote agent failed recently; this conversation uses the local agent")
            self._watcher = asyncio.create_task(self._local_only(), name="failover")
            return
        remote = self._make_remote()
        self._active = remote
        await remote.start()
        self._watcher = asyncio.create_task(self._watch(remote), name="failover")

    def push_audio(self, frame: Pcm16) -> None:
        if self._active is not None:
            self._active.push_audio(frame)

    async def speech_started(self, t: float) -> None:
        if self._active is not None:
            await self._active.speech_started(t)

    async def utterance(self, utterance: UtteranceEnded) -> None:
        self._last_utterance = utterance
        if self._active is not None:
            await self._active.utterance(utterance)

    async def end(self, reason: str) -> None:
        self._ending = self._ending or reason
        if self._active is not None:
            await self._active.end(reason)

    async def stop(self, reason: str) -> None:
        self._ending = self._ending or reason
        if self._active is not None:
            await _call(self._active, "stop", reason, fallback="end")

    async def closed(self) -> str:
        if self._closed is None:
            raise RuntimeError("session not started")
        try:
            return await asyncio.shield(self._closed)
        finally:
            if self._watcher is not None and not self._watcher.done():
                self._watcher.cancel()
                await asyncio.gather(self._watcher, return_exceptions=True)

    # ------------------------------------------------------------ client messages
    async def send_contextual_update(self, text: str) -> bool:
        return bool(await _call(self._active, "send_contextual_update", text))

    async def send_user_message(self, text: str) -> bool:
        return bool(await _call(self._active, "send_user_message", text))

    async def send_user_activity(self) -> bool:
        return bool(await _call(self._active, "send_user_activity"))

    async def send_feedback(self, like: bool) -> bool:
        return bool(await _call(self._active, "send_feedback", like))

    # ------------------------------------------------------------ the switch
    def _finish(self, reason: str) -> None:
        if self._closed is not None and not self._closed.done():
            self._closed.set_result(reason)

    async def _watch(self, remote: AgentSession) -> None:
        reason = await remote.closed()
        if reason not in FAILOVER_REASONS or self._ending is not None:
            if reason not in FAILOVER_REASONS:
                self._policy.succeeded()
            self._finish(reason)
            return
        self._policy.failed()
        transcript: list[Any] = getattr(remote, "transcript", lambda: [])()
        unanswered = bool(getattr(remote, "awaiting_reply", False))
        self._active = None
        self._events.emit("failover", to="local", reason=reason)
        _LOGGER.warning(
            "the remote agent is unreachable (%s); the conversation continues on the local agent", reason
        )
        local = self._make_local()
        await local.start()
        self.mode = "local"
        if transcript:
            said = "\n".join(f"{e.role}: {e.text}" for e in transcript)
            await _call(
                local, "send_contextual_update", f"The conversation so far (with the online agent):\n{said}"
            )
        self._active = local
        if self._ending is not None:
            await local.end(self._ending)
        elif unanswered and self._last_utterance is not None:
            await local.utterance(self._last_utterance)
        self._finish(await local.closed())

    async def _local_only(self) -> None:
        self.mode = "local"
        local = self._make_local()
        await local.start()
        self._active = local
        if self._ending is not None:
            await local.end(self._ending)
        self._finish(await local.closed())


async def _call(session: AgentSession | None, method: str, *args: Any, fallback: str | None = None) -> Any:
    """Call an optional method of the active session (awaiting it if needed); None if absent."""
    if session is None:
        return None
    fn = getattr(session, method, None) or (getattr(session, fallback, None) if fallback else None)
    if fn is None:
        return None
    try:
        result = fn(*args)
        return await result if inspect.isawaitable(result) else result
    except Exception as err:
        _LOGGER.warning("%s on the %s session failed: %s", method, type(session).__name__, err)
        return None
