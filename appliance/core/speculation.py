"""Speculative turns: when to start work on a pause, and whether the end may use it.

When the endpointer reports a pause (`SpeechPaused`), the local session transcribes the audio so
far; once that transcript is ready (the pause still running), it starts the reply on it: the LLM
and the synthesis of the first chunk, into buffers (nothing played, no event, no history entry).
At the end decision (`UtteranceEnded`) the work is either committed (the normal turn takes it
over: its events in the normal order, the buffered audio played at once, the same LLM stream
continued) or discarded without a trace. These are the decisions, pure and table-tested; the
session (`runtime/local_session.py`) only runs them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any


class Verdict(StrEnum):
    COMMIT = "commit"
    """The end confirmed the speculated input: the turn takes the speculative work over."""
    DIFFERENT_AUDIO = "different_audio"
    """The utterance that ended is not the audio the speculation heard (speech resumed)."""
    DIFFERENT_LANGUAGE = "different_language"
    """The turn asks STT for another language than the speculation did."""
    DIFFERENT_REQUEST = "different_request"
    """The reply request differs (a context update, a language switch, a typed message...)."""
    FAILED = "failed"
    """The speculative generation failed: the normal path (with its retries) runs instead."""
    NOT_A_REPLY = "not_a_reply"
    """The request is no user reply (a re-prompt, a tool round): never speculated."""


@dataclass(frozen=True)
class ReplyRequest:
    """What a reply generation is asked: the chat messages and the tool schemas."""

    messages: tuple[Mapping[str, Any], ...]
    tools: tuple[Mapping[str, Any], ...]


def reply_may_start(*, current: bool, listening: bool, transcript: str, enabled: bool) -> bool:
    """Start the speculative reply once the speculative transcript is ready? Only while that
    pause is still the current one, the conversation waits for the user, and there are words."""
    return enabled and current and listening and bool(transcript.strip())


def transcript_verdict(
    speculated_audio: bytes, speculated_language: str | None, audio: bytes, language: str | None
) -> Verdict:
    """May the ended utterance use the speculative transcript? Only for the very same audio
    (the endpointer hands over exactly the paused audio when no speech followed)."""
    if speculated_audio != audio:
        return Verdict.DIFFERENT_AUDIO
    if speculated_language != language:
        return Verdict.DIFFERENT_LANGUAGE
    return Verdict.COMMIT


def reply_verdict(
    speculated: ReplyRequest,
    request: ReplyRequest,
    *,
    is_user_reply: bool,
    failed: bool,
) -> Verdict:
    """May the turn's generation continue the speculative one? Only for the same request, a
    reply to the user, and a speculative stream that did not fail. A tool call the speculative
    stream asked for is only buffered with the rest: it runs once the turn has taken it over."""
    if not is_user_reply:
        return Verdict.NOT_A_REPLY
    if failed:
        return Verdict.FAILED
    if _plain(speculated.messages) != _plain(request.messages) or _plain(speculated.tools) != _plain(
        request.tools
    ):
        return Verdict.DIFFERENT_REQUEST
    return Verdict.COMMIT


def _plain(items: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    return [dict(item) for item in items]
