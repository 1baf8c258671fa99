"""Optional local recordings of turns, kept as the agent's privacy settings allow.

Nothing is written unless `appliance.recording.enabled` is true; then each turn becomes
`<when>-<conversation>-t<n>.json` (transcript, reply, times) plus, when voice recording is
allowed, `<same>.wav` (the user's utterance, 16 kHz mono) in the recordings folder
(`appliance.recording.dir`, else `$STATE_DIRECTORY/recordings` under systemd, else
`~/.local/state/appliance/recordings`). The pure rules are `appliance.core.retention`; this
module does the file work: writing turns, and sweeping expired ones at start and every hour.
Files are private to the service user (0600 in a 0700 folder).
"""

from __future__ import annotations

import json
import logging
import time
import wave
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from appliance.core.endpointing import UtteranceEnded
from appliance.core.retention import Action, RetentionPolicy, StoredTurn, plan
from appliance.paths import write_atomic
from appliance.ports import MIC_RATE_HZ, AgentSession, Pcm16

_LOGGER = logging.getLogger(__name__)

SWEEP_INTERVAL_S = 3600.0
RATE_HZ = MIC_RATE_HZ


@dataclass
class TurnRecord:
    recorded_at: float
    conversation_id: str
    turn: int
    audio: bytes | None = None
    """s16le 16 kHz mono, only when the policy keeps audio."""
    duration_s: float = 0.0
    transcript: str | None = None
    reply: str | None = None


@dataclass
class SweepResult:
    deleted: list[str] = field(default_factory=list)
    trimmed: list[str] = field(default_factory=list)


def _wav_bytes(pcm: bytes) -> bytes:
    import io

    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE_HZ)
        w.writeframes(pcm)
    return buf.getvalue()


class RecordingStore:
    """The recordings folder. Blocking: the runtime calls it on a worker thread."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def write(self, record: TurnRecord, policy: RetentionPolicy) -> Path | None:
        """Store one turn as the policy allows; None if nothing of it may be kept."""
        if not policy.records:
            return None
        audio = record.audio if policy.keeps_audio else None
        transcript = record.transcript if policy.keeps_text else None
        reply = record.reply if policy.keeps_text else None
        if audio is None and transcript is None and reply is None:
            return None
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        stamp = datetime.fromtimestamp(record.recorded_at, UTC).strftime("%Y%m%dT%H%M%S")
        conv = "".join(c for c in record.conversation_id if c.isalnum())[-12:] or "session"
        stem = f"{stamp}-{conv}-t{record.turn}"
        wav_name = None
        if audio is not None:
            wav_name = stem + ".wav"
            write_atomic(self.directory / wav_name, _wav_bytes(audio), mode=0o600)
        meta = {
            "recorded_at": record.recorded_at,
            "recorded_at_utc": datetime.fromtimestamp(record.recorded_at, UTC).isoformat(),
            "expires_at": policy.expires_at(record.recorded_at),
            "conversation_id": record.conversation_id,
            "turn": record.turn,
            "duration_s": round(record.duration_s, 3),
            "transcript": transcript,
            "reply": reply,
            "audio": wav_name,
        }
        path = self.directory / (stem + ".json")
        write_atomic(path, json.dumps(meta, ensure_ascii=False, indent=1).encode("utf-8"), mode=0o600)
        return path

    def sweep(self, policy: RetentionPolicy, now: float) -> SweepResult:
        """Delete what has expired; trim what the current policy no longer allows (when it
        applies to existing recordings). Orphan WAVs count as recorded at their mtime."""
        result = SweepResult()
        if not self.directory.is_dir():
            return result
        indexed: set[str] = set()
        for path in sorted(self.directory.glob("*.json")):
            meta = self._read(path)
            if meta is None:
                continue
            audio = meta.get("audio") if isinstance(meta.get("audio"), str) else None
            if audio:
                indexed.add(audio)
            stored = StoredTurn(
                recorded_at=float(meta.get("recorded_at") or path.stat().st_mtime),
                expires_at=meta["expires_at"] if isinstance(meta.get("expires_at"), int | float) else None,
                has_audio=audio is not None,
                has_text=meta.get("transcript") is not None or meta.get("reply") is not None,
            )
            action = plan(stored, policy, now)
            if action is Action.KEEP:
                continue
            if action is Action.DELETE:
                if audio:
                    (self.directory / audio).unlink(missing_ok=True)
                path.unlink(missing_ok=True)
                result.deleted.append(path.name)
                continue
            if action is Action.DROP_AUDIO and audio:
                (self.directory / audio).unlink(missing_ok=True)
                meta["audio"] = None
            elif action is Action.DROP_TEXT:
                meta["transcript"] = meta["reply"] = None
            write_atomic(path, json.dumps(meta, ensure_ascii=False, indent=1).encode("utf-8"), mode=0o600)
            result.trimmed.append(path.name)
        for wav_path in sorted(self.directory.glob("*.wav")):
            if wav_path.name in indexed:
                continue
            mtime = wav_path.stat().st_mtime
            orphan = StoredTurn(mtime, policy.expires_at(mtime), has_audio=True, has_text=False)
            if plan(orphan, policy, now) is not Action.KEEP or not policy.keeps_audio:
                wav_path.unlink(missing_ok=True)
                result.deleted.append(wav_path.name)
        for tmp in self.directory.glob("*.tmp"):
            tmp.unlink(missing_ok=True)
        return result

    def _read(self, path: Path) -> dict[str, Any] | None:
        try:
            meta = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            _LOGGER.warning("recording %s is unreadable; deleting it", path.name)
            path.unlink(missing_ok=True)
            return None
        return meta if isinstance(meta, dict) else None


class _RecordingSession:
    """The agent session, plus a copy of each utterance for the recorder."""

    def __init__(self, inner: AgentSession, recorder: TurnRecorder) -> None:
        self._inner = inner
        self._recorder = recorder

    @property
    def busy(self) -> bool:
        return self._inner.busy

    async def start(self) -> None:
        await self._inner.start()

    def push_audio(self, frame: Pcm16) -> None:
        self._inner.push_audio(frame)

    async def speech_started(self, t: float) -> None:
        await self._inner.speech_started(t)

    async def utterance(self, utterance: UtteranceEnded) -> None:
        self._recorder.on_utterance(utterance)
        await self._inner.utterance(utterance)

    async def end(self, reason: str) -> None:
        await self._inner.end(reason)

    async def closed(self) -> str:
        return await self._inner.closed()

    def __getattr__(self, name: str) -> Any:
        # stop, send_contextual_update, send_user_message, ...: whatever the agent offers.
        return getattr(self._inner, name)


class TurnRecorder:
    """Assembles turns from utterances and the events stream; writes them on `executor`."""

    def __init__(
        self,
        store: RecordingStore,
        policy: RetentionPolicy,
        executor: Executor,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.policy = policy
        self._executor = executor
        self._now = wall_clock
        self._pending: TurnRecord | None = None
        self._conversation_id = "session"
        self._turns = 0
        self.written: list[Path] = []

    def wrap(self, factory: Callable[[str], AgentSession]) -> Callable[[str], AgentSession]:
        return lambda wake_word: _RecordingSession(factory(wake_word), self)

    def on_utterance(self, utterance: UtteranceEnded) -> None:
        self._finish()
        if not self.policy.records:
            return
        self._turns += 1
        self._pending = TurnRecord(
            recorded_at=self._now(),
            conversation_id=self._conversation_id,
            turn=self._turns,
            audio=utterance.audio if self.policy.keeps_audio else None,
            duration_s=utterance.duration_s,
        )

    def on_event(self, event: dict[str, Any]) -> None:
        kind = event["type"]
        if kind == "conversation_initiation_metadata":
            self._conversation_id = str(event.get("conversation_id") or "session")
            self._turns = 0
        elif kind == "user_transcript" and self._pending is not None:
            self._pending.transcript = str(event.get("user_transcript") or "")
        elif kind == "agent_response" and self._pending is not None:
            if (event.get("kind") or "reply") == "reply" and self._pending.reply is None:
                self._pending.reply = str(event.get("agent_response") or "")
        elif kind == "session_ended":
            self._finish()

    def _finish(self) -> None:
        record, self._pending = self._pending, None
        if record is None:
            return
        policy = self.policy
        future = self._executor.submit(self.store.write, record, policy)
        future.add_done_callback(self._written)

    def _written(self, future: Any) -> None:
        try:
            path = future.result()
        except Exception as err:
            _LOGGER.warning("could not store a recording: %s", err)
            return
        if path is not None:
            self.written.append(path)
            _LOGGER.debug("recorded turn %s", path.name)

    def sweep(self) -> SweepResult:
        """Blocking: run on a worker thread."""
        result = self.store.sweep(self.policy, self._now())
        if result.deleted or result.trimmed:
            _LOGGER.info(
                "recordings: %d expired and deleted, %d trimmed to the privacy settings",
                len(result.deleted),
                len(result.trimmed),
            )
        return result
