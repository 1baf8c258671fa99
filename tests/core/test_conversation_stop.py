"""An immediate end (the status feed's `stop`, mute): silence now, then close."""

from __future__ import annotations

from appliance.core import conversation as cv
from appliance.core.conversation import ConversationMachine, ConversationSettings

SYS = frozenset({"end_call", "skip_turn", "language_detection"})


def machine() -> ConversationMachine:
    return ConversationMachine(
        ConversationSettings(system_prompt="You are helpful.", system_tool_names=SYS, max_duration_s=None)
    )


def speaking(m: ConversationMachine) -> int:
    m.handle(cv.Started(), 0.0)
    m.handle(cv.UserSpeechStarted(), 1.0)
    effects = m.handle(cv.UserUtterance(b"\0\0", 1.0), 2.0)
    turn = next(e.turn for e in effects if isinstance(e, cv.Transcribe))
    m.handle(cv.Transcribed(turn, "Tell me a long story.", "en"), 2.3)
    m.handle(cv.ReplyTextStarted(turn), 2.5)
    m.handle(cv.ReplyGenerated(turn, "Once upon a time."), 2.7)
    m.handle(cv.OutputStarted(turn), 2.8)
    assert m.phase is cv.Phase.SPEAKING
    return turn


def test_an_immediate_end_cancels_the_output_and_closes() -> None:
    m = machine()
    turn = speaking(m)
    effects = m.handle(cv.EndRequested("stopped", immediate=True), 3.0)
    assert effects[0] == cv.CancelOutput(turn)
    assert cv.Close("stopped") in effects
    assert m.phase is cv.Phase.ENDED


def test_a_graceful_end_still_waits_for_the_sentence() -> None:
    m = machine()
    turn = speaking(m)
    assert m.handle(cv.EndRequested("input_ended"), 3.0) == []
    assert cv.Close("input_ended") in m.handle(cv.OutputFinished(turn, "Once upon a time."), 4.0)


def test_an_immediate_end_while_listening_just_closes() -> None:
    m = machine()
    m.handle(cv.Started(), 0.0)
    effects = m.handle(cv.EndRequested("muted", immediate=True), 1.0)
    assert not [e for e in effects if isinstance(e, cv.CancelOutput)]
    assert cv.Close("muted") in effects
