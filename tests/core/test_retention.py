"""The privacy policy for local recordings, with a fake clock."""

from __future__ import annotations

import pytest

from appliance.core.retention import DAY_S, Action, RetentionPolicy, StoredTurn, plan, policy_from_privacy

NOW = 1_800_000_000.0


def test_nothing_is_recorded_by_default() -> None:
    default = policy_from_privacy({}, enabled=False)
    assert not default.records and not default.keeps_audio and not default.keeps_text
    # the platform's own defaults (record_voice true) do not turn the device's recorder on
    platform = policy_from_privacy({"record_voice": True, "retention_days": -1}, enabled=False)
    assert not platform.records


@pytest.mark.parametrize(
    ("privacy", "records", "audio", "text"),
    [
        ({}, True, False, True),  # transcripts only: record_voice is off by default on the device
        ({"record_voice": True}, True, True, True),
        ({"record_voice": True, "delete_audio": True}, True, False, True),
        ({"record_voice": True, "delete_transcript_and_pii": True}, True, True, False),
        ({"record_voice": True, "zero_retention_mode": True}, False, False, False),
        ({"record_voice": True, "retention_days": 0}, False, False, False),
        ({"record_voice": True, "retention_days": -1}, True, True, True),
    ],
)
def test_what_a_new_turn_keeps(privacy: dict[str, object], records: bool, audio: bool, text: bool) -> None:
    policy = policy_from_privacy(privacy, enabled=True)
    assert (policy.records, policy.keeps_audio, policy.keeps_text) == (records, audio, text)


def test_expiry() -> None:
    assert RetentionPolicy(enabled=True, retention_days=-1).expires_at(NOW) is None
    assert RetentionPolicy(enabled=True, retention_days=30).expires_at(NOW) == NOW + 30 * DAY_S


def turn(age_days: float, keep_days: float | None, *, audio: bool = True, text: bool = True) -> StoredTurn:
    recorded = NOW - age_days * DAY_S
    return StoredTurn(recorded, None if keep_days is None else recorded + keep_days * DAY_S, audio, text)


@pytest.mark.parametrize(
    ("stored", "policy", "action"),
    [
        # each recording keeps the expiry it was made with
        (turn(5, 30), RetentionPolicy(retention_days=1), Action.KEEP),
        (turn(31, 30), RetentionPolicy(retention_days=-1), Action.DELETE),
        (turn(30, 30), RetentionPolicy(retention_days=30), Action.DELETE),  # exactly due
        (turn(29.99, 30), RetentionPolicy(retention_days=30), Action.KEEP),
        (turn(400, None), RetentionPolicy(retention_days=1), Action.KEEP),  # recorded "forever"
        (turn(1, 30), RetentionPolicy(zero_retention_mode=True), Action.KEEP),  # not applied to existing
        # apply_to_existing: the current rules win
        (turn(5, 30), RetentionPolicy(retention_days=1, apply_to_existing=True), Action.DELETE),
        (turn(400, None), RetentionPolicy(retention_days=-1, apply_to_existing=True), Action.DROP_AUDIO),
        (
            turn(400, None),
            RetentionPolicy(retention_days=-1, record_voice=True, apply_to_existing=True),
            Action.KEEP,
        ),
        (turn(1, 30), RetentionPolicy(zero_retention_mode=True, apply_to_existing=True), Action.DELETE),
        (turn(1, 30), RetentionPolicy(retention_days=0, apply_to_existing=True), Action.DELETE),
        (
            turn(1, 30),
            RetentionPolicy(record_voice=True, delete_transcript_and_pii=True, apply_to_existing=True),
            Action.DROP_TEXT,
        ),
        (
            turn(1, 30, audio=False),
            RetentionPolicy(record_voice=True, delete_transcript_and_pii=True, apply_to_existing=True),
            Action.DELETE,
        ),
    ],
)
def test_sweep_plan(stored: StoredTurn, policy: RetentionPolicy, action: Action) -> None:
    assert plan(stored, policy, NOW) is action


def test_describe_says_why_nothing_is_recorded() -> None:
    assert "enabled is false" in RetentionPolicy().describe()
    assert "zero_retention_mode" in RetentionPolicy(enabled=True, zero_retention_mode=True).describe()
    assert "retention_days is 0" in RetentionPolicy(enabled=True, retention_days=0).describe()
    assert RetentionPolicy(enabled=True, record_voice=True, retention_days=7).describe() == (
        "recording audio and transcripts for 7 day(s)"
    )
