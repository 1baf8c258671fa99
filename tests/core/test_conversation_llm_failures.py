"""LLM failures are spoken, truncated replies are reported: the machine's rules, explicit times."""

from __future__ import annotations

from typing import Any

import pytest

from appliance.core import conversation as cv
from appliance.core.conversation import LLM_FAILURE_MESSAGES, ConversationMachine, ConversationSettings
from appliance.core.reply_guard import Truncation

SORRY = LLM_FAILURE_MESSAGES["en"]


def machine(**kw: Any) -> ConversationMachine:
    return ConversationMachine(
        ConversationSettings(system_prompt="You are helpful.", max_duration_s=None, **kw)
    )


def of(effects: list[cv.Effect], kind: type) -> list[Any]:
    return [e for e in effects if isinstance(e, kind)]


def errors(effects: list[cv.Effect]) -> list[dict[str, Any]]:
    return [e.fields for e in effects if isinstance(e, cv.Emit) and e.type == "error"]


def ask(m: ConversationMachine, now: float, text: str = "Tell me a story.", language: str = "en") -> int:
    effects = m.handle(cv.UserUtterance(b"\0\0", 1.0), now)
    turn: int = of(effects, cv.Transcribe)[0].turn
    effects = m.handle(cv.Transcribed(turn, text, language), now + 0.3)
    assert of(effects, cv.GenerateReply)
    return turn


def fail(
    turn: int, *, code: str = "llm_http_error", retryable: bool = True, spoken: str = ""
) -> cv.WorkFailed:
    return cv.WorkFailed("llm", code, f"{code} happened", turn, retryable, spoken)


def started(**kw: Any) -> ConversationMachine:
    m = machine(**kw)
    m.handle(cv.Started(), 0.0)
    return m


# ------------------------------------------------------------------ retry or apology
# (name, failures as (seconds after the request, retryable, spoken text), expected recoveries)
CASES = [
    ("one retry, then the apology", [(0.2, True, ""), (0.3, True, "")], ["retry", "apology"]),
    ("not retryable (HTTP 401)", [(0.2, False, "")], ["apology"]),
    ("a hang past the retry window", [(20.0, True, "")], ["apology"]),
    ("exactly at the retry window", [(10.0, True, ""), (20.0, True, "")], ["retry", "apology"]),
    ("half a reply already queued", [(3.0, True, "Once upon a time,")], ["apology"]),
    ("retry, then half a reply", [(0.2, True, ""), (2.0, True, "Once upon")], ["retry", "apology"]),
]


@pytest.mark.parametrize(("failures", "recoveries"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_llm_failure_table(failures: list[tuple[float, bool, str]], recoveries: list[str]) -> None:
    m = started()
    turn = ask(m, 5.0)
    request_at = 5.3
    first_request = m.history.messages()
    effects: list[cv.Effect] = []
    for (after, retryable, spoken), recovery in zip(failures, recoveries, strict=True):
        now = request_at + after
        effects = m.handle(fail(turn, retryable=retryable, spoken=spoken), now)
        assert [e["recovery"] for e in errors(effects)] == [recovery]
        assert errors(effects)[0]["stage"] == "llm" and errors(effects)[0]["code"] == "llm_http_error"
        if recovery == "retry":
            [again] = of(effects, cv.GenerateReply)
            assert list(again.messages) == first_request and again.turn == turn
            assert m.phase is cv.Phase.THINKING and not of(effects, cv.Say)
            request_at = now
    spoken = failures[-1][2]
    assert of(effects, cv.Say) == [cv.Say(turn, SORRY, cv.OutputKind.APOLOGY)]
    assert of(effects, cv.SealOutput) == [cv.SealOutput(turn)]
    assert not of(effects, cv.Close) and m.phase is cv.Phase.SPEAKING
    heard = f"{spoken} {SORRY}".strip()
    effects = m.handle(cv.OutputStarted(turn), request_at + 5.0)
    assert effects == [cv.Emit("agent_response", {"agent_response": heard, "kind": "reply"})]
    effects = m.handle(cv.OutputFinished(turn, heard), request_at + 8.0)
    assert m.phase is cv.Phase.LISTENING
    assert cv.ArmTimer(cv.TURN_TIMEOUT, request_at + 15.0) in effects
    agent = [x["content"] for x in m.history.messages() if x["role"] == "assistant"]
    assert agent == ([spoken, SORRY] if spoken else [SORRY])


def test_a_retry_that_succeeds_is_an_ordinary_reply() -> None:
    m = started()
    turn = ask(m, 5.0)
    effects = m.handle(fail(turn), 5.5)
    assert of(effects, cv.GenerateReply)
    m.handle(cv.ReplyTextStarted(turn), 6.0)
    effects = m.handle(cv.ReplyGenerated(turn, "Once upon a time."), 6.2)
    assert of(effects, cv.SealOutput) and not errors(effects)
    effects = m.handle(cv.OutputStarted(turn), 6.3)
    assert effects == [cv.Emit("agent_response", {"agent_response": "Once upon a time.", "kind": "reply"})]


def test_only_one_retry_per_turn_but_a_new_turn_gets_its_own() -> None:
    m = started()
    turn = ask(m, 5.0)
    m.handle(fail(turn), 5.5)
    m.handle(fail(turn), 6.0)  # apology
    m.handle(cv.OutputStarted(turn), 6.1)
    m.handle(cv.OutputFinished(turn, SORRY), 8.0)
    turn = ask(m, 10.0, "Are you there?")
    effects = m.handle(fail(turn), 10.5)
    assert [e["recovery"] for e in errors(effects)] == ["retry"]


def test_a_failed_reprompt_listens_again_without_an_apology() -> None:
    m = started(turn_timeout_s=5.0)
    effects = m.handle(cv.TimerFired(cv.TURN_TIMEOUT), 5.0)
    [request] = of(effects, cv.GenerateReply)
    effects = m.handle(fail(request.turn), 5.2)
    assert [e["recovery"] for e in errors(effects)] == ["retry"]
    effects = m.handle(fail(request.turn), 5.4)
    assert [e["recovery"] for e in errors(effects)] == ["listen"]
    assert not of(effects, cv.Say) and m.phase is cv.Phase.LISTENING
    assert cv.ArmTimer(cv.TURN_TIMEOUT, 10.4) in effects


def test_a_failure_of_a_dropped_turn_is_ignored() -> None:
    m = started()
    turn = ask(m, 5.0)
    m.handle(cv.UserSpeechStarted(), 5.6)  # the user was not done: the pending reply is dropped
    turn2 = ask(m, 7.0, "Tell me a story about a fox.")
    assert m.handle(fail(turn), 7.1) == []
    assert m.phase is cv.Phase.THINKING and turn2 != turn


def test_a_failure_while_a_graceful_end_waits_apologises_then_closes() -> None:
    m = started()
    turn = ask(m, 5.0)
    assert m.handle(cv.EndRequested("input_ended"), 5.5) == []
    effects = m.handle(fail(turn), 5.6)  # no retry: the conversation is ending
    assert [e["recovery"] for e in errors(effects)] == ["apology"]
    m.handle(cv.OutputStarted(turn), 5.7)
    assert cv.Close("input_ended") in m.handle(cv.OutputFinished(turn, SORRY), 8.0)


def test_a_failure_without_a_turn_still_ends_the_session() -> None:
    m = started()
    effects = m.handle(cv.WorkFailed("stt", "stt_failed", "boom"), 1.0)
    assert errors(effects) == [{"code": "stt_failed", "message": "boom", "stage": "stt"}]
    assert cv.Close("error") in effects


# ------------------------------------------------------------------ the apology's language
@pytest.mark.parametrize(
    ("language", "heard", "messages", "expected"),
    [
        ("de", "de", None, LLM_FAILURE_MESSAGES["de"]),
        ("fr", "fr", None, LLM_FAILURE_MESSAGES["fr"]),
        ("pt-br", "pt", None, LLM_FAILURE_MESSAGES["pt"]),
        ("ja", "ja", None, SORRY),  # no message for it: English
        ("auto", "nl", None, LLM_FAILURE_MESSAGES["nl"]),  # what was heard last
        ("it", "it", {"it": "Scusa!", "en": "Oops!"}, "Scusa!"),
        ("es", "es", {"en": "Oops!"}, "Oops!"),  # configured: only the configured ones count
    ],
)
def test_the_apology_is_in_the_conversations_language(
    language: str, heard: str, messages: dict[str, str] | None, expected: str
) -> None:
    kw: dict[str, Any] = {"language": language}
    if messages is not None:
        kw["llm_failure_messages"] = messages
    m = started(**kw)
    turn = ask(m, 5.0, "Hallo?", heard)
    effects = m.handle(fail(turn, retryable=False), 5.5)
    assert of(effects, cv.Say) == [cv.Say(turn, expected, cv.OutputKind.APOLOGY)]


def test_a_language_switch_switches_the_apology() -> None:
    m = started(system_tool_names=frozenset({"language_detection"}))
    turn = ask(m, 2.0, "¿Hablas español?")
    call = cv.ToolCall("c1", "language_detection", {"reason": "Spanish", "language": "es"})
    m.handle(cv.ReplyGenerated(turn, "", (call,)), 3.0)
    effects = m.handle(fail(turn, retryable=False), 3.5)
    assert of(effects, cv.Say) == [cv.Say(turn, LLM_FAILURE_MESSAGES["es"], cv.OutputKind.APOLOGY)]


# ------------------------------------------------------------------ truncated replies
def test_a_truncated_reply_is_reported_and_the_history_keeps_what_is_spoken() -> None:
    m = started()
    turn = ask(m, 5.0)
    spoken = "He had been a wanderer. He had been a wanderer."
    cut = Truncation("repetition", spoken + " ", 3.0, 120, "he had been a wanderer")
    m.handle(cv.ReplyTextStarted(turn), 5.5)
    effects = m.handle(cv.ReplyGenerated(turn, spoken, truncated=cut), 9.0)
    assert [e for e in effects if isinstance(e, cv.Emit)] == [cv.Emit("reply_truncated", cut.event_fields())]
    assert of(effects, cv.SealOutput) == [cv.SealOutput(turn)]
    effects = m.handle(cv.OutputStarted(turn), 9.1)
    assert effects == [cv.Emit("agent_response", {"agent_response": spoken, "kind": "reply"})]
    assert m.history.messages()[-1] == {"role": "assistant", "content": spoken}
    m.handle(cv.OutputFinished(turn, spoken), 12.0)
    assert m.phase is cv.Phase.LISTENING
