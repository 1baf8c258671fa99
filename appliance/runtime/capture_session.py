"""`CaptureSession`: a session with no conversational agent.

Used when no agent is available (`appliance.mode` has nothing to talk to): the device
still does its whole job (wake word, listening, endpointing, events) and the session ends
after the user's utterance has been captured, with reason `utterance_captured`.
"""

from __future__ import annotations

import asyncio

from appliance.core.endpointing import UtteranceEnded
from appliance.ports import Pcm16


class CaptureSession:
    def __init__(self) -> None:
        self._closed: asyncio.Future[str] | None = None
        self.utterances: list[UtteranceEnded] = []

    @property
    def busy(self) -> bool:
        return False

    def _future(self) -> asyncio.Future[str]:
        if self._closed is None:
            self._closed = asyncio.get_running_loop().create_future()
        return self._closed

    async def start(self) -> None:
        self._future()

    def push_audio(self, frame: Pcm16) -> None:
        return None

    async def speech_started(self, t: float) -> None:
        return None

    async def utterance(self, utterance: UtteranceEnded) -> None:
        self.utterances.append(utterance)
        await self.end("utterance_captured")

    async def end(self, reason: str) -> None:
        fut = self._future()
        if not fut.done():
            fut.set_result(reason)

    async def closed(self) -> str:
        return await self._future()
