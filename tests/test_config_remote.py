"""The remote section's own settings (reconnect backoff, stall detection, failover, user id)."""

from __future__ import annotations

import pytest

from appliance.config import load_config_text
from appliance.errors import ConfigError

BASE = "appliance:\n  mode: remote\n  remote:\n    agent_id: agent_1\n"


def test_remote_defaults() -> None:
    remote = load_config_text(BASE, "t.yaml").appliance.remote
    assert (remote.reconnect_backoff_s, remote.stall_timeout_s, remote.failover_cooldown_s) == (
        0.5,
        20.0,
        30.0,
    )
    assert remote.user_id is None


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ("stall_timeout_s: 0.5", "appliance.remote.stall_timeout_s: 0.5 is outside 1–120 seconds"),
        ("reconnect_backoff_s: 31", "appliance.remote.reconnect_backoff_s: 31 is outside 0.01–30 seconds"),
        ("failover_cooldown_s: -1", "appliance.remote.failover_cooldown_s: -1 is outside 0–3600 seconds"),
    ],
)
def test_remote_ranges(line: str, problem: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config_text(BASE + f"    {line}\n", "t.yaml")
    assert err.value.problems == [problem]
