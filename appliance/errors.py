"""Errors with a stable `code` and a `retryable` flag.

Every failure the user or a script can see carries a code that does not change between
releases (it appears in `error` events and in exit messages) and says whether trying again
may help. Messages never contain secrets: callers pass values through `logs.redact` first.
"""

from __future__ import annotations


class ApplianceError(Exception):
    """Base of every error the appliance raises on purpose."""

    code: str = "appliance_error"
    retryable: bool = False

    def __init__(self, message: str, *, code: str | None = None, retryable: bool | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if retryable is not None:
            self.retryable = retryable

    def __str__(self) -> str:
        return self.message


class ConfigError(ApplianceError):
    """The configuration file is missing, unreadable or invalid. Each problem is one line."""

    code = "config_invalid"

    def __init__(self, problems: list[str], *, source: str | None = None) -> None:
        self.problems = list(problems)
        self.source = source
        head = f"invalid configuration in {source}" if source else "invalid configuration"
        super().__init__(head + ":\n" + "\n".join(f"  {p}" for p in self.problems))


class ModelError(ApplianceError):
    """A model file is missing, corrupt or cannot be loaded."""

    code = "model_unavailable"


class AudioDeviceError(ApplianceError):
    """An audio device is missing, busy or failed. Usually retryable: devices come back."""

    code = "audio_device"
    retryable = True


class AgentError(ApplianceError):
    """The conversation agent (remote or local) failed."""

    code = "agent_failed"
