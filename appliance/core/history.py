"""Conversation history: OpenAI chat messages for the local LLM, and the platform transcript.

`messages()` keeps the system prompt first and trims to a token budget by dropping whole
turns, oldest first. A turn starts at a user message, so the latest user message is always kept
and a tool call is never separated from its result (each result is placed right after its call,
as the chat-completions API requires; a call without a result yet is left out).

Token counts default to the seeds' rule of thumb "a token is about 4 characters" (seed §5.8):
`max(1, len(text) // 4)`, plus `MESSAGE_OVERHEAD_TOKENS` per message for the chat template's
role markers. Pass a real tokenizer's counter for precision.

`transcript()` gives the platform's transcript turns (seed §5.11): `role` `user|agent`,
`message`, `time_in_call_secs` (int), `interrupted`, `original_message`, `tool_calls`,
`tool_results`. A tool call and a tool result are agent turns of their own with `message` None.
Contextual updates go to the LLM only, not to the transcript.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any, assert_never

MESSAGE_OVERHEAD_TOKENS = 4
MIN_REPLY_TOKENS = 128
"""Room kept for the reply in the model's context (about 30 seconds of speech)."""
ESTIMATE_CHARS_PER_TOKEN = 3
"""Without the tokenizer: English runs at about 4-5 characters per token with these models;
3 over-counts on purpose (other languages and code take more tokens)."""


def approx_tokens(text: str) -> int:
    """The seeds' rule of thumb: one token per 4 characters (at least one)."""
    return max(1, len(text) // 4)


class _Kind(StrEnum):
    USER = "user"
    AGENT = "agent"
    TOOL_CALL = "tool_call"
    TOOL_RESULT = "tool_result"
    CONTEXT = "context"


@dataclass(frozen=True)
class _Entry:
    kind: _Kind
    text: str
    """User or agent text, the call's arguments JSON, the result content, or the context note."""
    t: float
    interrupted: bool = False
    original: str | None = None
    call_id: str = ""
    name: str = ""
    tool_type: str = ""
    is_error: bool = False
    updates: tuple[Mapping[str, Any], ...] = ()
    result: Mapping[str, Any] | None = None


class ConversationHistory:
    def __init__(
        self, system_prompt: str, budget_tokens: int, count_tokens: Callable[[str], int] | None = None
    ) -> None:
        if budget_tokens < 1:
            raise ValueError("budget_tokens must be at least 1")
        self.system_prompt = system_prompt
        self.budget_tokens = budget_tokens
        self._count = count_tokens or approx_tokens
        self._entries: list[_Entry] = []
        self._calls: dict[str, _Entry] = {}
        self._results: dict[str, _Entry] = {}

    def add_user(self, text: str, *, t: float = 0.0) -> None:
        self._entries.append(_Entry(_Kind.USER, text, t))

    def add_agent(
        self, text: str, *, interrupted: bool = False, original: str | None = None, t: float = 0.0
    ) -> None:
        self._entries.append(_Entry(_Kind.AGENT, text, t, interrupted=interrupted, original=original))

    def add_tool_call(
        self, call_id: str, name: str, arguments_json: str, *, t: float = 0.0, tool_type: str = "client"
    ) -> None:
        """`tool_type` is the platform's tool type for the transcript: system, client or webhook."""
        if call_id in self._calls:
            raise ValueError(f"duplicate tool call id {call_id!r}")
        entry = _Entry(_Kind.TOOL_CALL, arguments_json, t, call_id=call_id, name=name, tool_type=tool_type)
        self._calls[call_id] = entry
        self._entries.append(entry)

    def add_tool_result(
        self,
        call_id: str,
        name: str,
        content: str,
        *,
        t: float = 0.0,
        is_error: bool = False,
        dynamic_variable_updates: Sequence[Mapping[str, Any]] = (),
        result: Mapping[str, Any] | None = None,
    ) -> None:
        """`result` is the typed payload the platform records (e.g. `end_call_success`)."""
        call = self._calls.get(call_id)
        if call is None:
            raise ValueError(f"tool result for unknown call id {call_id!r}")
        if call_id in self._results:
            raise ValueError(f"tool call {call_id!r} already has a result")
        entry = _Entry(
            _Kind.TOOL_RESULT, content, t, call_id=call_id, name=name, tool_type=call.tool_type,
            is_error=is_error, updates=tuple(dynamic_variable_updates), result=result,
        )  # fmt: skip
        self._results[call_id] = entry
        self._entries.append(entry)

    def add_context(self, text: str, *, t: float = 0.0) -> None:
        """A contextual update: shown to the LLM as a system note, never spoken or transcribed."""
        self._entries.append(_Entry(_Kind.CONTEXT, text, t))

    def replace_last_agent(self, text: str) -> None:
        """Truncate the last agent message to what was heard before an interruption."""
        for i in range(len(self._entries) - 1, -1, -1):
            entry = self._entries[i]
            if entry.kind is _Kind.AGENT:
                original = entry.original if entry.original is not None else entry.text
                self._entries[i] = replace(entry, text=text, interrupted=True, original=original)
                return
        raise ValueError("there is no agent message to replace")

    def messages(self) -> list[dict[str, Any]]:
        """OpenAI chat messages within `budget_tokens` (the newest turn is kept regardless)."""
        system = {"role": "system", "content": self.system_prompt}
        turns = self._turns()
        costs = [sum(self._cost(m) for m in turn) for turn in turns]
        available = self.budget_tokens - self._cost(system)
        total = sum(costs)
        start = 0
        while start < len(turns) - 1 and total > available:
            total -= costs[start]
            start += 1
        return [system, *(m for turn in turns[start:] for m in turn)]

    def transcript(self) -> list[dict[str, Any]]:
        return [self._transcript_turn(e) for e in self._entries if e.kind is not _Kind.CONTEXT]

    def recent_context(self, max_messages: int = 4, max_chars: int = 1000) -> list[dict[str, str]]:
        """The last user/agent messages for an LLM-generated filler (seed §3.2: ≤4, ≤1000 chars).

        When the messages are longer than `max_chars` in total, the oldest are cut first (the
        oldest one kept may lose its beginning).
        """
        spoken = [e for e in self._entries if e.kind in (_Kind.USER, _Kind.AGENT) and e.text]
        out: list[dict[str, str]] = []
        left = max_chars
        for entry in reversed(spoken[-max_messages:] if max_messages > 0 else []):
            if left <= 0:
                break
            text = entry.text if len(entry.text) <= left else entry.text[-left:].lstrip()
            left -= len(entry.text)
            if text:
                out.append({"role": "user" if entry.kind is _Kind.USER else "assistant", "content": text})
        out.reverse()
        return out

    def _turns(self) -> list[list[dict[str, Any]]]:
        turns: list[list[dict[str, Any]]] = [[]]
        open_assistant: dict[str, Any] | None = None  # may still take tool calls
        for entry in self._entries:
            turn = turns[-1]
            match entry.kind:
                case _Kind.USER:
                    if turn:
                        turns.append([])
                    turns[-1].append({"role": "user", "content": entry.text})
                    open_assistant = None
                case _Kind.AGENT:
                    open_assistant = None
                    if entry.text:
                        open_assistant = {"role": "assistant", "content": entry.text}
                        turn.append(open_assistant)
                case _Kind.CONTEXT:
                    turn.append({"role": "system", "content": entry.text})
                    open_assistant = None
                case _Kind.TOOL_CALL:
                    result = self._results.get(entry.call_id)
                    if result is None:
                        continue
                    if open_assistant is None:
                        open_assistant = {"role": "assistant", "content": None}
                        turn.append(open_assistant)
                    function = {"name": entry.name, "arguments": entry.text}
                    call = {"id": entry.call_id, "type": "function", "function": function}
                    open_assistant.setdefault("tool_calls", []).append(call)
                    turn.append({"role": "tool", "tool_call_id": entry.call_id, "content": result.text})
                case _Kind.TOOL_RESULT:
                    open_assistant = None  # placed after its call; a later call is a new step
                case _:
                    assert_never(entry.kind)
        return turns

    def _cost(self, message: Mapping[str, Any]) -> int:
        cost = MESSAGE_OVERHEAD_TOKENS
        if message.get("content"):
            cost += self._count(message["content"])
        for call in message.get("tool_calls", ()):
            cost += self._count(call["function"]["name"]) + self._count(call["function"]["arguments"])
        return cost

    def _transcript_turn(self, entry: _Entry) -> dict[str, Any]:
        turn: dict[str, Any] = {
            "role": "user" if entry.kind is _Kind.USER else "agent",
            "message": entry.text if entry.kind in (_Kind.USER, _Kind.AGENT) else None,
            "time_in_call_secs": int(entry.t),
            "interrupted": entry.interrupted,
            "original_message": entry.original,
            "tool_calls": [],
            "tool_results": [],
        }
        if entry.kind is _Kind.TOOL_CALL:
            turn["tool_calls"].append(
                {
                    "type": entry.tool_type,
                    "request_id": entry.call_id,
                    "tool_name": entry.name,
                    "params_as_json": entry.text,
                    "tool_has_been_called": True,
                    "tool_details": None,
                }
            )
        elif entry.kind is _Kind.TOOL_RESULT:
            call_t = self._calls[entry.call_id].t
            turn["tool_results"].append(
                {
                    "type": entry.tool_type,
                    "request_id": entry.call_id,
                    "tool_name": entry.name,
                    "result_value": entry.text,
                    "is_error": entry.is_error,
                    "tool_has_been_called": True,
                    "tool_latency_secs": max(0.0, entry.t - call_t),
                    "dynamic_variable_updates": [dict(u) for u in entry.updates],
                    "result": dict(entry.result) if entry.result is not None else None,
                }
            )
        return turn
