"""The public events stream: one JSON object per line, `type` and `t` first.

`t` is seconds on the appliance clock since start. Event names and fields are a public
interface (headless runs, the status feed, outside checks); every string is redacted.
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

    def subscribe(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def emit(self, type: str, **fields: Any) -> None:
        record: dict[str, Any] = {"type": type, "t": round(self._clock.now(), 3)}
        record.update(redact_value(fields))
        line = json.dumps(record, ensure_ascii=False, default=str)
        with self._lock:
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
