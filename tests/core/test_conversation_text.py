"""Typed input for the local agent: `user_message` (a user turn) and `contextual_update` (context)."""

from __future__ import annotations

from typing import Any

from appliance.core import conversation as cv
from appliance.core.conversation import ConversationMachine, ConversationSettings


def machine(**kw: Any) -> ConversationMachine:
    return ConversationMachine(
        ConversationSettings(system_prompt="You are helpful.", max_duration_s=None, **kw)
    )


def of(effects: list[cv.Effect], kind: type) -> list[Any]:
    return [e for e in effects if isinstance(e, kind)]


def test_a_user_message_is_answered_like_a_transcribed_turn() -> None:
    m = machine(soft_timeout_s=3.0)
    m.handle(cv.Started(), 0.0)
    effects = m.handle(cv.UserText("  Turn on the lights  "), 5.0)
    assert cv.Emit("user_message", {"text": "Turn on the lights"}) in effects
    assert cv.ArmTimer(cv.SOFT_TIMEOUT, 8.0) in effects
    (generate,) = of(effects, cv.GenerateReply)
    assert generate.messages[-1] == {"role": "user", "content": "Turn on the lights"}
    assert m.phase is cv.Phase.THINKING
    assert m.history.transcript()[-1]["role"] == "user"


def test_a_user_message_while_the_agent_speaks_waits_for_its_turn() -> None:
    m = machine(first_message="Hello there!")
    effects = m.handle(cv.Started(), 0.0)
    (say,) = of(effects, cv.Say)
    assert m.handle(cv.UserText("What time is it?"), 0.5) == []  # queued, nothing interrupted
    m.handle(cv.OutputStarted(say.turn), 0.6)
    effects = m.handle(cv.OutputFinished(say.turn, "Hello there!"), 1.5)
    assert not of(effects, cv.ArmTimer)  # no turn timeout: the queued message is answered now
    (generate,) = of(effects, cv.GenerateReply)
    assert generate.messages[-1] == {"role": "user", "content": "What time is it?"}


def test_no_user_message_turn_while_closing() -> None:
    m = machine(first_message="Hello there!")
    say = of(m.handle(cv.Started(), 0.0), cv.Say)[0]
    m.handle(cv.EndRequested("input_ended"), 0.2)
    m.handle(cv.UserText("one more thing"), 0.3)
    effects = m.handle(cv.OutputFinished(say.turn, "Hello there!"), 1.0)
    assert of(effects, cv.Close) == [cv.Close("input_ended")]
    assert not of(effects, cv.GenerateReply)


def test_a_contextual_update_is_context_for_the_llm_and_nothing_else() -> None:
    m = machine()
    m.handle(cv.Started(), 0.0)
    effects = m.handle(cv.ContextAdded("The user is in the kitchen."), 1.0)
    assert effects == [cv.Emit("contextual_update", {"text": "The user is in the kitchen."})]
    assert m.phase is cv.Phase.LISTENING
    generate = of(m.handle(cv.UserText("Where am I?"), 2.0), cv.GenerateReply)[0]
    contents = " ".join(str(msg["content"]) for msg in generate.messages)
    assert "The user is in the kitchen." in contents
    assert all(entry.get("message") != "The user is in the kitchen." for entry in m.history.transcript())
