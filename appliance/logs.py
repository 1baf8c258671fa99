"""Logging: journald-friendly output and secret redaction everywhere.

Secrets (API keys, `secret__` dynamic variables) are registered with `register_secret`; every
log record, event and error message passes through `redact`, which replaces them with `***`.
Under systemd (`JOURNAL_STREAM` set) lines carry no timestamp of their own: journald adds it.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from collections.abc import Mapping
from typing import Any

_SECRETS: set[str] = set()
_LOCK = threading.Lock()
MASK = "***"


def register_secret(value: str | None) -> None:
    """Never show `value` in a log line, event or error message from now on."""
    if value and len(value) >= 4:
        with _LOCK:
            _SECRETS.add(value)


def redact(text: str) -> str:
    if not _SECRETS:
        return text
    with _LOCK:
        secrets = sorted(_SECRETS, key=len, reverse=True)
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, MASK)
    return text


def redact_value(value: Any) -> Any:
    """Redact strings inside JSON-like values (dicts, lists)."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, Mapping):
        return {k: redact_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact_value(v) for v in value]
    return value


class RedactingFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if _SECRETS:
            record.msg = redact(record.getMessage())
            record.args = None
        return True


class _TurnIdFilter(logging.Filter):
    """Adds `turn` to every record: the short id of the turn in progress, or '-'."""

    current: str = "-"

    def filter(self, record: logging.LogRecord) -> bool:
        record.turn = getattr(record, "turn", None) or _TurnIdFilter.current
        return True


def set_turn_id(turn_id: str | None) -> None:
    _TurnIdFilter.current = turn_id or "-"


def setup_logging(level: str = "INFO", env: Mapping[str, str] | None = None) -> None:
    env = os.environ if env is None else env
    under_journald = bool(env.get("JOURNAL_STREAM"))
    fmt = "%(levelname)s %(name)s [%(turn)s] %(message)s"
    if not under_journald:
        fmt = "%(asctime)s " + fmt
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(fmt))
    handler.addFilter(RedactingFilter())
    handler.addFilter(_TurnIdFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # Third-party chatter stays at WARNING unless we debug.
    for noisy in ("faster_whisper", "httpx", "urllib3", "websockets", "piper"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
