"""The pure knowledge-base logic: tokens, chunking, BM25 ranking, FAQ matching, prompt assembly."""

from __future__ import annotations

import pytest

from appliance.core import knowledge as kn


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("What are the opening hours?", ["open", "hour"]),
        ("Tickets for the children", ["ticke", "child"]),
        ("Can I take photos? Photography!", ["take", "photo", "photo"]),
        ("", []),
        ("the of and", []),
        ("Wi-Fi 12 Ropewalk_Quay", ["wi", "fi", "12", "ropew", "quay"]),
    ],
)
def test_tokens(text: str, expected: list[str]) -> None:
    assert kn.tokens(text) == expected


def test_chunks_keep_their_heading_and_respect_the_size() -> None:
    text = "# Hours\n\nOpen 10 to 6.\n\nClosed Tuesday.\n\n## Prices\n\nAdult 14 euros.\n"
    assert kn.chunk_text(text, 200) == ["Hours: Open 10 to 6.\nClosed Tuesday.", "Prices: Adult 14 euros."]


def test_paragraphs_are_packed_up_to_the_size_then_split() -> None:
    paragraphs = [f"Paragraph {i} " + "word " * 20 for i in range(6)]  # ~125 characters each
    chunks = kn.chunk_text("\n\n".join(paragraphs), 300)
    assert len(chunks) == 3
    assert all(len(c) <= 300 for c in chunks)
    assert "Paragraph 0" in chunks[0] and "Paragraph 1" in chunks[0] and "Paragraph 2" in chunks[1]


def test_a_long_paragraph_is_cut_at_sentences_and_spaces() -> None:
    sentence = "The clock strikes every hour of the day. "
    chunks = kn.chunk_text(sentence * 40, 200)
    assert all(len(c) <= 200 for c in chunks)
    assert all(c.endswith("day.") for c in chunks)
    long_word_run = "x" * 500
    assert all(len(c) <= 100 for c in kn.chunk_text(long_word_run, 100))
    with pytest.raises(ValueError, match="too small"):
        kn.chunk_text("text", 10)


def test_bm25_ranks_the_document_with_the_rare_words_first() -> None:
    docs = [
        kn.tokens("The café serves coffee and almond cake on the ground floor."),
        kn.tokens("Tickets: adult 14 euros, family ticket 35 euros."),
        kn.tokens("The tower clock weighs four tonnes."),
        kn.tokens("The museum shop sells books. The museum café is near."),
    ]
    bm25 = kn.Bm25(docs)
    assert [i for i, _ in bm25.top(kn.tokens("How much is a family ticket?"), 2)] == [1]
    ranked = bm25.top(kn.tokens("almond cake café"), 4)
    assert ranked[0][0] == 0 and ranked[0][1] > ranked[1][1] > 0
    assert bm25.top(kn.tokens("spaceship"), 3) == []
    assert kn.Bm25([]).top(kn.tokens("anything"), 3) == []


FAQ = [
    kn.FaqEntry(("How much is a ticket?", "How much does an adult ticket cost?"), "14 euros."),
    kn.FaqEntry(("Where is the toilet?",), "Next to the stairs."),
    kn.FaqEntry(("When is the guided tour?",), "At 2 pm."),
]


@pytest.mark.parametrize(
    ("question", "threshold", "entry"),
    [
        ("Where is the toilet?", 0.62, 1),  # the same words
        ("where's the toilet please", 0.62, 1),  # stop words and contractions do not count
        ("How much does an adult ticket cost", 0.62, 0),  # the second phrasing
        ("How much does a child ticket cost?", 0.62, None),  # another question: below 0.62
        ("How much does a child ticket cost?", 0.4, 0),  # ... unless the threshold is lowered
        ("What time is the guided tour?", 0.62, 2),
        ("How long does the guided tour last?", 0.62, None),
        ("Tell me about spaceships", 0.0, None),  # no shared word: never a match
        ("", 0.0, None),
    ],
)
def test_faq_threshold(question: str, threshold: float, entry: int | None) -> None:
    match = kn.FaqMatcher(FAQ).match(question, threshold)
    assert (match.entry if match else None) == entry


def test_faq_score_is_one_for_the_same_words_and_falls_with_extra_words() -> None:
    matcher = kn.FaqMatcher(FAQ)
    same = matcher.best("Where is the toilet")
    assert same is not None and same.score == 1.0 and same.question == "Where is the toilet?"
    more = matcher.best("Where is the toilet for the children")
    assert more is not None and 0 < more.score < 1.0


def test_knowledge_prompt_is_bounded_and_best_first() -> None:
    text = kn.knowledge_prompt(["first chunk " * 10, "second chunk " * 10], 150)
    assert text.startswith(kn.KNOWLEDGE_HEADER)
    body = text[len(kn.KNOWLEDGE_HEADER) :]
    assert "first chunk" in body and len(body) <= 150 + 10
    assert kn.knowledge_prompt([], 1000) == ""
    assert kn.knowledge_prompt(["a" * 50], 10) == ""


def test_prompt_documents_text() -> None:
    assert kn.prompt_documents_text([("Hours", " Open 10-6.\n")]) == "## Hours\nOpen 10-6."
    assert kn.prompt_documents_text([]) == ""
