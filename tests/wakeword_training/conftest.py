"""Shared fixtures of the wake-word training tests."""

from __future__ import annotations

from collections.abc import Callable

import pytest


@pytest.fixture
def forbid_slow(monkeypatch: pytest.MonkeyPatch) -> Callable[..., None]:
    """`forbid_slow((module, name), ...)`: each named function fails the test if called — a
    command must refuse its input before it starts training, features or synthesis."""

    def forbid(*targets: tuple[object, str]) -> None:
        def slow(*args: object, **kwargs: object) -> None:
            raise AssertionError("started the slow part before refusing the input")

        for module, name in targets:
            monkeypatch.setattr(module, name, slow)

    return forbid
