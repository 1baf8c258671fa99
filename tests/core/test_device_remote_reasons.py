"""Session endings the user hears: remote failures get the error chime, the rest the done chime."""

from __future__ import annotations

import pytest

from appliance.core.device import Chime, DeviceMachine, PlayChime, SessionEnded, WakeWordDetected


@pytest.mark.parametrize(
    ("reason", "chime"),
    [
        ("network_error", Chime.ERROR),
        ("remote_rejected", Chime.ERROR),
        ("remote_error", Chime.ERROR),
        ("error", Chime.ERROR),
        ("end_call", Chime.DONE),
        ("agent_ended", Chime.DONE),
        ("no_speech", Chime.DONE),
    ],
)
def test_the_end_of_a_session_sounds_like_what_happened(reason: str, chime: Chime) -> None:
    machine = DeviceMachine()
    machine.handle(WakeWordDetected("hey_jarvis", 0.9), 1.0)
    effects = machine.handle(SessionEnded(reason), 5.0)
    assert [e for e in effects if isinstance(e, PlayChime)] == [PlayChime(chime)]
