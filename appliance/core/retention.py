"""What the device may keep of a conversation, and for how long: a pure policy.

Nothing is recorded unless the owner turns `appliance.recording.enabled` on. Then each turn
(the user's utterance, its transcript and the agent's reply) is kept as the agent's
`platform_settings.privacy` allows:

- `zero_retention_mode`: nothing at all.
- `retention_days`: `0` = deleted at once (so nothing is written), `-1` = kept forever,
  `N` = deleted N days after it was recorded.
- `record_voice`: the utterance audio is kept only when true; `delete_audio` drops it anyway.
- `delete_transcript_and_pii`: no transcript or reply text is kept (only the audio, if allowed).
- `apply_to_existing_conversations`: the current rules also apply to what was recorded under
  older ones (possibly deleting it at once); otherwise each recording keeps the expiry and
  content it was recorded with.

Time is injected (`now`, seconds since the epoch); the runtime adapter does the file work.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

DAY_S = 86400.0


@dataclass(frozen=True)
class RetentionPolicy:
    enabled: bool = False
    """appliance.recording.enabled: the owner asked for local recordings."""
    record_voice: bool = False
    retention_days: int = 730
    delete_transcript_and_pii: bool = False
    delete_audio: bool = False
    zero_retention_mode: bool = False
    apply_to_existing: bool = False

    @property
    def keeps_audio(self) -> bool:
        return self.records and self.record_voice and not self.delete_audio

    @property
    def keeps_text(self) -> bool:
        return self.records and not self.delete_transcript_and_pii

    @property
    def records(self) -> bool:
        """Anything at all is written for a new turn."""
        return self.enabled and not self.zero_retention_mode and self.retention_days != 0

    def expires_at(self, recorded_at: float) -> float | None:
        """When a recording made at `recorded_at` must be gone (None: never)."""
        if self.retention_days < 0:
            return None
        return recorded_at + self.retention_days * DAY_S

    def describe(self) -> str:
        if not self.enabled:
            return "recording off (appliance.recording.enabled is false)"
        if self.zero_retention_mode:
            return "recording off (platform_settings.privacy.zero_retention_mode)"
        if self.retention_days == 0:
            return "recording off (platform_settings.privacy.retention_days is 0)"
        kept = [k for k, on in (("audio", self.keeps_audio), ("transcripts", self.keeps_text)) if on]
        days = "forever" if self.retention_days < 0 else f"for {self.retention_days} day(s)"
        return f"recording {' and '.join(kept) or 'nothing'} {days}"


def policy_from_privacy(privacy: Mapping[str, Any], *, enabled: bool) -> RetentionPolicy:
    """From `platform_settings.privacy` (its model_dump) and the device opt-in."""
    return RetentionPolicy(
        enabled=enabled,
        record_voice=bool(privacy.get("record_voice", False)),
        retention_days=int(privacy.get("retention_days", 730)),
        delete_transcript_and_pii=bool(privacy.get("delete_transcript_and_pii", False)),
        delete_audio=bool(privacy.get("delete_audio", False)),
        zero_retention_mode=bool(privacy.get("zero_retention_mode", False)),
        apply_to_existing=bool(privacy.get("apply_to_existing_conversations", False)),
    )


@dataclass(frozen=True)
class StoredTurn:
    """What the metadata of one stored turn says."""

    recorded_at: float
    expires_at: float | None
    has_audio: bool
    has_text: bool


class Action(StrEnum):
    KEEP = "keep"
    DELETE = "delete"
    DROP_AUDIO = "drop_audio"
    DROP_TEXT = "drop_text"


def plan(turn: StoredTurn, policy: RetentionPolicy, now: float) -> Action:
    """What to do with one stored turn now."""
    expires = turn.expires_at
    if policy.apply_to_existing:
        if policy.zero_retention_mode or policy.retention_days == 0:
            return Action.DELETE
        expires = policy.expires_at(turn.recorded_at)
    if expires is not None and now >= expires:
        return Action.DELETE
    if policy.apply_to_existing:
        audio = turn.has_audio and policy.record_voice and not policy.delete_audio
        text = turn.has_text and not policy.delete_transcript_and_pii
        if not audio and not text:
            return Action.DELETE
        if turn.has_audio and not audio:
            return Action.DROP_AUDIO
        if turn.has_text and not text:
            return Action.DROP_TEXT
    return Action.KEEP
