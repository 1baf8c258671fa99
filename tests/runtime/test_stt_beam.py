"""`appliance.local.stt.beam_size: auto` chooses the beam from the recogniser's keyword prompt."""

from __future__ import annotations

import pytest

from appliance.runtime.local_agent import stt_beam_size


@pytest.mark.parametrize(
    ("configured", "keywords", "beam"),
    [
        ("auto", [], 1),  # no prompt: greedy (a wider beam did not help)
        ("auto", ["", "  "], 1),  # blank keywords make no prompt
        ("auto", ["Harbourlight Museum"], 5),  # venue names: the beam finds them
        (1, ["Harbourlight Museum"], 1),  # a number is the user's choice
        (3, [], 3),
    ],
)
def test_beam_size(configured: int | str, keywords: list[str], beam: int) -> None:
    assert stt_beam_size(configured, keywords) == beam
