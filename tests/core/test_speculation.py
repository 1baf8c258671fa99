"""The speculative-turn decisions (`core/speculation.py`) and the machine's reply preview."""

from __future__ import annotations

from typing import Any

import pytest

from appliance.core import conversation as cv
from appliance.core.speculation import (
    ReplyRequest,
    Verdict,
    reply_may_start,
    reply_verdict,
    transcript_verdict,
)

SYSTEM = {"role": "system", "content": "x"}
ASK = {"role": "user", "content": "What is the capital"}
TOOL = {"type": "function", "function": {"name": "lookup"}}
REQ = ReplyRequest((SYSTEM, ASK), (TOOL,))


@pytest.mark.parametrize(
    ("current", "listening", "transcript", "enabled", "start"),
    [
        (True, True, "What is the capital", True, True),
        (False, True, "What is the capital", True, False),  # speech resumed meanwhile
        (True, False, "What is the capital", True, False),  # the agent is busy (thinking, speaking)
        (True, True, "  ", True, False),  # nothing intelligible: no reply
        (True, True, "What is the capital", False, False),  # switched off
    ],
)
def test_when_a_speculative_reply_starts(
    current: bool, listening: bool, transcript: str, enabled: bool, start: bool
) -> None:
    assert (
        reply_may_start(current=current, listening=listening, transcript=transcript, enabled=enabled) is start
    )


@pytest.mark.parametrize(
    ("spec_audio", "spec_lang", "audio", "lang", "verdict"),
    [
        (b"ab", "en", b"ab", "en", Verdict.COMMIT),
        (b"ab", None, b"ab", None, Verdict.COMMIT),
        (b"ab", "en", b"abcd", "en", Verdict.DIFFERENT_AUDIO),  # speech resumed: a longer utterance
        (b"ab", "en", b"ab", "de", Verdict.DIFFERENT_LANGUAGE),
        (b"ab", None, b"ab", "en", Verdict.DIFFERENT_LANGUAGE),
    ],
)
def test_the_end_uses_the_speculative_transcript_only_for_the_same_audio_and_language(
    spec_audio: bytes, spec_lang: str | None, audio: bytes, lang: str | None, verdict: Verdict
) -> None:
    assert transcript_verdict(spec_audio, spec_lang, audio, lang) is verdict


CONTEXT = {"role": "system", "content": "The user is in the kitchen."}


@pytest.mark.parametrize(
    ("request_", "user_reply", "failed", "verdict"),
    [
        (REQ, True, False, Verdict.COMMIT),
        (ReplyRequest((SYSTEM, ASK), (TOOL,)), True, False, Verdict.COMMIT),  # equal, not same
        (ReplyRequest((SYSTEM, CONTEXT, ASK), (TOOL,)), True, False, Verdict.DIFFERENT_REQUEST),
        (ReplyRequest((SYSTEM, ASK), ()), True, False, Verdict.DIFFERENT_REQUEST),
        (REQ, False, False, Verdict.NOT_A_REPLY),  # a re-prompt, a tool round
        (REQ, True, True, Verdict.FAILED),  # the normal path retries
    ],
)
def test_the_turn_continues_the_speculative_reply_only_for_the_same_clean_request(
    request_: ReplyRequest, user_reply: bool, failed: bool, verdict: Verdict
) -> None:
    got = reply_verdict(REQ, request_, is_user_reply=user_reply, failed=failed)
    assert got is verdict


def _listening() -> cv.ConversationMachine:
    machine = cv.ConversationMachine(cv.ConversationSettings(system_prompt="x", max_duration_s=None))
    machine.handle(cv.Started(), 0.0)
    assert machine.phase is cv.Phase.LISTENING
    return machine


def test_the_preview_is_the_request_the_turn_makes_and_changes_nothing() -> None:
    machine = _listening()
    preview = machine.preview_reply(" What is the capital ")
    assert preview is not None
    assert machine.history.messages() == [SYSTEM]  # nothing entered the history
    assert machine.phase is cv.Phase.LISTENING
    effects: list[Any] = machine.handle(cv.UserUtterance(b"\0\0", 0.1), 1.0)
    transcribe = next(e for e in effects if isinstance(e, cv.Transcribe))
    effects = machine.handle(cv.Transcribed(transcribe.turn, "What is the capital", "en"), 2.0)
    request = next(e for e in effects if isinstance(e, cv.GenerateReply))
    assert preview == request


@pytest.mark.parametrize("text", ["", "   "])
def test_no_preview_without_words(text: str) -> None:
    assert _listening().preview_reply(text) is None


def test_no_preview_while_the_agent_works() -> None:
    machine = _listening()
    machine.handle(cv.UserUtterance(b"\0\0", 0.1), 1.0)
    assert machine.phase is cv.Phase.TRANSCRIBING
    assert machine.preview_reply("What is the capital") is None
