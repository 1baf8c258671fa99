"""The conversation machine and multi-voice markup: `agent_response` and the history never hold
markup; `multivoice_message.parts` keep who said what."""

from __future__ import annotations

from typing import Any

from appliance.core import conversation as cv
from appliance.core.conversation import ConversationMachine, ConversationSettings

LABELS = frozenset({"Joe", "Narrator"})


def machine(**kw: Any) -> ConversationMachine:
    base: dict[str, Any] = {
        "system_prompt": "You are helpful.",
        "system_tool_names": frozenset({"end_call"}),
        "max_duration_s": None,
        "voice_labels": LABELS,
    }
    base.update(kw)
    return ConversationMachine(ConversationSettings(**base))


def responses(effects: list[cv.Effect]) -> list[dict[str, Any]]:
    return [e.fields for e in effects if isinstance(e, cv.Emit) and e.type == "agent_response"]


def ask(m: ConversationMachine, now: float) -> int:
    m.handle(cv.UserSpeechStarted(), now - 1.0)
    effects = m.handle(cv.UserUtterance(b"\0\0", 1.0), now)
    turn = next(e for e in effects if isinstance(e, cv.Transcribe)).turn
    m.handle(cv.Transcribed(turn, "Tell me a story.", "en"), now + 0.2)
    return turn


def test_reply_with_voices_has_no_markup_and_keeps_the_parts() -> None:
    m = machine()
    m.handle(cv.Started(), 0.0)
    turn = ask(m, 2.0)
    raw = "<Narrator>Once upon a time...</Narrator> <Joe>I need the crystal!</Joe> The end."
    effects = m.handle(cv.ReplyGenerated(turn, raw), 3.0)
    effects += m.handle(cv.OutputStarted(turn), 3.1)
    assert responses(effects) == [
        {
            "agent_response": "Once upon a time... I need the crystal! The end.",
            "kind": "reply",
            "multivoice_message": {
                "parts": [
                    {"text": "Once upon a time...", "voice_label": "Narrator"},
                    {"text": "I need the crystal!", "voice_label": "Joe"},
                    {"text": "The end.", "voice_label": None},
                ]
            },
        }
    ]
    assistant = [msg["content"] for msg in m.history.messages() if msg["role"] == "assistant"]
    assert assistant == ["Once upon a time... I need the crystal! The end."]


def test_reply_without_voices_has_no_multivoice_message() -> None:
    m = machine()
    m.handle(cv.Started(), 0.0)
    turn = ask(m, 2.0)
    effects = m.handle(cv.ReplyGenerated(turn, "Just me, <Bob>nobody else</Bob>."), 3.0)
    effects += m.handle(cv.OutputStarted(turn), 3.1)
    assert responses(effects) == [{"agent_response": "Just me, nobody else.", "kind": "reply"}]


def test_a_single_labelled_voice_is_reported() -> None:
    m = machine()
    m.handle(cv.Started(), 0.0)
    turn = ask(m, 2.0)
    effects = m.handle(cv.ReplyGenerated(turn, "<Joe>Hello!</Joe>"), 3.0)
    effects += m.handle(cv.OutputStarted(turn), 3.1)
    assert responses(effects)[0]["multivoice_message"] == {
        "parts": [{"text": "Hello!", "voice_label": "Joe"}]
    }


def test_first_message_is_said_with_markup_and_reported_without() -> None:
    m = machine(first_message="<Joe>Hi!</Joe> How can I help?")
    effects = m.handle(cv.Started(), 0.0)
    say = next(e for e in effects if isinstance(e, cv.Say))
    assert say.text == "<Joe>Hi!</Joe> How can I help?"  # the runtime renders the voices
    effects = m.handle(cv.OutputStarted(say.turn), 0.1)
    assert responses(effects)[0]["agent_response"] == "Hi! How can I help?"
    assert responses(effects)[0]["multivoice_message"]["parts"][0] == {"text": "Hi!", "voice_label": "Joe"}


def test_farewell_markup_is_removed_from_the_response_and_history() -> None:
    m = machine()
    m.handle(cv.Started(), 0.0)
    turn = ask(m, 2.0)
    call = cv.ToolCall("c1", "end_call", {"reason": "done", "message": "<Joe>Bye now!</Joe>"})
    effects = m.handle(cv.ReplyGenerated(turn, "<Joe>Okay.</Joe>", (call,)), 3.0)
    assert next(e for e in effects if isinstance(e, cv.Say)).text == "<Joe>Bye now!</Joe>"
    effects = m.handle(cv.OutputStarted(turn), 3.1)
    [response] = responses(effects)
    assert response["agent_response"] == "Okay. Bye now!"
    assert response["multivoice_message"] == {"parts": [{"text": "Okay. Bye now!", "voice_label": "Joe"}]}
    assistant = [msg["content"] for msg in m.history.messages() if msg["role"] == "assistant"]
    assert assistant == ["Okay.", "Bye now!"]


def test_interruption_correction_holds_only_spoken_text() -> None:
    """The runtime reports what was heard per segment, markup-free; so does the correction."""
    m = machine()
    m.handle(cv.Started(), 0.0)
    turn = ask(m, 2.0)
    m.handle(cv.ReplyGenerated(turn, "<Narrator>Long ago.</Narrator> <Joe>Hello there friend.</Joe>"), 3.0)
    m.handle(cv.OutputStarted(turn), 3.1)
    effects = m.handle(
        cv.OutputFinished(
            turn, "Long ago. Hello", interrupted=True, queued_text="Long ago. Hello there friend."
        ),
        5.0,
    )
    correction = next(
        e.fields for e in effects if isinstance(e, cv.Emit) and e.type == "agent_response_correction"
    )
    assert correction == {
        "original_agent_response": "Long ago. Hello there friend.",
        "corrected_agent_response": "Long ago. Hello",
    }
    assistant = [msg["content"] for msg in m.history.messages() if msg["role"] == "assistant"]
    assert assistant == ["Long ago. Hello"]
