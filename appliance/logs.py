"""Logging: journald-friendly output and secret redaction everywhere.

Secrets (API keys, URL passwords, `secret__` dynamic variables) are registered with
`register_secret`; every log record, event and error message passes through `redact`, which
replaces them with `***`, in their plain, percent-encoded and percent-decoded forms (a key in a
URL query, a password written `p%40ss` in a URL). The set is bounded: the first
`_PINNED_SECRETS` registrations (the configuration's keys, registered at load) stay for the
life of the process; later ones (a signed URL per remote connection) rotate out oldest first
once `_MAX_SECRETS` are held, so months of sessions do not grow it without end.
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

_MIN_SECRET_CHARS = 4
_MAX_SECRETS = 512
_PINNED_SECRETS = _MAX_SECRETS // 2
_SECRETS: dict[str, tuple[str, tuple[str, ...]]] = {}
"""Registered secrets in registration order, each with (anchor, its forms longest first)."""
_INDEX: tuple[tuple[str, tuple[str, ...]], ...] = ()
"""(anchor, forms) per secret, longest forms first; replaced as a whole on registration."""
_LOCK = threading.Lock()
MASK = "***"
_PERCENT = re.compile(r"%[0-9A-F]{2}")
_UNRESERVED_RUN = re.compile(r"[A-Za-z0-9_.~-]+")


def secret_forms(value: str) -> set[str]:
    """The ways `value` can appear in text: as is, percent-decoded, percent-encoded (upper- and
    lower-case hex, `+` or `%20` for a space). Forms shorter than 4 characters are left out."""
    bases = {value, unquote(value), unquote_plus(value)}
    forms = set(bases)
    for base in bases:
        for encoded in (quote(base, safe=""), quote(base), quote_plus(base, safe="")):
            forms.add(encoded)
            forms.add(_PERCENT.sub(lambda m: m.group(0).lower(), encoded))
    return {f for f in forms if len(f) >= _MIN_SECRET_CHARS}


def _anchor(forms: set[str]) -> str:
    """A piece of text every form contains (characters no encoding changes), to skip a secret's
    forms at once when the text does not contain it; "" when there is none."""
    runs = sorted({r for f in forms for r in _UNRESERVED_RUN.findall(f)}, key=len, reverse=True)
    return next((r for r in runs if all(r in f for f in forms)), "")


def register_secret(value: str | None) -> None:
    """Never show `value` in a log line, event or error message from now on."""
    global _INDEX
    if not value or len(value) < _MIN_SECRET_CHARS:
        return
    with _LOCK:
        if value in _SECRETS:
            return
        forms = secret_forms(value)
        _SECRETS[value] = (_anchor(forms), tuple(sorted(forms, key=lambda f: (-len(f), f))))
        if len(_SECRETS) > _MAX_SECRETS:  # drop the oldest unpinned secret
            del _SECRETS[list(_SECRETS)[_PINNED_SECRETS]]
        _INDEX = tuple(sorted(_SECRETS.values(), key=lambda entry: -len(entry[1][0])))


def redact(text: str) -> str:
    for anchor, forms in _INDEX:  # a tuple, replaced as a whole: a consistent snapshot
        if anchor in text:
            for form in forms:
                if form in text:
                    text = text.replace(form, MASK)
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
        if _INDEX:
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
