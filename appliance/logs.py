"""Logging: journald-friendly output and secret redaction everywhere.

Secrets (API keys, `secret__` dynamic variables) are registered with `register_secret`; every
log record, event and error message passes through `redact`, which replaces them with `***`.
Under systemd (`JOURNAL_STREAM` set) lines carry no timestamp of their own: journald adds it.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import threading
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote, quote_plus, unquote, unquote_plus

_SECRETS: set[str] = set()
_LOCK = threading.Lock()
MASK = "***"


_HEX_ESCAPE = re.compile(r"%[0-9A-F]{2}")


def secret_forms(value: str) -> set[str]:
    """`value` and the forms a URL can give it: percent-decoded (`%2B` → `+`, `+` → space) and
    percent-encoded (upper- and lower-case hex), so a signed URL's token is masked however a
    library or an error message happens to write it."""
    decoded = {value, unquote(value), unquote_plus(value)}
    forms = set(decoded)
    for form in decoded:
        for encoded in (quote(form, safe=""), quote_plus(form, safe=""), quote(form)):
            forms.add(encoded)
            forms.add(_HEX_ESCAPE.sub(lambda m: m.group(0).lower(), encoded))
    return {form for form in forms if len(form) >= 4}


def register_secret(value: str | None) -> None:
    """Never show `value` (in any of its URL forms) in a log line, event or error message."""
    if value and len(value) >= 4:
        forms = secret_forms(value)
        with _LOCK:
            _SECRETS.update(forms)


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


def current_turn_id() -> str | None:
    """The short id of the turn in progress (what `[...]` shows on log lines), or None."""
    current = _TurnIdFilter.current
    return None if current == "-" else current


class _RedactingFormatter(logging.Formatter):
    """Redacts the whole formatted record, traceback included (a filter sees only the message).

    Under journald every line gets a `<priority>` prefix (journald's SyslogLevelPrefix), so
    `journalctl -p warning` works and a traceback's lines keep the record's priority."""

    def __init__(self, fmt: str, journald: bool) -> None:
        super().__init__(fmt)
        self._journald = journald

    def format(self, record: logging.LogRecord) -> str:
        text = redact(super().format(record))
        if not self._journald:
            return text
        prefix = f"<{_syslog_priority(record.levelno)}>"
        return "\n".join(prefix + line for line in text.split("\n"))


def _syslog_priority(levelno: int) -> int:
    if levelno >= logging.CRITICAL:
        return 2
    if levelno >= logging.ERROR:
        return 3
    if levelno >= logging.WARNING:
        return 4
    if levelno >= logging.INFO:
        return 6
    return 7


def stderr_is_journal(env: Mapping[str, str]) -> bool:
    """`JOURNAL_STREAM` is set and names our stderr (systemd's documented check)."""
    value = env.get("JOURNAL_STREAM", "")
    if not value:
        return False
    try:
        dev, ino = (int(part) for part in value.split(":"))
        st = os.fstat(sys.stderr.fileno())
    except (ValueError, OSError, AttributeError):
        return True  # set but not checkable: trust it
    return (st.st_dev, st.st_ino) == (dev, ino)


def setup_logging(level: str = "INFO", env: Mapping[str, str] | None = None) -> None:
    env = os.environ if env is None else env
    under_journald = stderr_is_journal(env)
    fmt = "%(levelname)s %(name)s [%(turn)s] %(message)s"
    if not under_journald:
        fmt = "%(asctime)s " + fmt
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_RedactingFormatter(fmt, under_journald))
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
