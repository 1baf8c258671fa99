"""ConversationMachine: the platform's conversation flow, driven with explicit times."""

from __future__ import annotations

from typing import Any

import pytest

from appliance.core import conversation as cv
from appliance.core.conversation import ConversationMachine, ConversationSettings, OutputKind

SYS = frozenset({"end_call", "skip_turn", "language_detection"})


def machine(**kw: Any) -> ConversationMachine:
    base: dict[str, Any] = {
        "system_prompt": "You are helpful.",
        "system_tool_names": SYS,
        "max_duration_s": None,
    }
    base.update(kw)
    return ConversationMachine(ConversationSettings(**base))


def of(effects: list[cv.Effect], kind: type) -> list[Any]:
    return [e for e in effects if isinstance(e, kind)]


def emitted(effects: list[cv.Effect]) -> list[str]:
    return [e.type for e in effects if isinstance(e, cv.Emit)]


def ask(m: ConversationMachine, now: float, text: str = "What is the capital of France?") -> int:
    """User speaks and is transcribed; returns the turn id. The machine then asks for a reply."""
    m.handle(cv.UserSpeechStarted(), now - 1.5)
    effects = m.handle(cv.UserUtterance(b"\0\0", 1.5), now)
    turn = of(effects, cv.Transcribe)[0].turn
    effects = m.handle(cv.Transcribed(turn, text, "en"), now + 0.3)
    assert emitted(effects) == ["user_transcript"]
    assert of(effects, cv.GenerateReply)
    return turn


def reply(m: ConversationMachine, turn: int, now: float, text: str = "Paris.") -> list[cv.Effect]:
    effects = m.handle(cv.ReplyTextStarted(turn), now)
    effects += m.handle(cv.ReplyGenerated(turn, text), now + 0.2)
    effects += m.handle(cv.OutputStarted(turn), now + 0.3)
    return effects


def test_first_message_is_spoken_then_turn_timeout_armed() -> None:
    m = machine(first_message="Hi, how can I help?", turn_timeout_s=7.0)
    effects = m.handle(cv.Started(), 0.0)
    says = of(effects, cv.Say)
    assert [(s.text, s.kind) for s in says] == [("Hi, how can I help?", OutputKind.FIRST_MESSAGE)]
    assert of(effects, cv.SealOutput)
    effects = m.handle(cv.OutputStarted(says[0].turn), 0.2)
    assert effects == [
        cv.Emit("agent_response", {"agent_response": "Hi, how can I help?", "kind": "first_message"})
    ]
    effects = m.handle(cv.OutputFinished(says[0].turn, "Hi, how can I help?"), 2.0)
    assert cv.ArmTimer(cv.TURN_TIMEOUT, 9.0) in effects
    assert m.phase is cv.Phase.LISTENING


def test_the_first_message_is_in_the_llm_history_as_heard() -> None:
    """The LLM sees the first message (the user may answer its question); an interrupted one
    only as far as it was heard, like any reply."""
    m = machine(first_message="Hi! What shall we cook today?")
    first = of(m.handle(cv.Started(), 0.0), cv.Say)[0].turn
    m.handle(cv.OutputStarted(first), 0.1)
    m.handle(cv.OutputFinished(first, "Hi! What shall we cook today?"), 2.0)
    ask(m, 4.0)
    assert [(x["role"], x["content"]) for x in m.history.messages()[1:]] == [
        ("assistant", "Hi! What shall we cook today?"),
        ("user", "What is the capital of France?"),
    ]

    m = machine(first_message="Hi! What shall we cook today?")
    first = of(m.handle(cv.Started(), 0.0), cv.Say)[0].turn
    m.handle(cv.OutputStarted(first), 0.1)
    m.handle(cv.UserSpeechStarted(), 0.6)
    m.handle(cv.OutputFinished(first, "Hi!", interrupted=True), 0.7)
    assert [(x["role"], x["content"]) for x in m.history.messages()[1:]] == [("assistant", "Hi!")]


def test_no_first_message_waits_for_the_user() -> None:
    m = machine()
    effects = m.handle(cv.Started(), 0.0)
    assert not of(effects, cv.Say) and m.phase is cv.Phase.LISTENING


def test_a_full_turn() -> None:
    m = machine()
    m.handle(cv.Started(), 0.0)
    turn = ask(m, 5.0)
    gen = m.history.messages()
    assert [x["role"] for x in gen] == ["system", "user"]
    effects = reply(m, turn, 6.0, "The capital of France is Paris.")
    assert emitted(effects) == ["agent_response"]
    assert of(effects, cv.SealOutput) == [cv.SealOutput(turn)]
    effects = m.handle(cv.OutputFinished(turn, "The capital of France is Paris."), 8.0)
    assert of(effects, cv.ArmTimer) == [cv.ArmTimer(cv.TURN_TIMEOUT, 15.0)]
    assert [x["role"] for x in m.history.messages()] == ["system", "user", "assistant"]


def test_empty_transcript_listens_again_without_answering() -> None:
    m = machine()
    m.handle(cv.Started(), 0.0)
    turn = of(m.handle(cv.UserUtterance(b"", 0.3), 1.0), cv.Transcribe)[0].turn
    effects = m.handle(cv.Transcribed(turn, "  ", "en"), 1.2)
    assert not of(effects, cv.GenerateReply) and m.phase is cv.Phase.LISTENING


# ------------------------------------------------------------------ soft timeout
def test_soft_timeout_speaks_the_filler_once_when_the_llm_is_slow() -> None:
    m = machine(soft_timeout_s=3.0, soft_timeout_message="Hhmmmm...yeah.")
    m.handle(cv.Started(), 0.0)
    effects = m.handle(cv.UserUtterance(b"", 1.0), 10.0)
    assert cv.ArmTimer(cv.SOFT_TIMEOUT, 13.0) in effects
    turn = of(effects, cv.Transcribe)[0].turn
    m.handle(cv.Transcribed(turn, "Tell me a long story", "en"), 10.4)
    effects = m.handle(cv.TimerFired(cv.SOFT_TIMEOUT), 13.0)
    assert effects == [cv.SayFiller(turn, "Hhmmmm...yeah.", None)]
    assert m.handle(cv.TimerFired(cv.SOFT_TIMEOUT), 16.0) == []  # once per turn
    # the reply follows; agent_response carries the reply text
    effects = m.handle(cv.OutputStarted(turn), 13.1)  # the filler's audio
    assert emitted(effects) == []
    effects = m.handle(cv.ReplyGenerated(turn, "Once upon a time."), 15.0)
    assert emitted(effects) == ["agent_response"]


def test_soft_timeout_not_spoken_when_the_reply_is_faster() -> None:
    m = machine(soft_timeout_s=3.0)
    m.handle(cv.Started(), 0.0)
    turn = ask(m, 10.0)
    effects = m.handle(cv.ReplyTextStarted(turn), 11.0)
    assert effects == [cv.CancelTimer(cv.SOFT_TIMEOUT)]
    assert m.handle(cv.TimerFired(cv.SOFT_TIMEOUT), 13.0) == []  # stale timer: no filler


def test_soft_timeout_llm_generated_filler_gets_recent_context() -> None:
    m = machine(soft_timeout_s=0.5, soft_timeout_use_llm=True)
    m.handle(cv.Started(), 0.0)
    turn = ask(m, 10.0, "Explain quantum physics")
    (filler,) = m.handle(cv.TimerFired(cv.SOFT_TIMEOUT), 10.5)
    assert isinstance(filler, cv.SayFiller) and filler.turn == turn
    assert filler.context is not None and filler.context[-1]["content"] == "Explain quantum physics"


def test_soft_timeout_disabled_arms_nothing() -> None:
    m = machine(soft_timeout_s=None)
    m.handle(cv.Started(), 0.0)
    effects = m.handle(cv.UserUtterance(b"", 1.0), 10.0)
    assert not [e for e in of(effects, cv.ArmTimer) if e.name == cv.SOFT_TIMEOUT]


# ------------------------------------------------------------------ interruptions
def test_barge_in_stops_output_and_truncates_history() -> None:
    m = machine()
    m.handle(cv.Started(), 0.0)
    turn = ask(m, 5.0)
    reply(m, turn, 6.0, "The capital of France is Paris, a city of light and art.")
    effects = m.handle(cv.UserSpeechStarted(), 7.0)
    assert cv.CancelOutput(turn) in effects
    effects = m.handle(cv.OutputFinished(turn, "The capital of France", interrupted=True), 7.05)
    assert emitted(effects) == ["interruption", "agent_response_correction"]
    correction = of(effects, cv.Emit)[1].fields
    assert correction == {
        "original_agent_response": "The capital of France is Paris, a city of light and art.",
        "corrected_agent_response": "The capital of France",
    }
    assert m.history.messages()[-1] == {"role": "assistant", "content": "The capital of France"}
    assert m.phase is cv.Phase.LISTENING
    assert not of(effects, cv.ArmTimer)  # the user is talking: no turn timeout


def test_interruptions_disabled_ignores_user_speech_until_done() -> None:
    m = machine(interruptions_enabled=False)
    m.handle(cv.Started(), 0.0)
    turn = ask(m, 5.0)
    reply(m, turn, 6.0)
    assert of(m.handle(cv.UserSpeechStarted(), 7.0), cv.CancelOutput) == []
    assert m.handle(cv.UserUtterance(b"", 1.0), 8.0) == []
    effects = m.handle(cv.OutputFinished(turn, "Paris."), 9.0)
    assert m.phase is cv.Phase.LISTENING and emitted(effects) == []


def test_first_message_not_interruptible_when_disabled_but_replies_are() -> None:
    m = machine(first_message="Welcome to the museum.", disable_first_message_interruptions=True)
    first = of(m.handle(cv.Started(), 0.0), cv.Say)[0].turn
    m.handle(cv.OutputStarted(first), 0.1)
    assert of(m.handle(cv.UserSpeechStarted(), 0.5), cv.CancelOutput) == []
    m.handle(cv.OutputFinished(first, "Welcome to the museum."), 2.0)
    turn = ask(m, 5.0)
    reply(m, turn, 6.0)
    assert cv.CancelOutput(turn) in m.handle(cv.UserSpeechStarted(), 6.5)


def test_user_speech_before_any_reply_audio_cancels_silently() -> None:
    m = machine()
    m.handle(cv.Started(), 0.0)
    turn = ask(m, 5.0)
    effects = m.handle(cv.UserSpeechStarted(), 5.5)
    assert cv.CancelOutput(turn) in effects
    effects = m.handle(cv.OutputFinished(turn, "", interrupted=True), 5.6)
    assert emitted(effects) == []  # nothing was heard: no interruption, no correction


# ------------------------------------------------------------------ timeouts
def test_turn_timeout_reprompts_then_ends_after_max_reprompts() -> None:
    m = machine(turn_timeout_s=5.0, max_reprompts=2)
    m.handle(cv.Started(), 0.0)
    turn = ask(m, 2.0)
    reply(m, turn, 3.0)
    m.handle(cv.OutputFinished(turn, "Paris."), 4.0)
    for n in (1, 2):
        effects = m.handle(cv.TimerFired(cv.TURN_TIMEOUT), 9.0 * n)
        assert emitted(effects) == ["turn_timeout"]
        gen = of(effects, cv.GenerateReply)[0]
        assert gen.kind is OutputKind.REPROMPT
        assert gen.messages[-1]["role"] == "system" and "5 seconds" in gen.messages[-1]["content"]
        effects = m.handle(cv.ReplyGenerated(gen.turn, "Are you still there?"), 9.0 * n + 0.5)
        m.handle(cv.OutputStarted(gen.turn), 9.0 * n + 0.6)
        effects = m.handle(cv.OutputFinished(gen.turn, "Are you still there?"), 9.0 * n + 1.0)
        assert of(effects, cv.ArmTimer)[0].name == cv.TURN_TIMEOUT
    effects = m.handle(cv.TimerFired(cv.TURN_TIMEOUT), 30.0)
    assert of(effects, cv.Close) == [cv.Close("silence")]


def test_user_speech_resets_turn_timeout_and_reprompt_count() -> None:
    m = machine(turn_timeout_s=5.0, max_reprompts=1)
    m.handle(cv.Started(), 0.0)
    turn = ask(m, 2.0)
    reply(m, turn, 3.0)
    m.handle(cv.OutputFinished(turn, "Paris."), 4.0)

    def silence_until_reprompt(now: float) -> None:
        effects = m.handle(cv.TimerFired(cv.TURN_TIMEOUT), now)
        gen = of(effects, cv.GenerateReply)[0]  # re-prompted, not closed
        assert gen.kind is OutputKind.REPROMPT and not of(effects, cv.Close)
        m.handle(cv.ReplyGenerated(gen.turn, "Are you still there?"), now + 0.5)
        m.handle(cv.OutputStarted(gen.turn), now + 0.6)
        m.handle(cv.OutputFinished(gen.turn, "Are you still there?"), now + 1.0)

    silence_until_reprompt(9.0)  # the one re-prompt allowed
    assert cv.CancelTimer(cv.TURN_TIMEOUT) in m.handle(cv.UserSpeechStarted(), 14.5)
    turn = ask(m, 16.0, "And of Spain?")  # the user answered: the count starts again
    reply(m, turn, 17.0, "Madrid.")
    m.handle(cv.OutputFinished(turn, "Madrid."), 18.0)
    silence_until_reprompt(23.0)  # one re-prompt again, not the end
    assert of(m.handle(cv.TimerFired(cv.TURN_TIMEOUT), 29.0), cv.Close) == [cv.Close("silence")]


def test_silence_end_call_timeout_ends_the_session() -> None:
    m = machine(silence_end_call_timeout_s=15.0)
    effects = m.handle(cv.Started(), 0.0)
    assert cv.ArmTimer(cv.SILENCE_END_CALL, 15.0) in effects
    assert cv.ArmTimer(cv.SILENCE_END_CALL, 20.0) in m.handle(cv.UserSpeechStarted(), 5.0)
    effects = m.handle(cv.TimerFired(cv.SILENCE_END_CALL), 20.0)
    assert cv.Close("silence_end_call_timeout") in effects


def test_max_duration_cuts_the_agent_off() -> None:
    m = machine(max_duration_s=60.0)
    assert cv.ArmTimer(cv.MAX_DURATION, 60.0) in m.handle(cv.Started(), 0.0)
    turn = ask(m, 55.0)
    reply(m, turn, 56.0)
    effects = m.handle(cv.TimerFired(cv.MAX_DURATION), 60.0)
    assert effects[0] == cv.CancelOutput(turn)
    assert cv.Close("max_duration") in effects
    assert m.handle(cv.UserSpeechStarted(), 61.0) == []  # ended: nothing more happens


def test_end_requested_finishes_speaking_first() -> None:
    m = machine()
    m.handle(cv.Started(), 0.0)
    turn = ask(m, 2.0)
    reply(m, turn, 3.0)
    assert m.handle(cv.EndRequested("input_ended"), 3.5) == []
    effects = m.handle(cv.OutputFinished(turn, "Paris."), 4.0)
    assert cv.Close("input_ended") in effects


# ------------------------------------------------------------------ tools
def call(name: str, **args: Any) -> cv.ToolCall:
    return cv.ToolCall(f"call_{name}", name, args)


def test_end_call_says_goodbye_then_ends() -> None:
    m = machine()
    m.handle(cv.Started(), 0.0)
    turn = ask(m, 2.0, "Thanks, bye!")
    effects = m.handle(
        cv.ReplyGenerated(turn, "", (call("end_call", reason="user said bye", message="Goodbye!"),)), 3.0
    )
    assert emitted(effects)[0] == "agent_tool_response"
    assert of(effects, cv.Emit)[0].fields == {
        "tool_name": "end_call",
        "tool_call_id": "call_end_call",
        "tool_type": "system",
        "is_error": False,
    }
    assert of(effects, cv.Say) == [cv.Say(turn, "Goodbye!", OutputKind.FAREWELL)]
    assert of(effects, cv.SealOutput) and m.phase is cv.Phase.ENDING
    m.handle(cv.OutputStarted(turn), 3.2)
    effects = m.handle(cv.OutputFinished(turn, "Goodbye!"), 4.0)
    assert of(effects, cv.Close) == [cv.Close("end_call")]


def test_end_call_not_offered_is_an_unknown_tool() -> None:
    m = machine(system_tool_names=frozenset())
    m.handle(cv.Started(), 0.0)
    turn = ask(m, 2.0)
    effects = m.handle(cv.ReplyGenerated(turn, "", (call("end_call", reason="x"),)), 3.0)
    assert of(effects, cv.Emit)[0].fields["is_error"] is True
    assert of(effects, cv.GenerateReply)  # the error goes back to the LLM


def test_skip_turn_stays_silent_without_turn_timeout() -> None:
    m = machine()
    m.handle(cv.Started(), 0.0)
    turn = ask(m, 2.0, "Give me a second to think.")
    effects = m.handle(cv.ReplyGenerated(turn, "", (call("skip_turn", reason="user needs time"),)), 3.0)
    assert not of(effects, cv.Say) and of(effects, cv.SealOutput)
    effects = m.handle(cv.OutputFinished(turn, ""), 3.1)
    assert m.phase is cv.Phase.LISTENING and not of(effects, cv.ArmTimer)


def test_language_detection_switches_and_continues() -> None:
    m = machine()
    m.handle(cv.Started(), 0.0)
    turn = ask(m, 2.0, "Can we speak Spanish?")
    effects = m.handle(
        cv.ReplyGenerated(turn, "", (call("language_detection", reason="asked", language="es"),)), 3.0
    )
    assert cv.SwitchLanguage("es") in effects
    assert of(effects, cv.GenerateReply)  # the reply continues in the new language
    assert m.language == "es"
    reply(m, turn, 3.5, "¡Claro!")
    m.handle(cv.OutputFinished(turn, "¡Claro!"), 4.0)
    effects = m.handle(cv.UserUtterance(b"", 1.0), 6.0)
    assert of(effects, cv.Transcribe)[0].language == "es"


@pytest.mark.parametrize(
    ("switch_to", "prompt"),
    [
        ("de", "Du bist ein Küchenhelfer."),
        ("de-DE", "Du bist ein Küchenhelfer."),  # a regional tag uses the language's preset
        ("fr", "You help in the kitchen."),  # no preset prompt: the agent's prompt stays
    ],
)
def test_a_language_switch_uses_the_presets_prompt(switch_to: str, prompt: str) -> None:
    m = machine(
        system_prompt="You help in the kitchen.", language_prompts={"de": "Du bist ein Küchenhelfer."}
    )
    m.handle(cv.Started(), 0.0)
    turn = ask(m, 2.0, "Sprechen Sie Deutsch?")
    effects = m.handle(
        cv.ReplyGenerated(turn, "", (call("language_detection", reason="asked", language=switch_to),)), 3.0
    )
    (request,) = of(effects, cv.GenerateReply)
    assert request.messages[0] == {"role": "system", "content": prompt}


def test_device_tool_round_trip() -> None:
    m = machine(device_tool_names=frozenset({"get_weather"}))
    m.handle(cv.Started(), 0.0)
    turn = ask(m, 2.0, "Weather in Paris?")
    c = call("get_weather", city="Paris")
    effects = m.handle(cv.ReplyGenerated(turn, "", (c,)), 3.0)
    assert of(effects, cv.RunTool) == [cv.RunTool(turn, c)]
    effects = m.handle(cv.ToolFinished(turn, c, '{"temp": 21}'), 3.5)
    assert of(effects, cv.Emit)[0].fields["tool_type"] == "client"
    gen = of(effects, cv.GenerateReply)[0]
    assert gen.messages[-1] == {"role": "tool", "tool_call_id": "call_get_weather", "content": '{"temp": 21}'}


@pytest.mark.parametrize(
    ("uninterruptible", "barge_in_cancels"),
    [(frozenset(), True), (frozenset({"get_weather"}), False)],
)
def test_disable_interruptions_of_a_tool_protects_the_rest_of_its_turn(
    uninterruptible: frozenset[str], barge_in_cancels: bool
) -> None:
    m = machine(device_tool_names=frozenset({"get_weather"}), uninterruptible_tools=uninterruptible)
    m.handle(cv.Started(), 0.0)
    turn = ask(m, 2.0, "Weather in Paris?")
    c = call("get_weather", city="Paris")
    m.handle(cv.ReplyGenerated(turn, "", (c,)), 3.0)
    assert bool(of(m.handle(cv.UserSpeechStarted(), 3.2), cv.CancelOutput)) is barge_in_cancels
    if barge_in_cancels:
        return
    m.handle(cv.ToolFinished(turn, c, '{"temp": 21}'), 3.5)
    reply(m, turn, 4.0, "It is 21 degrees.")
    m.handle(cv.OutputStarted(turn), 4.1)
    assert not of(m.handle(cv.UserSpeechStarted(), 4.5), cv.CancelOutput)  # the reply plays on


def test_user_activity_restarts_the_turn_timeout_only_while_listening() -> None:
    m = machine(turn_timeout_s=7.0)
    m.handle(cv.Started(), 0.0)  # no first message: listening, the turn timeout armed
    assert m.handle(cv.UserActivity(), 5.0) == [cv.ArmTimer(cv.TURN_TIMEOUT, 12.0)]
    ask(m, 6.0)
    assert m.handle(cv.UserActivity(), 6.5) == []  # the agent is working on a reply


@pytest.mark.parametrize(("like", "score"), [(True, "like"), (False, "dislike")])
def test_feedback_is_recorded_as_an_event(like: bool, score: str) -> None:
    m = machine()
    m.handle(cv.Started(), 0.0)
    assert m.handle(cv.Feedback(like), 1.0) == [cv.Emit("feedback", {"score": score})]


def test_failure_ends_with_error() -> None:
    m = machine()
    m.handle(cv.Started(), 0.0)
    effects = m.handle(cv.WorkFailed("llm", "llm_unreachable", "connection refused"), 1.0)
    assert emitted(effects) == ["error"] and cv.Close("error") in effects


def test_device_tool_rounds_are_capped() -> None:
    """After `max_tool_rounds` device tool calls in one turn, the next result ends the turn
    (what was said is sealed) instead of asking the LLM again."""
    m = machine(device_tool_names=frozenset({"get_weather"}), max_tool_rounds=2)
    m.handle(cv.Started(), 0.0)
    turn = ask(m, 2.0, "Weather in Paris?")
    now = 3.0
    generated = []
    for i in range(3):
        c = cv.ToolCall(f"call_{i}", "get_weather", {"city": "Paris"})
        assert of(m.handle(cv.ReplyGenerated(turn, "", (c,)), now), cv.RunTool) == [cv.RunTool(turn, c)]
        effects = m.handle(cv.ToolFinished(turn, c, '{"temp": 21}'), now + 0.5)
        generated.append(bool(of(effects, cv.GenerateReply)))
        now += 1.0
    assert generated == [True, True, False]
    assert of(effects, cv.SealOutput) == [cv.SealOutput(turn)]
    assert m.phase is cv.Phase.SPEAKING


def test_system_tool_rounds_are_capped() -> None:
    """A system tool that continues the reply (language_detection) asks the LLM again at most
    `max_tool_rounds` times in one turn."""
    m = machine(max_tool_rounds=2)
    m.handle(cv.Started(), 0.0)
    turn = ask(m, 2.0, "¿Hablas español?")
    generated = []
    for i in range(3):
        c = cv.ToolCall(f"call_{i}", "language_detection", {"reason": "asked", "language": "es"})
        effects = m.handle(cv.ReplyGenerated(turn, "", (c,)), 3.0 + i)
        generated.append(bool(of(effects, cv.GenerateReply)))
    assert generated == [True, True, False]
    assert of(effects, cv.SealOutput) == [cv.SealOutput(turn)]
