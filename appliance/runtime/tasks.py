"""Background work whose failure becomes an event: the one supervisor of the loop and the local
session (`spawn_guarded`). The remote adapter keeps its own task set (adapters do not import the
runtime); its failures reach the remote machine as events of their own."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from appliance.errors import ApplianceError
from appliance.logs import redact


@dataclass(frozen=True)
class TaskFailure:
    name: str
    """The task's name."""
    code: str | None
    """The `ApplianceError`'s code; None for an unexpected exception (logged with its traceback)."""
    message: str
    """Redacted."""
    retryable: bool = False


def spawn_guarded(
    coro: Awaitable[None],
    name: str,
    *,
    tasks: set[asyncio.Task[None]],
    on_failure: Callable[[TaskFailure], None],
    logger: logging.Logger,
    warn_known: bool = False,
) -> asyncio.Task[None]:
    """Run `coro` as a task kept in `tasks` while it runs; a failure (not a cancellation) is
    passed to `on_failure`. `warn_known`: an `ApplianceError` is also logged as a warning."""

    async def guarded() -> None:
        try:
            await coro
        except asyncio.CancelledError:
            raise
        except ApplianceError as err:
            if warn_known:
                logger.warning("%s failed: %s", name, redact(str(err)))
            on_failure(TaskFailure(name, err.code, redact(str(err)), err.retryable))
        except Exception as err:
            logger.exception("%s failed", name)
            on_failure(TaskFailure(name, None, redact(f"{type(err).__name__}: {err}")))

    task = asyncio.create_task(guarded(), name=name)
    tasks.add(task)
    task.add_done_callback(tasks.discard)
    return task
