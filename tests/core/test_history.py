"""ConversationHistory: chat messages within a token budget, transcript turns, filler context."""

from __future__ import annotations

from typing import Any

import pytest

from appliance.core.history import MESSAGE_OVERHEAD_TOKENS, ConversationHistory, approx_tokens


def words(text: str) -> int:
    """A counter that makes budgets easy to reason about: one token per word."""
    return len(text.split())


def roles(messages: list[dict[str, Any]]) -> list[str]:
    return [m["role"] for m in messages]


def test_default_counter_is_four_characters_per_token() -> None:
    assert approx_tokens("") == 1
    assert approx_tokens("abcd" * 10) == 10


def test_messages_in_openai_format() -> None:
    h = ConversationHistory("You are helpful.", budget_tokens=10_000)
    h.add_agent("Hi! How can I help?")
    h.add_user("What's the weather in Paris?")
    h.add_agent("Let me check.")
    h.add_tool_call("call_1", "get_weather", '{"city": "Paris"}')
    h.add_tool_result("call_1", "get_weather", '{"temp_c": 21}')
    h.add_context("The user is in the kitchen.")
    h.add_agent("It is 21 degrees.")
    assert h.messages() == [
        {"role": "system", "content": "You are helpful."},
        {"role": "assistant", "content": "Hi! How can I help?"},
        {"role": "user", "content": "What's the weather in Paris?"},
        {
            "role": "assistant",
            "content": "Let me check.",
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": '{"temp_c": 21}'},
        {"role": "system", "content": "The user is in the kitchen."},
        {"role": "assistant", "content": "It is 21 degrees."},
    ]


def test_parallel_calls_share_one_assistant_message_and_sequential_ones_do_not() -> None:
    h = ConversationHistory("S", budget_tokens=10_000)
    h.add_user("Lights off and music on.")
    h.add_tool_call("a", "lights", "{}")
    h.add_tool_call("b", "music", "{}")
    h.add_tool_result("b", "music", "ok b")
    h.add_tool_result("a", "lights", "ok a")
    h.add_tool_call("c", "status", "{}")
    h.add_tool_result("c", "status", "ok c")
    msgs = h.messages()
    assert roles(msgs) == ["system", "user", "assistant", "tool", "tool", "assistant", "tool"]
    assert msgs[2]["content"] is None
    assert [c["id"] for c in msgs[2]["tool_calls"]] == ["a", "b"]
    assert [m["tool_call_id"] for m in msgs[3:5]] == ["a", "b"]  # results follow their calls
    assert [c["id"] for c in msgs[5]["tool_calls"]] == ["c"]


def test_a_call_without_result_is_left_out_and_a_late_result_joins_its_call() -> None:
    h = ConversationHistory("S", budget_tokens=10_000)
    h.add_user("Start the timer.")
    h.add_tool_call("t1", "timer", "{}")
    assert roles(h.messages()) == ["system", "user"]
    h.add_user("Are you there?")
    h.add_tool_result("t1", "timer", "started")
    assert roles(h.messages()) == ["system", "user", "assistant", "tool", "user"]


def test_tool_bookkeeping_errors() -> None:
    h = ConversationHistory("S", budget_tokens=100)
    with pytest.raises(ValueError, match="unknown call id"):
        h.add_tool_result("nope", "x", "")
    h.add_tool_call("a", "x", "{}")
    with pytest.raises(ValueError, match="duplicate"):
        h.add_tool_call("a", "x", "{}")
    h.add_tool_result("a", "x", "")
    with pytest.raises(ValueError, match="already has a result"):
        h.add_tool_result("a", "x", "")
    with pytest.raises(ValueError):
        ConversationHistory("S", budget_tokens=0)


def cost(text: str) -> int:
    return MESSAGE_OVERHEAD_TOKENS + words(text)


def test_trimming_drops_the_oldest_turns_first() -> None:
    system = "one two"
    turns = [("u1 a b", "a1 c d"), ("u2 e f", "a2 g h"), ("u3 i j", "a3 k l")]
    turn_cost = 2 * cost("x y z")
    budget = cost(system) + 2 * turn_cost  # room for exactly two turns
    h = ConversationHistory(system, budget_tokens=budget, count_tokens=words)
    for user, agent in turns:
        h.add_user(user)
        h.add_agent(agent)
    assert [m["content"] for m in h.messages()] == [system, "u2 e f", "a2 g h", "u3 i j", "a3 k l"]
    h2 = ConversationHistory(system, budget_tokens=budget + turn_cost, count_tokens=words)
    for user, agent in turns:
        h2.add_user(user)
        h2.add_agent(agent)
    assert len(h2.messages()) == 7


def test_trimming_keeps_the_system_prompt_and_the_latest_user_message_whatever_the_budget() -> None:
    h = ConversationHistory("a long system prompt " * 50, budget_tokens=5)
    h.add_user("first question")
    h.add_agent("first answer")
    h.add_user("second question " * 100)
    msgs = h.messages()
    assert roles(msgs) == ["system", "user"]
    assert msgs[1]["content"].startswith("second question")


def test_trimming_never_separates_a_tool_call_from_its_result() -> None:
    h = ConversationHistory("S", budget_tokens=10_000, count_tokens=words)
    h.add_user("old")
    h.add_tool_call("a", "lookup", '{"q": "x"}')
    h.add_tool_result("a", "lookup", "result " * 10)
    h.add_agent("old answer")
    h.add_user("new")
    full = h.messages()
    for budget in range(1, 80):
        h.budget_tokens = budget
        msgs = h.messages()
        assert msgs[0] == full[0] and msgs[-1] == full[-1]
        call_ids = [c["id"] for m in msgs for c in m.get("tool_calls", [])]
        result_ids = [m["tool_call_id"] for m in msgs if m["role"] == "tool"]
        assert call_ids == result_ids


def test_transcript_turns() -> None:
    h = ConversationHistory("S", budget_tokens=1000)
    h.add_agent("Hello!", t=0.0)
    h.add_user("Turn off the lights.", t=2.7)
    h.add_agent("Turning off the lights in the kitchen and the hallway now.", t=4.2)
    h.replace_last_agent("Turning off the lights")
    h.add_context("ignored in the transcript", t=5.0)
    h.add_tool_call("c1", "end_call", '{"reason": "done"}', t=6.0, tool_type="system")
    updates = [{"variable_name": "x", "old_value": None, "new_value": "1"}]
    payload = {"result_type": "end_call_success", "status": "success", "reason": "done", "message": None}
    h.add_tool_result("c1", "end_call", "ok", t=6.5, dynamic_variable_updates=updates, result=payload)
    turns = h.transcript()
    assert [(t["role"], t["message"], t["time_in_call_secs"]) for t in turns] == [
        ("agent", "Hello!", 0),
        ("user", "Turn off the lights.", 2),
        ("agent", "Turning off the lights", 4),
        ("agent", None, 6),
        ("agent", None, 6),
    ]
    assert turns[2]["interrupted"] is True
    assert turns[2]["original_message"] == "Turning off the lights in the kitchen and the hallway now."
    assert (turns[1]["tool_calls"], turns[1]["tool_results"], turns[1]["interrupted"]) == ([], [], False)
    assert turns[3]["tool_calls"] == [
        {
            "type": "system",
            "request_id": "c1",
            "tool_name": "end_call",
            "params_as_json": '{"reason": "done"}',
            "tool_has_been_called": True,
            "tool_details": None,
        }
    ]
    assert turns[4]["tool_results"] == [
        {
            "type": "system",
            "request_id": "c1",
            "tool_name": "end_call",
            "result_value": "ok",
            "is_error": False,
            "tool_has_been_called": True,
            "tool_latency_secs": 0.5,
            "dynamic_variable_updates": updates,
            "result": payload,
        }
    ]


def test_replace_last_agent_keeps_the_first_original_and_updates_messages() -> None:
    h = ConversationHistory("S", budget_tokens=1000)
    with pytest.raises(ValueError):
        h.replace_last_agent("x")
    h.add_agent("one two three four", interrupted=False)
    h.add_user("stop")
    h.replace_last_agent("one two three")
    h.replace_last_agent("one two")
    assert h.transcript()[0]["original_message"] == "one two three four"
    assert h.messages()[1] == {"role": "assistant", "content": "one two"}
    h.replace_last_agent("")  # interrupted before a word was heard: not sent to the LLM
    assert roles(h.messages()) == ["system", "user"]


def test_add_agent_records_an_interruption_directly() -> None:
    h = ConversationHistory("S", budget_tokens=1000)
    h.add_agent("Hi", interrupted=True, original="Hi there", t=1.9)
    assert h.transcript()[0] == {
        "role": "agent",
        "message": "Hi",
        "time_in_call_secs": 1,
        "interrupted": True,
        "original_message": "Hi there",
        "tool_calls": [],
        "tool_results": [],
    }


def test_recent_context_for_the_filler() -> None:
    h = ConversationHistory("S", budget_tokens=1000)
    for i in range(6):
        h.add_user(f"question {i}")
        h.add_tool_call(f"c{i}", "x", "{}")
        h.add_tool_result(f"c{i}", "x", "ignored")
        h.add_agent(f"answer {i}")
    h.add_context("not part of it")
    assert h.recent_context() == [
        {"role": "user", "content": "question 4"},
        {"role": "assistant", "content": "answer 4"},
        {"role": "user", "content": "question 5"},
        {"role": "assistant", "content": "answer 5"},
    ]


def test_recent_context_cuts_the_oldest_text_first() -> None:
    h = ConversationHistory("S", budget_tokens=1000)
    h.add_user("a" * 600)
    h.add_agent("b" * 300)
    h.add_user("c" * 300)
    ctx = h.recent_context()
    assert [m["content"] for m in ctx] == ["a" * 400, "b" * 300, "c" * 300]
    assert sum(len(m["content"]) for m in ctx) == 1000
    assert h.recent_context(max_chars=300) == [{"role": "user", "content": "c" * 300}]
    assert h.recent_context(max_messages=0) == []
