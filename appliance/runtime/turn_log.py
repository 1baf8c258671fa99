"""The console / journal view of conversations: one INFO line per turn.

    turn 4003-1: heard "What is the capital of France?" → "The capital of France is Paris."
    (stt 0.38s, llm 0.07s, tts 0.13s, speech end→audio 1.42s)

(one line). The line carries the turn's short id like every other line of the turn, and is
written once the turn is complete: its reply and its `turn_metrics` are both known, or the
next turn or the end of the session closes it. With `show_text=False` (the agent's privacy
settings ask for zero retention or no transcripts) the texts are replaced by their lengths,
since the journal is storage too.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from appliance.logs import current_turn_id, set_turn_id

_LOGGER = logging.getLogger("appliance.turn")

REPLY_CHARS = 80
HEARD_CHARS = 160


def shorten(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


@dataclass
class _Turn:
    turn_id: str | None
    heard: str
    reply: str | None = None
    interrupted_after: str | None = None
    metrics: dict[str, Any] = field(default_factory=dict)


def _seconds(value: Any) -> str:
    return f"{float(value):.2f}s" if isinstance(value, int | float) else "-"


class TurnLog:
    def __init__(self, *, show_text: bool = True, logger: logging.Logger = _LOGGER) -> None:
        self.show_text = show_text
        self._logger = logger
        self._turn: _Turn | None = None
        self._conversation = "----"
        self._turns = 0
        self._owns_turn_id = False

    def _text(self, text: str, limit: int) -> str:
        if not self.show_text:
            return f"<{len(text)} characters>"
        return '"' + shorten(text, limit) + '"'

    def on_event(self, event: dict[str, Any]) -> None:
        kind = event["type"]
        if kind == "conversation_initiation_metadata":
            self._conversation = str(event.get("conversation_id") or "----")[-4:]
            self._turns = 0
        elif kind == "user_transcript":
            self.flush()
            if current_turn_id() is None or self._owns_turn_id:
                # An agent that does not number its turns (the local one does): number them
                # here, so the lines of every turn carry an id.
                self._turns += 1
                set_turn_id(f"{self._conversation}-{self._turns}")
                self._owns_turn_id = True
            self._turn = _Turn(current_turn_id(), str(event.get("user_transcript") or ""))
        elif kind == "turn_metrics":
            if self._turn is not None:
                self._turn.metrics = dict(event)
                if self._turn.reply is not None:
                    self.flush()
        elif kind == "agent_response":
            text = str(event.get("agent_response") or "")
            what = str(event.get("kind") or "reply")
            if self._turn is None or self._turn.reply is not None or what != "reply":
                self.flush()  # a first message, re-prompt or farewell is not this turn's reply
                self._logger.info("agent (%s): %s", what, self._text(text, REPLY_CHARS))
                return
            self._turn.reply = text
            if self._turn.metrics:
                self.flush()
        elif kind == "agent_response_correction":
            if self._turn is not None:
                self._turn.interrupted_after = str(event.get("corrected_agent_response") or "")
                self.flush()
        elif kind == "session_started":
            self._logger.info("session started (%s)", event.get("wake_word") or "?")
        elif kind == "session_ended":
            self.flush()
            if self._owns_turn_id:
                set_turn_id(None)
                self._owns_turn_id = False
            self._logger.info("session ended (%s)", event.get("reason") or "?")

    def flush(self) -> None:
        turn, self._turn = self._turn, None
        if turn is None:
            return
        parts = [f"heard {self._text(turn.heard, HEARD_CHARS)}"]
        if turn.interrupted_after is not None:
            parts.append(f"→ interrupted after {self._text(turn.interrupted_after, REPLY_CHARS)}")
        elif turn.reply is not None:
            parts.append(f"→ {self._text(turn.reply, REPLY_CHARS)}")
        else:
            parts.append("→ no reply")
        m = turn.metrics
        if m:
            parts.append(
                f"(stt {_seconds(m.get('stt_s'))}, llm {_seconds(m.get('llm_first_token_s'))}, "
                f"tts {_seconds(m.get('tts_first_audio_s'))}, "
                f"speech end→audio {_seconds(m.get('end_of_speech_to_first_audio_s'))})"
            )
        turn_id = turn.turn_id or "-"
        self._logger.info("turn %s: %s", turn_id, " ".join(parts), extra={"turn": turn_id})
