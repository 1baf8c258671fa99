"""What other programs on the device may ask of a running appliance (the status feed's commands).

`ServiceMicrophone` wraps the real microphone for the whole run: it carries mute (while muted,
every block is replaced by silence before anything sees it: no wake word, no VAD, nothing
streamed to an agent) and it survives a config reload (the next loop reads on from the same
stream; see `frames`). `Controls` turns commands into actions on the current loop.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import AsyncIterator
from typing import Any

import numpy as np

from appliance.core.device import WakeWordDetected
from appliance.logs import redact
from appliance.ports import EventSink, Microphone, Pcm16, Speaker
from appliance.runtime.loop import ApplianceLoop
from appliance.runtime.playback_monitor import MonitoredSpeaker

_LOGGER = logging.getLogger(__name__)

PUSH_TO_TALK = "push_to_talk"
MAX_TEXT_CHARS = 2000


class CommandError(Exception):
    """A command that cannot be carried out; the message says why (sent back to the client)."""


class ServiceMicrophone:
    """The microphone, mutable, and readable by successive loops (config reloads)."""

    def __init__(self, inner: Microphone) -> None:
        self.inner = inner
        self.sample_rate_hz = inner.sample_rate_hz
        self.muted = False
        self._stream: AsyncIterator[Pcm16] | None = None
        self._pending: asyncio.Future[Pcm16 | None] | None = None

    @property
    def dropped_blocks(self) -> int:
        return self.inner.dropped_blocks

    @dropped_blocks.setter
    def dropped_blocks(self, value: int) -> None:
        self.inner.dropped_blocks = value

    async def _next(self) -> Pcm16 | None:
        assert self._stream is not None
        try:
            return await self._stream.__anext__()
        except StopAsyncIteration:
            return None

    async def frames(self) -> AsyncIterator[Pcm16]:
        """The inner stream, continued: a loop stopped for a reload does not end it.

        The read in progress is shielded, so cancelling the consumer (a stopping loop) leaves
        it pending for the next loop instead of tearing the inner generator down.
        """
        if self._stream is None:
            self._stream = aiter(self.inner.frames())
        while True:
            if self._pending is None:
                self._pending = asyncio.ensure_future(self._next())
            pending = self._pending
            try:
                block = await asyncio.shield(pending)
            except asyncio.CancelledError:
                if pending.cancelled():  # closed, not just this consumer stopping
                    self._pending = None
                raise
            except Exception:
                self._pending = None  # a failed read is reported once
                raise
            self._pending = None
            if block is None:
                return
            yield np.zeros_like(block) if self.muted else block

    async def close(self) -> None:
        if self._pending is not None and not self._pending.done():
            self._pending.cancel()
        await self.inner.close()


def speaker_volume_target(speaker: Speaker) -> Any | None:
    """The speaker object with a `volume` (0–2) setting, if the output device has one."""
    inner = speaker.inner if isinstance(speaker, MonitoredSpeaker) else speaker
    return inner if hasattr(inner, "volume") else None


class Controls:
    """Commands of the status feed, carried out on the current loop."""

    def __init__(self, microphone: ServiceMicrophone, speaker: Speaker, events: EventSink) -> None:
        self.microphone = microphone
        self.speaker = speaker
        self.events = events
        self.loop: ApplianceLoop | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    # ------------------------------------------------------------ commands
    async def execute(self, command: str, args: dict[str, Any]) -> dict[str, Any]:
        """Carry out one command; the reply's extra fields. Raises `CommandError`."""
        handler = getattr(self, f"_cmd_{command}", None) if command.isidentifier() else None
        if handler is None:
            raise CommandError(f"unknown command {command!r} (known: {', '.join(COMMANDS)})")
        result: dict[str, Any] = await handler(args)
        return result

    async def _cmd_status(self, args: dict[str, Any]) -> dict[str, Any]:
        return {
            "muted": self.microphone.muted,
            "volume": self.volume,
            "in_session": self._session() is not None,
        }

    async def _cmd_push_to_talk(self, args: dict[str, Any]) -> dict[str, Any]:
        loop = self._loop()
        if self.microphone.muted:
            raise CommandError("muted: unmute first")
        if loop.session is not None:
            raise CommandError("busy: a conversation is already running")
        loop.post(WakeWordDetected(PUSH_TO_TALK, 1.0))
        return {}

    async def _cmd_stop(self, args: dict[str, Any]) -> dict[str, Any]:
        session = self._session()
        if session is None:
            return {"stopped": False}
        self._end(session, "stopped")
        return {"stopped": True}

    async def _cmd_mute(self, args: dict[str, Any]) -> dict[str, Any]:
        if not self.microphone.muted:
            self.microphone.muted = True
            self.events.emit("muted")
            session = self._session()
            if session is not None:
                self._end(session, "muted")
        return {"muted": True}

    async def _cmd_unmute(self, args: dict[str, Any]) -> dict[str, Any]:
        if self.microphone.muted:
            self.microphone.muted = False
            self.events.emit("unmuted")
        return {"muted": False}

    async def _cmd_volume(self, args: dict[str, Any]) -> dict[str, Any]:
        target = speaker_volume_target(self.speaker)
        if "value" not in args:
            return {"volume": self.volume}
        try:
            value = float(args["value"])
        except (TypeError, ValueError):
            raise CommandError(f"volume: {args['value']!r} is not a number (0–2)") from None
        if not 0.0 <= value <= 2.0:
            raise CommandError(f"volume: {value:g} is outside 0–2")
        if target is None:
            raise CommandError("this output has no volume control (a WAV file?)")
        target.volume = value
        return {"volume": self.volume}

    async def _cmd_contextual_update(self, args: dict[str, Any]) -> dict[str, Any]:
        return await self._send("send_contextual_update", args)

    async def _cmd_user_message(self, args: dict[str, Any]) -> dict[str, Any]:
        return await self._send("send_user_message", args)

    async def _cmd_user_activity(self, args: dict[str, Any]) -> dict[str, Any]:
        return await self._call("send_user_activity")

    async def _cmd_feedback(self, args: dict[str, Any]) -> dict[str, Any]:
        score = args.get("score", args.get("text"))
        if score not in ("like", "dislike"):
            raise CommandError('give the score: {"score": "like"} or {"score": "dislike"}')
        return await self._call("send_feedback", score == "like")

    # ------------------------------------------------------------ helpers
    @property
    def volume(self) -> float | None:
        target = speaker_volume_target(self.speaker)
        return None if target is None else float(target.volume)

    def _loop(self) -> ApplianceLoop:
        if self.loop is None:
            raise CommandError("the appliance is not running yet")
        return self.loop

    def _session(self) -> Any | None:
        return None if self.loop is None else self.loop.session

    async def _send(self, method: str, args: dict[str, Any]) -> dict[str, Any]:
        text = args.get("text")
        if not isinstance(text, str) or not text.strip():
            raise CommandError('give the text: {"text": "..."}')
        if len(text) > MAX_TEXT_CHARS:
            raise CommandError(f"text too long ({len(text)} > {MAX_TEXT_CHARS} characters)")
        session = self._session()
        if session is None:
            raise CommandError("no conversation is running (push_to_talk starts one)")
        fn = getattr(session, method, None)
        if fn is None:
            raise CommandError(f"this agent does not take {method.removeprefix('send_')} messages")
        result = fn(text)
        if inspect.isawaitable(result):
            result = await result
        return {"accepted": result} if isinstance(result, bool) else {}

    async def _call(self, method: str, *args: Any) -> dict[str, Any]:
        session = self._session()
        if session is None:
            raise CommandError("no conversation is running (push_to_talk starts one)")
        fn = getattr(session, method, None)
        if fn is None:
            raise CommandError(f"this agent does not take {method.removeprefix('send_')} messages")
        result = fn(*args)
        if inspect.isawaitable(result):
            result = await result
        return {"accepted": result} if isinstance(result, bool) else {}

    def _end(self, session: Any, reason: str) -> None:
        """End the session now: silence at once when the agent can (`stop`), else gracefully."""
        loop = self.loop
        if isinstance(loop, ApplianceLoop) and loop.session is session:
            if not callable(getattr(session, "stop", None)):
                self.speaker.stop()
            loop.end_session(reason)  # with the loop's deadlines: closed, or abandoned, in time
            return
        stop_now = getattr(session, "stop", None)
        coro = stop_now(reason) if callable(stop_now) else session.end(reason)
        if not callable(stop_now):
            self.speaker.stop()

        async def run() -> None:
            try:
                await coro
            except Exception as err:  # reported, never raised into the feed
                _LOGGER.warning("ending the session failed: %s", redact(str(err)))

        task = asyncio.create_task(run(), name=f"control-{reason}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


COMMANDS = (
    "status",
    "push_to_talk",
    "stop",
    "mute",
    "unmute",
    "volume",
    "contextual_update",
    "user_message",
    "user_activity",
    "feedback",
)
