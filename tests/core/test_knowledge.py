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


def test_prompt_documents_text() -> None:
    assert kn.prompt_documents_text([("Hours", " Open 10-6.\n")]) == "## Hours\nOpen 10-6."
    assert kn.prompt_documents_text([]) == ""


VENUE = """# Visiting the Harbourlight Museum

The Harbourlight Museum stands at 12 Ropewalk Quay, next to the
Vossberg tower. Tickets are sold at the desk; the Wi-Fi is Harbourlight-Guest.

## Tickets
Tickets cost 14 euros on Monday. The museum director is Dr. Amara Quist.
The Vossberg clock strikes every hour. Tickets for children are cheaper.
"""


def test_distinctive_terms_are_the_names_most_frequent_first_and_bounded() -> None:
    terms = kn.distinctive_terms([VENUE], 200)
    assert terms[:2] == ["Harbourlight Museum", "Vossberg"]
    assert set(terms) == {
        "Harbourlight Museum",
        "Vossberg",
        "Ropewalk Quay",
        "Wi-Fi",
        "Harbourlight-Guest",
        "Amara Quist",
    }  # not "Tickets" (heads a line, also lowercase), "Monday" (known to every recogniser), "Dr"
    assert kn.distinctive_terms([VENUE], 30) == ["Harbourlight Museum", "Vossberg"]
    assert kn.distinctive_terms([VENUE], 4) == []
    assert kn.distinctive_terms(["plain words only. Nothing Else"], 100) == ["Nothing Else"]


@pytest.mark.parametrize(
    ("question", "expected"),
    [
        ("How old is the Vosberg clock?", ["vossb"]),  # one letter missing
        ("Who carried the Albert Ross chronometer?", ["albat"]),  # a name split in two words
        ("Where is the Zaltmarket car park?", ["saltm"]),  # the stem differs from its start
        ("How old is the Vossberg clock?", []),  # every word known already
        ("Where is the bakery?", []),  # nothing like it
    ],
)
def test_fuzzy_terms_map_a_misheard_word_to_the_known_one(question: str, expected: list[str]) -> None:
    text = "The Vossberg clock. The Albatross chronometer. The Saltmarket car park. Old clocks."
    known = kn.tokens(text)
    fuzzy = kn.FuzzyTerms(kn.words(text), known)
    assert fuzzy.expand(question) == expected
    assert fuzzy.closest("xyzzy") is None


def test_sentences_keep_abbreviations_and_cut_lines() -> None:
    assert kn.sentences("Director: It is Dr. Amara Quist. Founded in 1952!\nNext line") == [
        "Director: It is Dr. Amara Quist.",
        "Founded in 1952!",
        "Next line",
    ]
    assert kn.sentences("") == []


def test_select_sentences_gives_the_best_sentences_within_the_budget() -> None:
    chunks = [
        "Tickets: An adult ticket costs 14 euros. Children pay 7 euros. The shop sells books.",
        "Q: How much is a ticket?\nA: An adult ticket costs 14 euros.",
    ]
    bm = kn.Bm25([kn.tokens(c) for c in chunks] + [["book"], ["shop"]])
    query = kn.tokens("How much does an adult ticket cost?")
    # the FAQ chunk gives its answer (scored with its question too), once: the page's sentence
    # saying the same is left out; "Children pay" shares no term
    assert kn.select_sentences(chunks, query, bm.idf, 400) == ["An adult ticket costs 14 euros."]
    both = kn.select_sentences(chunks, kn.tokens("adult ticket or child price"), bm.idf, 400, relative=0.1)
    assert both == ["Tickets: An adult ticket costs 14 euros.", "Children pay 7 euros."]
    # a question that only the FAQ's phrasing has the words of still gets the FAQ's answer
    faq = [
        "The Workshop: restorers at work in the basement room.",
        "Q: Where are the restrooms?\nA: By the stairs.",
    ]
    bm2 = kn.Bm25([kn.tokens(c) for c in faq] + [["basem"]])
    assert kn.select_sentences(faq, kn.tokens("restrooms?"), bm2.idf, 400) == ["By the stairs."]
    assert kn.select_sentences(chunks, query, bm.idf, 20) == ["An adult ticket"]  # cut at a word
    assert kn.select_sentences(chunks, ["zebra"], bm.idf, 400) == ["Tickets: An adult ticket costs 14 euros."]
    assert kn.select_sentences([], query, bm.idf, 400) == []


def test_the_facts_go_right_before_the_question() -> None:
    text = kn.knowledge_question(["Tickets cost 14 euros.", "Children pay 7."], "How much?")
    assert text == (
        "Information: Tickets cost 14 euros. Children pay 7.\nQuestion: How much?\n"
        "Answer using the information."
    )
    assert kn.knowledge_question([], "How much?") == "How much?"


@pytest.mark.parametrize(
    ("pieces", "spoken"),
    [
        (["Infor", "mation: The shop", " is Second Hand."], ["", "The shop", " is Second Hand."]),
        ([" information:", " 14 euros."], ["", "14 euros."]),
        (["It", "'s free."], ["It", "'s free."]),  # not the label: nothing held back
        (["In", " the basement."], ["", "In the basement."]),  # held while it could be the label
        (["Info"], [""]),  # the reply ended inside a possible label: finish() gives it back
    ],
)
def test_echo_strip_drops_the_label_a_small_model_repeats(pieces: list[str], spoken: list[str]) -> None:
    echo = kn.EchoStrip()
    assert [echo.feed(p) for p in pieces] == spoken
    assert echo.finish() == ("Info" if pieces == ["Info"] else "")
    label_only = kn.EchoStrip()
    assert label_only.feed("Information:") == "" and label_only.finish() == ""
