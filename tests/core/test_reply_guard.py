"""ReplyGuard: bounded replies (speech time, tokens) and the repetition guard, fed text deltas."""

from __future__ import annotations

import pytest

from appliance.core.reply_guard import (
    MAX_REPLY,
    REPETITION,
    GuardStep,
    ReplyGuard,
    ReplyLimits,
    Truncation,
    excerpt,
)

NOUNS = ["fox", "owl", "boat", "lamp", "tree", "bell", "road", "cup", "hill", "door", "kite"]
ADJECTIVES = ["red", "tall", "old", "quiet", "bright", "small", "green"]


def distinct(n: int) -> str:
    """`n` different sentences: every run of 8 words holds a step number, so none repeats."""
    return "".join(
        f"Step {i}: the {ADJECTIVES[i % 7]} {NOUNS[i % 11]} moves north. " for i in range(1, n + 1)
    )


def run(text: str, limits: ReplyLimits, size: int, spent: float = 0.0) -> tuple[str, Truncation | None]:
    """Feed `text` in deltas of `size` characters (0: all at once), then finish if not stopped."""
    guard = ReplyGuard(limits, spent_seconds=spent)
    deltas = [text] if size == 0 else [text[i : i + size] for i in range(0, len(text), size)]
    released: list[str] = []
    for delta in deltas:
        step = guard.push(delta)
        released.append(step.release)
        if step.stop is not None:
            assert guard.stopped == step.stop
            assert guard.push("more text. ") == GuardStep()  # nothing after the cut
            break
    else:
        step = guard.finish()
        released.append(step.release)
    assert "".join(released) == guard.released_text
    return guard.released_text, guard.stopped


STORY_LOOP = "He had been a wanderer who had been blessed with a gift. " * 6
VARIED_LOOP = "".join(
    f"{who} had been a wanderer who had been blessed with a gift of {gift}. "
    for who, gift in [("He", "song"), ("She", "sight"), ("They", "speech"), ("He", "time"), ("It", "fire")]
)
WORD_LOOP = "la " * 200
SMOLLM2 = (  # the default model's reply to "Tell me a story." (llama.cpp, default sampling)
    "I'm sorry for the misunderstanding. I'm here to help you with whatever you're struggling with. "
    "I'm not a magic spell, but I can certainly assist you with whatever you're going through.\n"
    "I'm a voice-activated smart speaker, and I'm here to help. I'm not a magic spell, but I can "
    "certainly assist you with whatever you're going through. If you're having trouble with "
    "something, I'm here to help.\n"
    "If you're having trouble with something, I'm here to help. I'm not a magic spell, but I can "
    "certainly assist you with whatever you're going through. If you're having trouble with "
    "something, I'm here to help.\n"
)
DEFAULT = ReplyLimits()


CASES = [
    # (name, text, limits, spent, expected released text, expected reason or None, detail)
    ("short reply", "The capital of France is Paris. It is lovely.", DEFAULT, 0.0,
     "The capital of France is Paris. It is lovely.", None, ""),
    ("no terminal at the end", "Paris", DEFAULT, 0.0, "Paris", None, ""),
    ("the same sentence a third time", STORY_LOOP, DEFAULT, 0.0,
     "He had been a wanderer who had been blessed with a gift. " * 2, REPETITION,
     "He had been a wanderer who had been blessed with a gift."),
    ("a short sentence a third time", "I am here. " * 4, DEFAULT, 0.0, "I am here. " * 2, REPETITION,
     "I am here."),
    ("SmolLM2's real loop", SMOLLM2, DEFAULT, 0.0, SMOLLM2[: SMOLLM2.index("I'm not a magic spell", 400)],
     REPETITION, "I'm not a magic spell, but I can certainly assist you with whatever you're …"),
    ("two words are not a sentence to guard", "Yes, yes. " * 4, DEFAULT, 0.0, "Yes, yes. " * 4, None, ""),
    ("a long word run a third time", VARIED_LOOP, DEFAULT, 0.0,
     VARIED_LOOP.split(". ")[0] + ". " + VARIED_LOOP.split(". ")[1] + ". ", REPETITION,
     "They had been a wanderer who had been blessed with a gift of speech."),
    ("a word loop without punctuation: the first run-on is spoken whole", WORD_LOOP, DEFAULT, 0.0,
     WORD_LOOP[:300], REPETITION, "la " * 26 + "…"),
    ("distinct sentences up to 45 s of speech", distinct(60), DEFAULT, 0.0,
     distinct(20), MAX_REPLY, "45 s of speech"),
    ("a faster voice says more in 45 s", distinct(60), ReplyLimits(speed=1.2), 0.0,
     distinct(24), MAX_REPLY, "45 s of speech"),
    ("an earlier tool round spent 40 s", distinct(60), DEFAULT, 40.0,
     distinct(2), MAX_REPLY, "45 s of speech"),
    ("the token ceiling", distinct(60), ReplyLimits(max_tokens=40), 0.0,
     distinct(4), MAX_REPLY, "40 tokens"),
    ("a first sentence longer than the limit is still spoken whole",
     "Once upon a time there was a fox who lived by the sea. And then.", ReplyLimits(max_seconds=1.0), 0.0,
     "Once upon a time there was a fox who lived by the sea. ", MAX_REPLY, "1 s of speech"),
    ("voice markup does not count as speech",
     "<Joe>I am here.</Joe> <Joe>I am here.</Joe> <Joe>I am here.</Joe> Bye.", DEFAULT, 0.0,
     "<Joe>I am here.</Joe> <Joe>I am here.</Joe> ", REPETITION, "I am here."),
]  # fmt: skip


@pytest.mark.parametrize(
    ("text", "limits", "spent", "released", "reason", "detail"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
@pytest.mark.parametrize("size", [0, 1, 3, 17], ids=["whole", "chars", "by3", "by17"])
def test_guard_table(
    text: str,
    limits: ReplyLimits,
    spent: float,
    released: str,
    reason: str | None,
    detail: str,
    size: int,
) -> None:
    """Any split of the same text into deltas gives the same released text and the same cut."""
    got, stop = run(text, limits, size, spent)
    assert got == released
    if reason is None:
        assert stop is None
        return
    assert stop is not None
    assert (stop.reason, stop.detail, stop.spoken_text) == (reason, detail, released)
    assert stop.spoken_seconds == pytest.approx(limits.seconds(released))
    assert stop.spoken_seconds + spent <= limits.max_seconds or len(released) <= limits.max_sentence_chars


def test_the_first_sentence_streams_and_later_ones_wait_until_complete() -> None:
    guard = ReplyGuard()
    assert guard.push("Once upon") == GuardStep("Once upon")
    assert not guard.at_boundary
    assert guard.push(" a time. And") == GuardStep(" a time. ")  # "And" waits for its sentence
    assert guard.at_boundary
    assert guard.push(" then, the fox") == GuardStep()
    assert guard.push(" slept. Mr. Smith") == GuardStep("And then, the fox slept. ")  # not cut at "Mr."
    assert guard.push(" came.\nThe end") == GuardStep("Mr. Smith came.\n")  # a line break ends one too
    assert guard.finish() == GuardStep("The end")
    assert guard.released_text == "Once upon a time. And then, the fox slept. Mr. Smith came.\nThe end"


@pytest.mark.parametrize(
    ("text", "sentences"),
    [
        ('He said "Hi there!" Then', ['He said "Hi there!" ']),
        ("<Joe>Hello, I am the fox!</Joe> The", ["<Joe>Hello, I am the fox!</Joe> "]),
        ("Wait... What? Yes", ["Wait... ", "What? "]),
        ("J. R. R. Tolkien wrote it. Then", ["J. R. R. Tolkien wrote it. "]),
        ("It costs 3.50 euros, e.g. today. Then", ["It costs 3.50 euros, e.g. today. "]),
        ("A. B", []),
    ],
)
def test_sentence_boundaries(text: str, sentences: list[str]) -> None:
    guard = ReplyGuard()
    guard.push("First. ")  # past the streamed first sentence
    released = guard.push(text).release
    assert released == "".join(sentences)


def test_a_run_on_is_cut_at_its_last_space_before_the_limit() -> None:
    limits = ReplyLimits(max_sentence_chars=20)
    guard = ReplyGuard(limits)
    guard.push("First. ")
    assert guard.push("one two three four five six") == GuardStep("one two three four ")
    assert guard.finish() == GuardStep("five six")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("<Joe>Short   one.</Joe>", "Short one."),
        ("word " * 15 + "sk-0123456789abcdef0123456789 end", "word " * 15 + "…"),
        ("x" * 100, ""),
    ],
)
def test_the_excerpt_never_cuts_a_word(text: str, expected: str) -> None:
    """A key the LLM echoes is masked by the event log only if it is there whole."""
    assert excerpt(text) == expected


@pytest.mark.parametrize(
    ("platform", "expected"),
    [(-1, 400), (None, 400), (0, 400), (120, 120), (400, 400), (5000, 400), (True, 400), ("50", 400)],
)
def test_the_llm_is_asked_for_at_most_the_device_ceiling(platform: object, expected: int) -> None:
    assert ReplyLimits().llm_max_tokens(platform) == expected


def test_event_fields() -> None:
    _, stop = run(STORY_LOOP, DEFAULT, 0)
    assert stop is not None
    spoken = "He had been a wanderer who had been blessed with a gift. " * 2
    assert stop.event_fields() == {
        "reason": "repetition",
        "spoken_chars": len(spoken.strip()),
        "spoken_seconds": round(len(spoken.strip()) / 16.0, 2),
        "generated_chars": len(spoken) * 3 // 2,
        "detail": "He had been a wanderer who had been blessed with a gift.",
    }


@pytest.mark.parametrize(
    "kwargs",
    [{"max_seconds": 0}, {"max_tokens": 0}, {"speed": 0}, {"repeat_limit": 1}, {"max_sentence_chars": 5}],
)
def test_limits_are_checked(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="must be"):
        ReplyLimits(**kwargs)  # type: ignore[arg-type]
