"""`FailoverSession` (mode auto) with fake sessions and a fake clock."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np

from appliance.core.elevenlabs_protocol import TranscriptEntry
from appliance.core.endpointing import UtteranceEnded
from appliance.runtime.failover_session import FailoverPolicy, FailoverSession
from appliance.testing.fakes import FixedClock, RecordingEvents


class FakeSession:
    def __init__(
        self,
        name: str,
        log: list[str],
        *,
        transcript: list[TranscriptEntry] | None = None,
        awaiting_reply: bool = False,
    ) -> None:
        self.name, self.log = name, log
        self._transcript = transcript or []
        self.awaiting_reply = awaiting_reply
        self.frames = 0
        self.utterances: list[UtteranceEnded] = []
        self.updates: list[str] = []
        self.ended: str | None = None
        self._closed: asyncio.Future[str] | None = None

    @property
    def busy(self) -> bool:
        return self.name == "remote"

    async def start(self) -> None:
        self._closed = asyncio.get_running_loop().create_future()
        self.log.append(f"{self.name}.start")

    def push_audio(self, frame: Any) -> None:
        self.frames += 1

    async def speech_started(self, t: float) -> None:
        return None

    async def utterance(self, utterance: UtteranceEnded) -> None:
        self.utterances.append(utterance)

    async def end(self, reason: str) -> None:
        self.ended = reason
        self.log.append(f"{self.name}.end({reason})")

    def close(self, reason: str) -> None:
        assert self._closed is not None
        self._closed.set_result(reason)

    async def closed(self) -> str:
        assert self._closed is not None
        return await self._closed

    async def send_contextual_update(self, text: str) -> bool:
        self.updates.append(text)
        return True

    def transcript(self) -> list[TranscriptEntry]:
        return self._transcript


def utterance() -> UtteranceEnded:
    return UtteranceEnded(0.0, 1.0, "silence", b"\0\0")


class Rig:
    def __init__(self, cooldown_s: float = 30.0, **remote_kw: Any) -> None:
        self.clock = FixedClock()
        self.policy = FailoverPolicy(self.clock, cooldown_s)
        self.events = RecordingEvents()
        self.log: list[str] = []
        self.remote_kw = remote_kw
        self.remotes: list[FakeSession] = []
        self.locals: list[FakeSession] = []

    def session(self) -> FailoverSession:
        def remote() -> FakeSession:
            self.remotes.append(FakeSession("remote", self.log, **self.remote_kw))
            return self.remotes[-1]

        def local() -> FakeSession:
            self.locals.append(FakeSession("local", self.log))
            return self.locals[-1]

        return FailoverSession(remote, local, policy=self.policy, events=self.events)


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def test_a_network_failure_continues_the_conversation_on_the_local_agent() -> None:
    async def main() -> None:
        said = [TranscriptEntry("user", "What is the weather?"), TranscriptEntry("agent", "Let me check.")]
        rig = Rig(transcript=said, awaiting_reply=True)
        session = rig.session()
        await session.start()
        session.push_audio(np.zeros(1280, dtype=np.int16))
        await session.utterance(utterance())
        rig.remotes[0].close("network_error")
        await settle()
        local = rig.locals[0]
        assert rig.events.items == [{"type": "failover", "to": "local", "reason": "network_error"}]
        assert session.mode == "local" and session.active is local and not session.busy
        assert local.updates == [
            "The conversation so far (with the online agent):\n"
            "user: What is the weather?\nagent: Let me check."
        ]
        assert local.utterances == [utterance()]  # the unanswered turn is answered locally
        session.push_audio(np.zeros(1280, dtype=np.int16))
        assert (rig.remotes[0].frames, local.frames) == (1, 1)
        assert await session.send_contextual_update("kitchen") and local.updates[-1] == "kitchen"
        local.close("end_call")
        assert await session.closed() == "end_call"
        assert rig.policy.last_failure_at == 0.0

    asyncio.run(main())


def test_within_the_cool_down_new_sessions_go_local_then_remote_again() -> None:
    async def main() -> None:
        rig = Rig(cooldown_s=30.0)
        first = rig.session()
        await first.start()
        rig.remotes[0].close("network_error")
        await settle()
        rig.locals[0].close("silence")
        assert await first.closed() == "silence"

        rig.clock.t = 10.0
        second = rig.session()
        await second.start()
        await settle()
        assert len(rig.remotes) == 1 and len(rig.locals) == 2  # straight to local
        assert rig.events.items[-1] == {"type": "failover", "to": "local", "reason": "remote_cooldown"}
        rig.locals[1].close("no_speech")
        assert await second.closed() == "no_speech"

        rig.clock.t = 31.0
        third = rig.session()
        await third.start()
        assert len(rig.remotes) == 2  # remote first again
        rig.remotes[1].close("end_call")
        assert await third.closed() == "end_call"
        assert rig.policy.last_failure_at is None  # it worked: the failure is forgotten

    asyncio.run(main())


def test_other_endings_do_not_fail_over() -> None:
    async def main() -> None:
        for reason in ("end_call", "remote_rejected", "agent_ended", "input_ended"):
            rig = Rig()
            session = rig.session()
            await session.start()
            rig.remotes[0].close(reason)
            assert await session.closed() == reason
            assert not rig.locals and not rig.events.items

    asyncio.run(main())


def test_a_failure_while_ending_does_not_start_the_local_agent() -> None:
    async def main() -> None:
        rig = Rig()
        session = rig.session()
        await session.start()
        await session.end("input_ended")
        assert rig.remotes[0].ended == "input_ended"
        rig.remotes[0].close("network_error")
        assert await session.closed() == "network_error"
        assert not rig.locals

    asyncio.run(main())
