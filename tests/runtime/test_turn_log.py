"""Logs: one summary line per turn with its id and latencies; journald format; redaction."""

from __future__ import annotations

import io
import logging
import os
import sys
import tempfile
from collections.abc import Iterator
from typing import Any

import pytest

from appliance import logs
from appliance.runtime.turn_log import TurnLog


class Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []
        self.addFilter(logs._TurnIdFilter())

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(f"[{getattr(record, 'turn', '?')}] {record.getMessage()}")


@pytest.fixture
def capture() -> Iterator[tuple[TurnLog, Capture]]:
    logger = logging.getLogger("test.turn")
    logger.propagate = False
    handler = Capture()
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield TurnLog(logger=logger), handler
    logger.removeHandler(handler)
    logs.set_turn_id(None)


METRICS = {
    "type": "turn_metrics",
    "stt_s": 0.38,
    "llm_first_token_s": 0.07,
    "tts_first_audio_s": 0.131,
    "end_of_speech_to_first_audio_s": 1.424,
}


def feed(log: TurnLog, *events: dict[str, Any]) -> None:
    for event in events:
        log.on_event(event)


def test_one_line_per_turn_with_id_text_and_latencies(capture: tuple[TurnLog, Capture]) -> None:
    log, out = capture
    feed(log, {"type": "session_started", "wake_word": "hey_jarvis"})
    logs.set_turn_id("4003-1")
    feed(
        log,
        {"type": "user_transcript", "user_transcript": "What is the capital of France?"},
        METRICS,
        {"type": "agent_response", "agent_response": "The capital of France is Paris. " * 5, "kind": "reply"},
    )
    assert out.lines[0] == "[-] session started (hey_jarvis)"
    turn = out.lines[1]
    assert turn.startswith('[4003-1] turn 4003-1: heard "What is the capital of France?" → "The capital')
    assert "…" in turn and len(turn) < 260  # the reply is shortened
    assert turn.endswith("(stt 0.38s, llm 0.07s, tts 0.13s, speech end→audio 1.42s)")
    assert len(out.lines) == 2
    logs.set_turn_id(None)
    feed(log, {"type": "session_ended", "reason": "silence"})
    assert out.lines[2:] == ["[-] session ended (silence)"]


def test_a_turn_without_metrics_is_written_when_the_next_one_starts(capture: tuple[TurnLog, Capture]) -> None:
    log, out = capture
    logs.set_turn_id("ab-1")
    feed(
        log,
        {"type": "user_transcript", "user_transcript": "hi"},
        {"type": "agent_response", "agent_response": "Hello!"},
    )
    assert out.lines == []  # a remote agent may still send its metrics
    logs.set_turn_id("ab-2")
    feed(log, {"type": "user_transcript", "user_transcript": "stop"})
    assert out.lines == ['[ab-1] turn ab-1: heard "hi" → "Hello!"']  # with its own turn's id
    feed(
        log,
        {"type": "agent_response", "agent_response": "The weather today is", "kind": "reply"},
        {"type": "agent_response_correction", "corrected_agent_response": "The weather"},
    )
    assert out.lines[-1] == '[ab-2] turn ab-2: heard "stop" → interrupted after "The weather"'


def test_turns_of_an_agent_that_does_not_number_them_get_ids(capture: tuple[TurnLog, Capture]) -> None:
    log, out = capture
    feed(log, {"type": "conversation_initiation_metadata", "conversation_id": "conv_9f3a", "mode": "remote"})
    for text in ("hi", "what time is it"):
        feed(log, {"type": "user_transcript", "user_transcript": text})
        logging.getLogger("test.turn").info("a line during the turn")
        feed(log, {"type": "agent_response", "agent_response": "ok"})
    feed(log, {"type": "session_ended", "reason": "end_call"})
    assert out.lines == [
        "[9f3a-1] a line during the turn",
        '[9f3a-1] turn 9f3a-1: heard "hi" → "ok"',
        "[9f3a-2] a line during the turn",
        '[9f3a-2] turn 9f3a-2: heard "what time is it" → "ok"',
        "[-] session ended (end_call)",
    ]
    assert logs.current_turn_id() is None


def test_first_message_and_reprompts_are_their_own_lines(capture: tuple[TurnLog, Capture]) -> None:
    log, out = capture
    feed(log, {"type": "agent_response", "agent_response": "Hi! How can I help?", "kind": "first_message"})
    assert out.lines == ['[-] agent (first_message): "Hi! How can I help?"']


def test_texts_are_hidden_when_the_privacy_settings_keep_no_transcripts(
    capture: tuple[TurnLog, Capture],
) -> None:
    log, out = capture
    log.show_text = False
    logs.set_turn_id("x-1")
    feed(log, {"type": "user_transcript", "user_transcript": "my PIN is 1234"}, METRICS)
    feed(log, {"type": "agent_response", "agent_response": "Noted.", "kind": "reply"})
    assert "1234" not in out.lines[0] and "<14 characters> → <6 characters>" in out.lines[0]


@pytest.fixture
def stderr_capture() -> Iterator[io.StringIO]:
    yield io.StringIO()
    logging.getLogger().handlers.clear()


def setup_into(buf: io.StringIO, env: dict[str, str]) -> None:
    logs.setup_logging("INFO", env=env)
    handler = logging.getLogger().handlers[0]
    assert isinstance(handler, logging.StreamHandler)
    handler.setStream(buf)


def test_journald_lines_carry_a_priority_and_no_timestamp(stderr_capture: io.StringIO) -> None:
    setup_into(stderr_capture, {"JOURNAL_STREAM": "x"})  # set but not checkable: trusted
    logging.getLogger("appliance.test").warning("microphone lost")
    logging.getLogger("appliance.test").info("ready")
    assert stderr_capture.getvalue().splitlines() == [
        "<4>WARNING appliance.test [-] microphone lost",
        "<6>INFO appliance.test [-] ready",
    ]


def test_journal_stream_must_name_our_stderr() -> None:
    with tempfile.TemporaryFile() as f:
        st = os.fstat(f.fileno())
        other = f"{st.st_dev}:{st.st_ino}"
    mine = os.fstat(sys.stderr.fileno())
    assert logs.stderr_is_journal({"JOURNAL_STREAM": f"{mine.st_dev}:{mine.st_ino}"})
    assert not logs.stderr_is_journal({"JOURNAL_STREAM": other})
    assert not logs.stderr_is_journal({})


def test_secrets_are_redacted_in_tracebacks_too(stderr_capture: io.StringIO) -> None:
    secret = "sk_live_0123456789abcdef"
    logs.register_secret(secret)
    setup_into(stderr_capture, {})
    try:
        raise RuntimeError(f"connect failed: wss://x/?token={secret}")
    except RuntimeError:
        logging.getLogger("appliance.test").exception("remote session failed (%s)", secret)
    text = stderr_capture.getvalue()
    assert secret not in text and text.count("***") >= 2 and "Traceback" in text
