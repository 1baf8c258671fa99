"""The public events stream: one JSON object per line, `type` and `t` first.

`t` is seconds on the appliance clock since start. Event names and fields are a public
interface (headless runs, the status feed, outside checks); every string is redacted.

Each line is written and flushed whole under a lock, so the file holds complete JSON lines at
any moment; `finish()` closes it from any thread, ending it with `appliance_stopped`.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from appliance.logs import redact_value
from appliance.ports import Clock

_LOGGER = logging.getLogger(__name__)

Listener = Callable[[dict[str, Any]], None]


class EventLog:
    def __init__(self, clock: Clock, path: Path | str | None = None) -> None:
        self._clock = clock
        self._file: IO[str] | None = None
        if path is not None:
            self._file = open(path, "w", encoding="utf-8")  # noqa: SIM115 - closed in close()
        self._listeners: list[Listener] = []
        self._lock = threading.Lock()
        self.history: list[dict[str, Any]] = []
        self.keep_history = False
        self.last_type: str | None = None
        """The type of the last event emitted."""

    def subscribe(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def emit(self, type: str, **fields: Any) -> None:
        record: dict[str, Any] = {"type": type, "t": round(self._clock.now(), 3)}
        record.update(redact_value(fields))
        line = json.dumps(record, ensure_ascii=False, default=str)
        with self._lock:
            self.last_type = type
            if self._file is not None:
                self._file.write(line + "\n")
                self._file.flush()
            if self.keep_history:
                self.history.append(record)
        if type != "audio":
            _LOGGER.debug("event %s", line)
        for listener in list(self._listeners):
            try:
                listener(record)
            except Exception:  # a broken listener must not stop the appliance
                _LOGGER.exception("event listener failed")

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None

    def finish(self, reason: str) -> None:
        """An exit that cannot wait (a second signal): end the file with `appliance_stopped`
        unless it already does, and close it. From any thread; never waits long for the lock."""
        if not self._lock.acquire(timeout=0.5):
            _LOGGER.warning("the events file is busy; left as it is")  # a line half written
            return
        try:
            if self._file is None:
                return
            if self.last_type != "appliance_stopped":
                record = {"type": "appliance_stopped", "t": round(self._clock.now(), 3), "reason": reason}
                self._file.write(json.dumps(record) + "\n")
                self.last_type = "appliance_stopped"
            self._file.close()
            self._file = None
        except (OSError, ValueError) as err:
            _LOGGER.warning("cannot finish the events file: %s", err)
        finally:
            self._lock.release()
