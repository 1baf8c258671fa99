"""Local recordings: written as the privacy settings allow, expired with a fake clock."""

from __future__ import annotations

import asyncio
import json
import os
import stat
import wave
from concurrent.futures import Executor, Future
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from appliance.core.endpointing import UtteranceEnded
from appliance.core.retention import DAY_S, RetentionPolicy
from appliance.runtime.recorder import RecordingStore, TurnRecord, TurnRecorder

T = TypeVar("T")
NOW = 1_800_000_000.0


class Inline(Executor):
    def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> Future[Any]:
        future: Future[Any] = Future()
        future.set_result(fn(*args, **kwargs))
        return future


def utterance(seconds: float = 0.5) -> UtteranceEnded:
    pcm = (np.sin(np.arange(int(16000 * seconds)) / 5) * 8000).astype("<i2").tobytes()
    return UtteranceEnded(start_t=3.0 - seconds, end_t=3.0, reason="silence", audio=pcm)


def converse(recorder: TurnRecorder) -> None:
    """A session of two turns, as the events stream and the device see it."""
    recorder.on_event({"type": "conversation_initiation_metadata", "conversation_id": "local_abc123"})
    recorder.on_utterance(utterance())
    recorder.on_event({"type": "user_transcript", "user_transcript": "What is the capital of France?"})
    recorder.on_event({"type": "agent_response", "agent_response": "Paris.", "kind": "reply"})
    recorder.on_utterance(utterance(0.3))
    recorder.on_event({"type": "user_transcript", "user_transcript": "Thanks"})
    recorder.on_event({"type": "agent_response", "agent_response": "Goodbye!", "kind": "farewell"})
    recorder.on_event({"type": "session_ended", "reason": "end_call"})


def recorder(tmp_path: Path, policy: RetentionPolicy, now: list[float]) -> TurnRecorder:
    return TurnRecorder(RecordingStore(tmp_path / "rec"), policy, Inline(), wall_clock=lambda: now[0])


def test_nothing_is_written_by_default(tmp_path: Path) -> None:
    r = recorder(tmp_path, RetentionPolicy(), [NOW])
    converse(r)
    assert r.written == [] and not (tmp_path / "rec").exists()


def test_zero_retention_writes_nothing(tmp_path: Path) -> None:
    for policy in (
        RetentionPolicy(enabled=True, record_voice=True, zero_retention_mode=True),
        RetentionPolicy(enabled=True, record_voice=True, retention_days=0),
    ):
        r = recorder(tmp_path, policy, [NOW])
        converse(r)
        assert r.written == [] and not (tmp_path / "rec").exists()


def test_turns_with_voice_transcript_and_reply(tmp_path: Path) -> None:
    r = recorder(tmp_path, RetentionPolicy(enabled=True, record_voice=True, retention_days=30), [NOW])
    converse(r)
    assert len(r.written) == 2
    meta = json.loads(r.written[0].read_text())
    assert meta["transcript"] == "What is the capital of France?" and meta["reply"] == "Paris."
    assert meta["conversation_id"] == "local_abc123" and meta["turn"] == 1
    assert meta["expires_at"] == NOW + 30 * DAY_S
    wav = r.written[0].parent / meta["audio"]
    with wave.open(str(wav)) as w:
        assert (w.getframerate(), w.getnchannels(), w.getnframes()) == (16000, 1, 8000)
    second = json.loads(r.written[1].read_text())
    assert second["transcript"] == "Thanks" and second["reply"] is None  # a farewell is not a reply
    folder = r.written[0].parent
    assert stat.S_IMODE(os.stat(folder).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(r.written[0]).st_mode) == 0o600


def test_without_record_voice_only_text_is_kept_and_without_text_only_audio(tmp_path: Path) -> None:
    r = recorder(tmp_path / "a", RetentionPolicy(enabled=True), [NOW])
    converse(r)
    meta = json.loads(r.written[0].read_text())
    assert meta["audio"] is None and meta["transcript"]
    assert not list(r.written[0].parent.glob("*.wav"))
    r = recorder(
        tmp_path / "b",
        RetentionPolicy(enabled=True, record_voice=True, delete_transcript_and_pii=True),
        [NOW],
    )
    converse(r)
    meta = json.loads(r.written[0].read_text())
    assert meta["audio"] and meta["transcript"] is None and meta["reply"] is None


def test_expiry_with_a_fake_clock(tmp_path: Path) -> None:
    now = [NOW]
    r = recorder(tmp_path, RetentionPolicy(enabled=True, record_voice=True, retention_days=2), now)
    converse(r)
    folder = tmp_path / "rec"
    assert len(list(folder.iterdir())) == 4  # two turns: json + wav each
    now[0] = NOW + 2 * DAY_S - 1
    assert r.sweep().deleted == [] and len(list(folder.iterdir())) == 4
    now[0] = NOW + 2 * DAY_S
    assert len(r.sweep().deleted) == 2
    assert list(folder.iterdir()) == []


def test_retention_applied_to_existing_recordings(tmp_path: Path) -> None:
    now = [NOW]
    r = recorder(tmp_path, RetentionPolicy(enabled=True, record_voice=True, retention_days=-1), now)
    converse(r)
    folder = tmp_path / "rec"
    now[0] = NOW + 400 * DAY_S
    assert r.sweep().deleted == []  # recorded to be kept forever
    # the owner turns voice recording off and applies it to what exists: the audio goes
    r.policy = RetentionPolicy(enabled=True, record_voice=False, retention_days=-1, apply_to_existing=True)
    result = r.sweep()
    assert len(result.trimmed) == 2 and not list(folder.glob("*.wav"))
    assert all(json.loads(p.read_text())["audio"] is None for p in folder.glob("*.json"))
    # zero retention applied to existing conversations deletes everything
    r.policy = RetentionPolicy(enabled=True, zero_retention_mode=True, apply_to_existing=True)
    assert len(r.sweep().deleted) == 2 and list(folder.iterdir()) == []


def test_orphans_and_damaged_files_are_cleaned(tmp_path: Path) -> None:
    folder = tmp_path / "rec"
    store = RecordingStore(folder)
    policy = RetentionPolicy(enabled=True, record_voice=True, retention_days=1)
    path = store.write(TurnRecord(NOW, "c", 1, utterance().audio, 0.5, "hi", "hello"), policy)
    assert path is not None
    (folder / "broken.json").write_text("{not json")
    orphan = folder / "orphan.wav"
    orphan.write_bytes(b"RIFF")
    os.utime(orphan, (NOW - 2 * DAY_S, NOW - 2 * DAY_S))
    (folder / "x.json.tmp").write_text("partial")
    result = store.sweep(policy, NOW)
    assert "orphan.wav" in result.deleted
    assert sorted(p.name for p in folder.iterdir()) == sorted([path.name, path.with_suffix(".wav").name])


def test_the_session_wrapper_copies_utterances_and_forwards_the_rest(tmp_path: Path) -> None:
    class Session:
        busy = True

        def __init__(self) -> None:
            self.got: list[Any] = []

        async def start(self) -> None:
            self.got.append("start")

        def push_audio(self, frame: Any) -> None:
            self.got.append("audio")

        async def speech_started(self, t: float) -> None:
            self.got.append("speech")

        async def utterance(self, u: UtteranceEnded) -> None:
            self.got.append("utterance")

        async def end(self, reason: str) -> None:
            self.got.append(reason)

        async def closed(self) -> str:
            return "done"

        async def send_user_message(self, text: str) -> bool:
            self.got.append(text)
            return True

    inner = Session()
    r = recorder(tmp_path, RetentionPolicy(enabled=True, record_voice=True), [NOW])
    session: Any = r.wrap(lambda wake_word: inner)("hey_jarvis")

    async def main() -> None:
        await session.start()
        session.push_audio(np.zeros(4, np.int16))
        await session.speech_started(1.0)
        await session.utterance(utterance())
        assert await session.send_user_message("hi")
        await session.end("bye")
        assert await session.closed() == "done"

    asyncio.run(main())
    assert session.busy is True
    assert inner.got == ["start", "audio", "speech", "utterance", "hi", "bye"]
    r.on_event({"type": "session_ended"})
    assert len(r.written) == 1
