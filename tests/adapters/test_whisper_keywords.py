"""`asr.keywords` reach faster-whisper as its initial prompt and fix a name it misspells."""

from __future__ import annotations

from pathlib import Path

import pytest

from appliance.adapters.whisper_stt import MAX_PROMPT_CHARS, FasterWhisperStt, keyword_prompt


@pytest.mark.parametrize(
    ("keywords", "prompt"),
    [
        ((), None),
        (("", "  "), None),
        (("Siobhan",), "Siobhan."),
        ((" Siobhan ", "Kalevala"), "Siobhan, Kalevala."),
    ],
)
def test_keyword_prompt(keywords: tuple[str, ...], prompt: str | None) -> None:
    assert keyword_prompt(keywords) == prompt


def test_the_prompt_is_bounded_by_whole_keywords() -> None:
    prompt = keyword_prompt([f"name{i:03d}" for i in range(200)])
    assert prompt is not None and len(prompt) <= MAX_PROMPT_CHARS + 1
    assert prompt.endswith(".") and all(len(w) == 7 for w in prompt[:-1].split(", "))


def test_keywords_fix_a_name_whisper_misspells(models_dir: Path) -> None:
    # piper without noise: the same samples on every run, and greedy whisper decoding
    from appliance.testing.speech import piper_say_exact

    audio = piper_say_exact("Please call Siobhan about dinner.")
    plain = FasterWhisperStt(models_dir / "whisper-tiny.en")
    boosted = FasterWhisperStt(models_dir / "whisper-tiny.en", keywords=["Siobhan", "Kalevala"])
    assert "Siobhan" not in plain.transcribe(audio, "en")[0]
    assert boosted.transcribe(audio, "en")[0] == "Please call Siobhan about dinner."
