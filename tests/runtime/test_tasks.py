"""`spawn_guarded`: the one supervisor of background work (the loop's and the local session's)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable

import pytest

from appliance.errors import AgentError
from appliance.runtime.tasks import TaskFailure, spawn_guarded

LOG = logging.getLogger("test.tasks")


async def _run(
    coro: Awaitable[None], *, warn_known: bool = False
) -> tuple[list[TaskFailure], set[asyncio.Task[None]]]:
    failures: list[TaskFailure] = []
    tasks: set[asyncio.Task[None]] = set()
    task = spawn_guarded(
        coro, "work", tasks=tasks, on_failure=failures.append, logger=LOG, warn_known=warn_known
    )
    assert task in tasks
    await asyncio.gather(task, return_exceptions=True)
    await asyncio.sleep(0)  # the done callback runs
    return failures, tasks


def test_a_known_failure_becomes_its_code_and_retryability(caplog: pytest.LogCaptureFixture) -> None:
    async def work() -> None:
        raise AgentError("server unreachable", code="agent_unreachable", retryable=True)

    with caplog.at_level(logging.WARNING, logger="test.tasks"):
        failures, tasks = asyncio.run(_run(work(), warn_known=True))
    assert failures == [TaskFailure("work", "agent_unreachable", "server unreachable", True)]
    assert not tasks
    assert "work failed: server unreachable" in caplog.text


def test_an_unexpected_exception_has_no_code_and_is_logged_with_its_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def work() -> None:
        raise ValueError("bad value")

    with caplog.at_level(logging.ERROR, logger="test.tasks"):
        failures, tasks = asyncio.run(_run(work()))
    assert failures == [TaskFailure("work", None, "ValueError: bad value")]
    assert not tasks
    assert caplog.records[-1].exc_info is not None


def test_a_cancellation_is_not_a_failure() -> None:
    async def main() -> list[TaskFailure]:
        failures: list[TaskFailure] = []
        tasks: set[asyncio.Task[None]] = set()
        task = spawn_guarded(asyncio.sleep(10), "work", tasks=tasks, on_failure=failures.append, logger=LOG)
        await asyncio.sleep(0)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await asyncio.sleep(0)
        assert not tasks
        return failures

    assert asyncio.run(main()) == []
