"""The shared validators: one module used by both halves of the configuration."""

from __future__ import annotations

from typing import Annotated

import pytest
from pydantic import BaseModel, ValidationError

from appliance import agent_config, config
from appliance.validation import Num, between, length, matches, problem_line, show, url_with


class Sample(BaseModel):
    n: Annotated[Num, between(0, 2)] = 1.0
    name: Annotated[str, length(1, 3), matches(r"[a-z]+", "lower-case letters")] = "a"
    url: Annotated[str, url_with("https")] = "https://x"


@pytest.mark.parametrize(
    ("data", "line"),
    [
        ({"n": 3}, "s.n: 3 is outside 0–2"),
        ({"n": "1"}, "s.n: '1' is not a number"),
        ({"name": "abcd"}, "s.name: 'abcd' is outside 1–3 characters"),
        ({"name": "A"}, "s.name: 'A' is not allowed (lower-case letters)"),
        ({"url": "http://x"}, "s.url: 'http://x' is not a https:// URL"),
    ],
)
def test_problem_lines(data: dict[str, object], line: str) -> None:
    with pytest.raises(ValidationError) as exc:
        Sample.model_validate(data)
    assert [problem_line(Sample, "s", e) for e in exc.value.errors()] == [line]


def test_one_home_for_the_validators() -> None:
    assert show(1.0) == "1" and show(None) == "null" and show([1]) == "a list"
    from appliance import validation

    for module in (agent_config, config):
        assert module.show is validation.show and module.between is validation.between
