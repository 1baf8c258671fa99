"""SpeechChunker: table of cuts, plus split-invariance and round-trip properties."""

from __future__ import annotations

import itertools
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from appliance.core.chunker import SpeechChunker


def chunks(
    text: str,
    *,
    pieces: list[str] | None = None,
    min_words: int = 6,
    first_min_words: int = 3,
    max_chars: int = 240,
) -> list[str]:
    """Chunks of `text` fed whole, or as `pieces` (which must join to `text`)."""
    assert pieces is None or "".join(pieces) == text
    chunker = SpeechChunker(min_words=min_words, max_chars=max_chars, first_min_words=first_min_words)
    out: list[str] = []
    for piece in pieces if pieces is not None else [text]:
        out += chunker.push(piece)
    return out + chunker.flush()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # sentence ends
        ("Hello there. How are you? I am fine!", ["Hello there.", "How are you?", "I am fine!"]),
        ("Wow!! Really?! Yes…  Good.", ["Wow!!", "Really?!", "Yes…", "Good."]),
        ("你好。 再见。", ["你好。", "再见。"]),
        ("No space after.Then text", ["No space after.Then text"]),
        # buffer words: an ellipsis followed by a space is a cut; one glued to the next word is not
        (
            "Let me think about that... The answer is yes.",
            ["Let me think about that...", "The answer is yes."],
        ),
        ("Well...maybe not.", ["Well...maybe not."]),
        ("... and so on.", ["... and so on."]),
        # decimals and numbers
        ("Pi is 3.14 and e is 2.71. Right.", ["Pi is 3.14 and e is 2.71.", "Right."]),
        ("It costs 1,000 dollars at 10:30 today.", ["It costs 1,000 dollars at 10:30 today."]),
        ("That was in 2024. Then it changed.", ["That was in 2024.", "Then it changed."]),
        # abbreviations and initials
        ("Mr. Smith and Mrs. Jones met Dr. Who.", ["Mr. Smith and Mrs. Jones met Dr. Who."]),
        ("Fruit, e.g. apples, i.e. red ones.", ["Fruit, e.g. apples,", "i.e. red ones."]),
        ("Cats vs. dogs etc. are pets. Yes.", ["Cats vs. dogs etc. are pets.", "Yes."]),
        ("Go to St. Paul now. Ok.", ["Go to St. Paul now.", "Ok."]),
        ("J. R. R. Tolkien wrote it. Yes.", ["J. R. R. Tolkien wrote it.", "Yes."]),
        # closing quotes, brackets and tags stay with their sentence
        ('He said "stop." Then left.', ['He said "stop."', "Then left."]),
        ("(It works.) Good.", ["(It works.)", "Good."]),
        ("<Joe>Hello there.</Joe> Bye.", ["<Joe>Hello there.</Joe>", "Bye."]),
        # the comma rule: first chunk after 3 words, later ones after 6
        (
            "Okay, so I was thinking, maybe we could go to the park, and then have lunch somewhere nice.",
            [
                "Okay, so I was thinking,",
                "maybe we could go to the park,",
                "and then have lunch somewhere nice.",
            ],
        ),
        ("One two three, four five; six seven: eight.", ["One two three,", "four five; six seven: eight."]),
        ("Well, yes; no: maybe", ["Well, yes; no:", "maybe"]),
        ("Yes, sure, ok", ["Yes, sure, ok"]),
        # line breaks separate headings and list items; Markdown is not read aloud
        ("# Weather\nIt is **sunny** today.", ["Weather", "It is sunny today."]),
        ("Options:\n- red one\n- blue one\n* green `one`", ["Options:", "red one", "blue one", "green one"]),
        ("1. Buy milk\n2. Buy bread. Done.", ["1. Buy milk", "2. Buy bread.", "Done."]),
        ("Item #1 is C# code - fine.", ["Item #1 is C# code - fine."]),
        ("**Bold** text here.", ["Bold text here."]),
        ("**", []),
        ("", []),
        ("   \n  ", []),
    ],
)
def test_cuts(text: str, expected: list[str]) -> None:
    assert chunks(text) == expected


def test_min_words_is_configurable() -> None:
    text = "Alpha beta, gamma delta, epsilon zeta eta, theta."
    assert chunks(text, first_min_words=1, min_words=1) == [
        "Alpha beta,",
        "gamma delta,",
        "epsilon zeta eta,",
        "theta.",
    ]
    assert chunks(text, first_min_words=5, min_words=5) == [
        "Alpha beta, gamma delta, epsilon zeta eta,",
        "theta.",
    ]


def test_first_chunk_rule_applies_again_after_flush() -> None:
    chunker = SpeechChunker()
    assert chunker.push("Sure thing, here is the plan, step by step, ok") == ["Sure thing, here is the plan,"]
    assert chunker.flush() == ["step by step, ok"]
    assert chunker.push("Of course, I can help. ") == ["Of course, I can help."]


def test_max_chars_cuts_at_the_last_whitespace_that_fits() -> None:
    text = " ".join(["word"] * 25)
    out = chunks(text, max_chars=50)
    assert out == [" ".join(["word"] * 10)] * 2 + [" ".join(["word"] * 5)]
    assert all(len(c) <= 50 for c in out)


def test_max_chars_without_whitespace_cuts_at_the_next_one() -> None:
    assert chunks("a " + "b" * 80 + " c", max_chars=20) == ["a", "b" * 80, "c"]


def test_tags_are_never_cut_even_with_spaces_inside() -> None:
    text = "Alpha beta gamma <Old Wizard>delta, epsilon.</Old Wizard> zeta"
    out = chunks(text, max_chars=8, first_min_words=1, min_words=1)
    assert "<Old Wizard>delta," in out
    assert any(c.startswith("epsilon.</Old Wizard>") for c in out)
    assert " ".join(out) == text


def test_markdown_inside_tags_is_left_alone_and_lone_brackets_are_text() -> None:
    assert chunks("<Joe>Hi *there*.</Joe>") == ["<Joe>Hi there.</Joe>"]
    assert chunks("I <3 you. Yes.") == ["I <3 you.", "Yes."]


def test_a_chunk_is_released_as_soon_as_it_is_decided() -> None:
    chunker = SpeechChunker()
    assert chunker.push("Hello there.") == []  # could still be "Hello there.com"
    assert chunker.push(" How") == ["Hello there."]
    assert chunker.push(" are you,") == []
    assert chunker.push(" friend?") == []
    assert chunker.push("\n") == ["How are you, friend?"]
    assert chunker.flush() == []


@pytest.mark.parametrize(
    ("text", "max_chars"),
    [
        ("<Joe>x,y Mr....\n- >", 11),  # a lone "." after "Mr" may still grow into "...."
        ("Dr.. Yes <Big Voice>a, b.</Big Voice> c", 8),
        ("e.g.\n1. a <", 5),
    ],
)
def test_regressions_fed_one_character_at_a_time(text: str, max_chars: int) -> None:
    whole = chunks(text, max_chars=max_chars)
    assert chunks(text, pieces=list(text), max_chars=max_chars) == whole


def test_invalid_settings_are_rejected() -> None:
    with pytest.raises(ValueError):
        SpeechChunker(min_words=0)


TOKENS = [
    "Hello", "world", "we", "I", "Mr", "e.g", "3.14", "2", "J", "x,y",
    ".", ",", ";", ":", "!", "?", "...", "…", "。", '"', ")",
    " ", " ", " ", "  ", "\n", "\t",
    "<Joe>", "</Joe>", "<Big Voice>", "<",
]  # fmt: skip
MARKDOWN_TOKENS = [">", "*", "**", "`", "# ", "- ", "\n- ", "\n# ", "\n1. "]


def split_at(text: str, cuts: list[int]) -> list[str]:
    bounds = [0, *sorted({min(c, len(text)) for c in cuts}), len(text)]
    return [text[a:b] for a, b in itertools.pairwise(bounds)]


# (min_words, first_min_words, max_chars)
configs = st.tuples(st.integers(1, 6), st.integers(1, 4), st.integers(4, 80))


def chunks_with(text: str, config: tuple[int, int, int], pieces: list[str] | None = None) -> list[str]:
    min_words, first_min_words, max_chars = config
    return chunks(
        text, pieces=pieces, min_words=min_words, first_min_words=first_min_words, max_chars=max_chars
    )


@settings(max_examples=400, deadline=None)
@given(
    tokens=st.lists(st.sampled_from(TOKENS + MARKDOWN_TOKENS), max_size=60),
    cuts=st.lists(st.integers(0, 400), max_size=20),
    config=configs,
)
def test_any_split_gives_the_same_chunks(
    tokens: list[str], cuts: list[int], config: tuple[int, int, int]
) -> None:
    text = "".join(tokens)
    whole = chunks_with(text, config)
    assert chunks_with(text, config, split_at(text, cuts)) == whole
    assert chunks_with(text, config, list(text)) == whole
    assert all(c and c == c.strip() for c in whole)


@settings(max_examples=400, deadline=None)
@given(text=st.text(max_size=120), cuts=st.lists(st.integers(0, 120), max_size=10))
def test_any_split_of_arbitrary_text_gives_the_same_chunks(text: str, cuts: list[int]) -> None:
    assert chunks(text, pieces=split_at(text, cuts)) == chunks(text)


@settings(max_examples=400, deadline=None)
@given(tokens=st.lists(st.sampled_from(TOKENS), max_size=60), config=configs)
def test_chunks_join_back_to_the_normalized_text(tokens: list[str], config: tuple[int, int, int]) -> None:
    text = "".join(tokens)
    out = chunks_with(text, config)
    assert " ".join(out) == " ".join(text.split())
    tags = re.findall(r"</?[^<>\s/][^<>\n]*>", text)
    assert [t for c in out for t in re.findall(r"</?[^<>\s/][^<>\n]*>", c)] == tags
