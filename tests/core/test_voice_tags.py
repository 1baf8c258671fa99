"""Multi-voice tags: the seeds' rules and the cases they leave open, as a table; any split of a
reply into streamed deltas renders the same segments (hypothesis)."""

from __future__ import annotations

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from appliance.core.voice_tags import (
    MAX_NAME_CHARS,
    Segment,
    VoiceTagParser,
    parse,
    plain_text,
    speakable,
    strip_markup,
)

LABELS = frozenset({"Joe", "Narrator", "Spanish", "2nd", "Old Man"})
D = None  # the default voice

# (case, reply, segments as spoken, agent_response text)
CASES: list[tuple[str, str, list[tuple[str | None, str]], str]] = [
    ("no tags: default voice", "Hello there.", [(D, "Hello there.")], "Hello there."),
    ("one tagged section", "<Joe>Hi!</Joe>", [("Joe", "Hi!")], "Hi!"),
    (
        "text outside tags is the default voice",
        "The teacher said, <Spanish>¡Hola estudiantes!</Spanish> Then we left.",
        [(D, "The teacher said,"), ("Spanish", "¡Hola estudiantes!"), (D, "Then we left.")],
        "The teacher said, ¡Hola estudiantes! Then we left.",
    ),
    (
        "several voices in turn (seed example)",
        "<Narrator>Once upon a time...</Narrator>\n<Joe>I need the crystal!</Joe>",
        [("Narrator", "Once upon a time..."), ("Joe", "I need the crystal!")],
        "Once upon a time...\nI need the crystal!",
    ),
    (
        "mid-sentence switch",
        "He said <Joe>yes</Joe> and left.",
        [(D, "He said"), ("Joe", "yes"), (D, "and left.")],
        "He said yes and left.",
    ),
    (
        "labels are case-sensitive: <joe> is unknown",
        "<joe>Hi</joe> there",
        [(D, "Hi there")],
        "Hi there",
    ),
    (
        "unknown label: tags dropped, text in the default voice",
        "A <Bob>quiet</Bob> word.",
        [(D, "A quiet word.")],
        "A quiet word.",
    ),
    (
        "nested: the inner tags are dropped, the text stays in the outer voice",
        "<Joe>I said <Narrator>this</Narrator> twice</Joe> ok",
        [("Joe", "I said this twice"), (D, "ok")],
        "I said this twice ok",
    ),
    (
        "nested same label: the first close ends the section, the last is stray",
        "<Joe>a <Joe>b</Joe> c</Joe>",
        [("Joe", "a b"), (D, "c")],
        "a b c",
    ),
    (
        "unclosed tag at the end: spoken in its voice, the tag dropped",
        "Fine. <Joe>See you",
        [(D, "Fine."), ("Joe", "See you")],
        "Fine. See you",
    ),
    ("stray closing tag dropped", "</Joe>Hello</Narrator>", [(D, "Hello")], "Hello"),
    ("a `<` that is no tag stays text", "3 < 5 and 5 > 3", [(D, "3 < 5 and 5 > 3")], "3 < 5 and 5 > 3"),
    ("`<3` is text", "I <3 you", [(D, "I <3 you")], "I <3 you"),
    ("words in angle brackets are text", "a<b and c>d", [(D, "a<b and c>d")], "a<b and c>d"),
    ("space after `<` is text", "< Joe>x", [(D, "< Joe>x")], "< Joe>x"),
    (
        "self-closing and attribute tags are markup: dropped",
        'Wait<break time="1s"/> now <emphasis level="strong">go</emphasis>',
        [(D, "Wait now go")],
        "Wait now go",
    ),
    ("a label tag with attributes does not switch", '<Joe mood="sad">Hi</Joe>', [(D, "Hi")], "Hi"),
    ("whitespace before `>` is allowed", "<Joe >Hi</Joe >", [("Joe", "Hi")], "Hi"),
    ("a label starting with a digit", "<2nd>Me too.</2nd>", [("2nd", "Me too.")], "Me too."),
    ("unfinished tag at the end dropped", "Okay <Narr", [(D, "Okay")], "Okay"),
    ("unfinished closing tag at the end dropped", "<Joe>Okay</Jo", [("Joe", "Okay")], "Okay"),
    ("a lone `<` at the end stays", "less <", [(D, "less <")], "less <"),
    (
        "a voice change between words adds the space heard",
        "Hello<Joe>Hi</Joe>again",
        [(D, "Hello"), ("Joe", "Hi"), (D, "again")],
        "Hello Hi again",
    ),
    (
        "removing a dropped tag inserts nothing",
        "over<b>whelm</b>ing",
        [(D, "overwhelming")],
        "overwhelming",
    ),
    (
        "the same voice across a gap is one segment",
        "<Joe>One.</Joe> <Joe>Two.</Joe>",
        [("Joe", "One. Two.")],
        "One. Two.",
    ),
    ("an empty section says nothing", "<Joe></Joe>Hi", [(D, "Hi")], "Hi"),
    (
        "a name too long for a tag is text",
        f"<{'x' * (MAX_NAME_CHARS + 1)}>",
        [(D, f"<{'x' * (MAX_NAME_CHARS + 1)}>")],
        f"<{'x' * (MAX_NAME_CHARS + 1)}>",
    ),
    ("markup only", "<Joe></Joe><Bob/>", [], ""),
    (
        "a label with a space, written exactly",
        "<Old Man>Get off my lawn!</Old Man> he said.",
        [("Old Man", "Get off my lawn!"), (D, "he said.")],
        "Get off my lawn! he said.",
    ),
    (  # like `a<b and c>d`: not an element, so text (whitespace-normalized when spoken)
        "a spaced label written otherwise is not a tag",
        "<Old  Man>Hi",
        [(D, "<Old Man>Hi")],
        "<Old  Man>Hi",
    ),
]


@pytest.mark.parametrize(("reply", "segments", "response"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_edge_cases(reply: str, segments: list[tuple[str | None, str]], response: str) -> None:
    assert parse(reply, LABELS) == [Segment(v, t) for v, t in segments]
    text, parts = strip_markup(reply, LABELS)
    assert text == response
    assert parts == [Segment(v, t) for v, t in segments]


def test_no_labels_configured_every_tag_is_dropped() -> None:
    assert parse("<Joe>Hi</Joe> <b>there</b>", ()) == [Segment(None, "Hi there")]


def test_text_is_returned_as_soon_as_it_is_decided() -> None:
    p = VoiceTagParser(LABELS)
    assert p.feed("Hello ") == [Segment(None, "Hello ")]
    assert p.feed("<Jo") == []  # might be a tag
    assert p.voice is None
    assert p.feed("e>Once upon") == [Segment("Joe", "Once upon")]
    assert p.voice == "Joe"
    assert p.feed(" a time</") == [Segment("Joe", " a time")]
    assert p.feed("Joe> bye") == [Segment(None, " bye")]
    assert p.close() == []


def test_close_resets_to_the_default_voice() -> None:
    p = VoiceTagParser(LABELS)
    assert p.feed("<Joe>first reply") == [Segment("Joe", "first reply")]
    assert p.close() == []
    assert p.feed("second") == [Segment(None, "second")]
    assert p.close() == []


def test_dropped_tags_are_reported() -> None:
    p = VoiceTagParser(LABELS)
    p.feed("<Bob>x</Bob><Joe>y<Narrator>z</Joe></Joe> <Ab")
    p.close()
    assert p.dropped_tags == ["<Bob>", "</Bob>", "<Narrator>", "</Joe>", "<Ab"]


def test_speakable_and_plain_text() -> None:
    pieces = [Segment("Joe", "Hel"), Segment("Joe", "lo  "), Segment(None, " "), Segment("Joe", "you")]
    assert speakable(pieces) == [Segment("Joe", "Hello you")]
    assert plain_text(pieces) == "Hello   you"
    assert speakable([Segment(None, "  ")]) == []


# ---------------------------------------------------------------------------------- property
TOKENS = [
    "<Joe>", "</Joe>", "<Narrator>", "</Narrator>", "<Spanish>", "</Spanish>", "<2nd>", "</2nd>",
    "<joe>", "</joe>", "<Bob>", "</Bob>", "<br/>", '<break time="1s"/>', "<Joe >", "</Joe >",
    "Hello", "world", "¡Hola!", "yes", " ", "  ", ", ", ". ", "\n", "...", "é", "3", "2nd",
    "<Old Man>", "</Old Man>",
]  # fmt: skip
LITERAL_ANGLES = [
    "3 < 5",
    "<3",
    " <",
    "<",
    ">",
    "a<b and c>d",
    "</",
    "< Joe>",
    "<Jo",
    "<2",
    "<Old",
    " Man>",
    "<Old  Man>",
]


def render(deltas: list[str], labels: frozenset[str] = LABELS) -> tuple[list[Segment], list[Segment]]:
    """(raw pieces, speakable segments) of one reply streamed as `deltas`."""
    p = VoiceTagParser(labels)
    pieces: list[Segment] = []
    for delta in deltas:
        pieces += p.feed(delta)
    pieces += p.close()
    return pieces, speakable(pieces)


def chars(pieces: list[Segment]) -> list[tuple[str | None, str]]:
    return [(s.voice, c) for s in pieces for c in s.text]


def split(text: str, cuts: list[int]) -> list[str]:
    points = sorted({min(c, len(text)) for c in cuts})
    return [text[a:b] for a, b in zip([0, *points], [*points, len(text)], strict=True)]


replies = st.lists(
    st.one_of(st.sampled_from(TOKENS), st.sampled_from(LITERAL_ANGLES), st.text(max_size=6)), max_size=24
).map("".join)


@settings(max_examples=400, deadline=None)
@given(reply=replies, cuts=st.lists(st.integers(min_value=0, max_value=200), max_size=30))
@example(reply="Hi <Joe>there</Joe> you", cuts=list(range(30)))
@example(reply='a <break time="1s"/> b <Narrator>c</Narrator>', cuts=list(range(0, 60, 1)))
def test_every_split_renders_the_same_segments(reply: str, cuts: list[int]) -> None:
    whole_pieces, whole = render([reply])
    pieces, segments = render(split(reply, cuts))
    assert segments == whole
    assert chars(pieces) == chars(whole_pieces)  # same characters, same voices
    assert plain_text(pieces) == plain_text(whole_pieces)


@settings(max_examples=300, deadline=None)
@given(
    reply=st.lists(st.sampled_from(TOKENS), max_size=30).map("".join),
    cuts=st.lists(st.integers(min_value=0, max_value=300), max_size=40),
)
def test_markup_is_never_spoken(reply: str, cuts: list[int]) -> None:
    """Replies made of tags and text: no `<` or `>` ever reaches the voice or the transcript."""
    pieces, segments = render(split(reply, cuts))
    assert all("<" not in s.text and ">" not in s.text for s in pieces)
    assert all(s.voice in LABELS or s.voice is None for s in segments)
    assert "<" not in plain_text(pieces)
