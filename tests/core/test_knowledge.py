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


@pytest.mark.parametrize(
    ("word", "key"),
    [
        ("kilometers", "klmtrs"),
        ("chronometers", "krnmtrs"),
        ("restrooms", "rstrms"),
        ("Vossberg", "fsprk"),  # v/f, b/p, g/k alike; the double s once
        ("photography", "ftkrf"),
        ("knight", "nt"),
        ("entrance", "antrns"),  # a first vowel is kept as "a"
        ("", ""),
    ],
)
def test_sound_key(word: str, key: str) -> None:
    assert kn.sound_key(word) == key


@pytest.mark.parametrize(
    ("a", "b", "alike"),
    [
        ("kilometers", "chronometers", True),  # 2 edits in 7
        ("lastrooms", "restrooms", False),  # another first sound (trigrams match it instead)
        ("thermometers", "chronometers", False),
        ("centimeters", "chronometers", False),
        ("trend", "tram", False),
        ("capital", "entrance", False),
        ("vosberg", "vossberg", True),
    ],
)
def test_sounds_alike(a: str, b: str, alike: bool) -> None:
    assert kn.sounds_alike(a, b) is alike
    assert kn.edit_distance(a, b) == kn.edit_distance(b, a)


MUSEUM_TEXT = (
    "The Marine Chronometer Room holds 80 ship chronometers. Toilets: see the restrooms. "
    "The nearest car park is 300 metres away. The cloakroom is left of the front desk. "
    "Last admission is at 5 pm. The Cuckoo Gallery has a reading room. Tram line 4 stops here."
)


@pytest.mark.parametrize(
    ("question", "expected"),
    [
        ("We're on the kilometers.", ["chron"]),  # sounds alike, trigrams 0.5
        ("Where are the last rooms?", ["restr"]),  # two known words joined
        ("Where's the cloak room?", ["cloak"]),
        # near misses that must not be rewritten
        ("Where are the thermometers?", []),
        ("How many centimeters is it?", []),
        ("How many kilograms does it weigh?", []),
        ("Where are the barometers?", []),
        ("Which trend on to the museum.", []),  # too far from "tram"
        ("Is the last room free?", []),  # known words, nothing joined like them
        ("Where is the reading room?", []),
        ("The last, rooms", []),  # a comma between: not joined
    ],
)
def test_fuzzy_terms_by_sound_and_joined_known_words(question: str, expected: list[str]) -> None:
    fuzzy = kn.FuzzyTerms(kn.words(MUSEUM_TEXT), kn.tokens(MUSEUM_TEXT))
    assert fuzzy.expand(question) == expected


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
    both = kn.select_sentences(chunks, kn.tokens("adult ticket or child price"), bm.idf, 400, relative=0.4)
    # "price" is in no chunk: "pay" and "costs" stand for it (EXPANSIONS), the rarer "pay" first
    assert both == ["Children pay 7 euros.", "Tickets: An adult ticket costs 14 euros."]
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


def test_the_facts_follow_the_question() -> None:
    text = kn.knowledge_question(["Tickets cost 14 euros.", "Children pay 7."], "How much?")
    assert text == (
        "Question: How much?\nInformation: Tickets cost 14 euros. Children pay 7.\n"
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


@pytest.mark.parametrize(
    ("question", "expected"),
    [
        ("How old is the tower clock?", ["tower", "clock"]),  # not "the old harbour"
        ("How much is the family ticket?", ["famil", "ticke"]),
        ("How many cuckoo clocks?", ["cucko", "clock"]),
        ("How long does the tour last?", ["tour", "last"]),
        ("How late are you open?", ["late", "open"]),  # "late" is not a mere question form
        ("Is the old harbour far?", ["old", "harbo", "far"]),  # not after "how": content words
    ],
)
def test_question_tokens_leave_out_the_word_after_how(question: str, expected: list[str]) -> None:
    assert kn.question_tokens(question) == expected


@pytest.mark.parametrize(
    ("question", "expected"),
    [
        ("How old is the tower clock?", True),
        ("When is the cuckoo chorus?", True),
        ("What time is the tour?", True),
        ("How much do students pay?", True),
        ("Who founded the museum?", False),
        ("Where can I park my car?", False),
        ("Is the whenua exhibit open?", False),
    ],
)
def test_expects_number(question: str, expected: bool) -> None:
    assert kn.expects_number(question) is expected


def test_a_question_asking_for_a_number_prefers_the_sentence_stating_one_among_equals() -> None:
    chunks = [
        "Winding Day: visitors may wind the tower clock themselves.",
        "The hall shows the tower clock, built in 1741.",
    ]
    bm = kn.Bm25([kn.tokens(c) for c in chunks] + [["hall"], ["day"]])
    query = kn.question_tokens("How old is the tower clock?")
    assert kn.select_sentences(chunks, query, bm.idf, 400)[0].startswith("Winding Day")
    assert kn.select_sentences(chunks, query, bm.idf, 400, prefer_numbers=True) == [
        "The hall shows the tower clock, built in 1741.",
        "Winding Day: visitors may wind the tower clock themselves.",
    ]
    # a better-scoring sentence still wins: the preference only breaks ties
    more = ["The tower clock in the garden strikes the hour.", *chunks]
    bm3 = kn.Bm25([kn.tokens(c) for c in more] + [["day"]])
    garden = kn.question_tokens("How old is the tower clock in the garden?")
    assert kn.select_sentences(more, garden, bm3.idf, 400, prefer_numbers=True)[0] == more[0]


@pytest.mark.parametrize(
    ("text", "numbers", "names"),
    [
        ("It costs 14 euros, or thirty-five for a family.", {14, 35}, set()),
        ("Open until nine, at noon and at 10:30.", {9, 12, 10, 30}, set()),
        ("It is on the second floor.", {2}, set()),
        ("Carried by Captain Ilse Marrow's crew.", set(), {"captain", "ilse", "marrow"}),
        ("The shop. Tickets: Sold here. I'm sure", set(), set()),  # sentence starts, "I'm"
        ("Captain Marrow is the one who sailed twenty six days", {26}, {"marrow"}),  # "one": a pronoun
        ("", set(), set()),
    ],
)
def test_specifics_are_the_numbers_and_names_a_text_states(
    text: str, numbers: set[int], names: set[str]
) -> None:
    found = kn.specifics(text)
    assert found.numbers == numbers and found.names == names


STUDENTS = ["Students and seniors over 65 pay 10 euros.", "An adult ticket costs 14 euros."]
CONTEXT = "You are the Harbourlight kiosk.\nHow much do students pay?"


@pytest.mark.parametrize(
    ("reply", "covered", "wants_number", "verdict", "unsupported"),
    [
        ("Students pay 10 euros.", 1.0, True, "grounded", ()),
        ("Students pay ten euros.", 1.0, True, "grounded", ()),  # a number word for the digits
        ("Students pay 10 euros at the Harbourlight.", 1.0, True, "grounded", ()),  # from the prompt
        ("Students pay 12 euros.", 1.0, True, "contradicts", ("12",)),
        ("Students pay 10 euros at the Louvre.", 1.0, True, "contradicts", ("louvre",)),
        ("The answer is: 14 euros.", 1.0, True, "omits", ("10", "65")),  # the other fact's number
        ("I do not know.", 1.0, False, "omits", ("10", "65")),
        # the facts barely cover the question: only inventions are judged
        ("Students pay 12 euros.", 0.4, True, "invents", ("12",)),
        (
            "The address is 123 Elm Street, New York.",
            0.2,
            False,
            "invents",
            ("123", "elm", "new", "street", "york"),
        ),
        ("Students pay 10 euros at the Harbourlight.", 0.4, True, "supported", ()),  # given: spoken
        ("I do not know.", 0.4, True, "supported", ()),
        ("Adults pay fourteen euros.", 0.4, True, "supported", ()),  # 14 is in the facts
    ],
)
def test_judge_reply(
    reply: str, covered: float, wants_number: bool, verdict: str, unsupported: tuple[str, ...]
) -> None:
    found = kn.judge_reply(reply, STUDENTS, CONTEXT, covered, wants_number)
    assert (found.verdict, found.unsupported) == (verdict, unsupported)
    assert found.replaced is (verdict in ("contradicts", "omits", "invents"))
    assert found.passes is not found.replaced


@pytest.mark.parametrize(
    ("reply", "verdict"),
    [
        ("We're on the 1.5 kilometers.", kn.Grounding("invents", ("1", "5"))),
        ("The museum is in Paris, not here.", kn.Grounding("invents", ("paris",))),
        ("I don't know where the kilometers are.", kn.Grounding("supported")),
        ("You can ask at the Harbourlight kiosk.", kn.Grounding("supported")),  # the prompt's name
        ("There are 3 kilometers.", kn.Grounding("invents", ("3",))),
        ("Try three of them.", kn.Grounding("invents", ("3",))),  # a number word
        ("Go to the one on the left.", kn.Grounding("supported")),  # "one" is a pronoun
    ],
)
def test_with_nothing_retrieved_only_inventions_are_judged(reply: str, verdict: kn.Grounding) -> None:
    assert kn.judge_reply(reply, [], f"{CONTEXT}\nWe're on the kilometers.", 0.0) == verdict


@pytest.mark.parametrize(
    ("language", "configured", "line"),
    [
        ("en", None, kn.KNOWLEDGE_FALLBACKS["en"]),
        ("de", None, kn.KNOWLEDGE_FALLBACKS["de"]),
        ("pt-br", None, kn.KNOWLEDGE_FALLBACKS["pt"]),
        ("sv", None, kn.KNOWLEDGE_FALLBACKS["en"]),
        ("sv", {"sv": "Det vet jag inte."}, "Det vet jag inte."),
        ("fr", {"en": "Ask at the desk."}, "Ask at the desk."),
        ("fr", {"de": "Frag am Empfang."}, "Frag am Empfang."),  # the only one configured
    ],
)
def test_fallback_text(language: str, configured: dict[str, str] | None, line: str) -> None:
    assert kn.fallback_text(language, configured) == line


def test_judge_reply_by_names_and_by_the_kind_of_question() -> None:
    photos = ["Photography without flash is allowed except in the Marine Chronometer Room."]
    assert (
        kn.judge_reply("Yes, but not in the Marine Chronometer Room.", photos, "", 1.0).verdict == "grounded"
    )
    assert kn.judge_reply("The answer is yes.", photos, "", 1.0).verdict == "omits"
    chorus = ["It holds 212 cuckoo clocks; at noon they all call together in the Cuckoo Chorus."]
    invented = "The Cuckoo Chorus is a popular musical."
    assert kn.judge_reply(invented, chorus, "", 1.0, wants_number=False).verdict == "grounded"
    assert kn.judge_reply(invented, chorus, "", 1.0, wants_number=True).verdict == "omits"
    assert kn.judge_reply("At noon.", chorus, "", 1.0, wants_number=True).verdict == "grounded"
    # no number, no name: the reply must share a word of the fact that the question lacks
    plain = ["Wheelchairs can be borrowed for free at the front desk."]
    asked = "Can I borrow a wheelchair?"
    assert kn.judge_reply("Yes, for free.", plain, asked, 1.0).verdict == "grounded"
    assert kn.judge_reply("The information is incomplete.", plain, asked, 1.0) == kn.Grounding(
        "omits", ("desk", "free", "front")
    )
    assert kn.judge_reply("Yes.", ["Wheelchairs can be borrowed."], asked, 1.0).verdict == "not_judged"
    assert kn.judge_reply("Anything.", [], "", 1.0).verdict == "supported"  # no facts: inventions only


def test_coverage_is_the_share_of_the_question_weight_a_fact_holds() -> None:
    idf = {"lost": 2.0, "prope": 2.0, "keep": 1.0}.get

    def weight(term: str) -> float:
        return idf(term) or 0.0

    fact = "Lost property is kept at the front desk."
    assert kn.coverage(fact, ["lost", "prope"], weight, 3.0) == 1.0
    assert kn.coverage(fact, ["lost", "prope", "keep"], weight, 3.0) == pytest.approx(0.8)
    assert kn.coverage(fact, ["lost", "prope", "scarf"], weight, 3.0) == pytest.approx(4 / 7)  # unknown
    assert kn.coverage(fact, [], weight, 3.0) == 0.0


@pytest.mark.parametrize(
    ("fact", "spoken"),
    [
        ("Director: The museum director is Dr. Amara Quist.", "The museum director is Dr. Amara Quist."),
        ("Wi-Fi: the free network needs no password.", "Wi-Fi: the free network needs no password."),
        ("Lost property is kept for 30 days.", "Lost property is kept for 30 days."),
    ],
)
def test_spoken_fact_drops_a_heading(fact: str, spoken: str) -> None:
    assert kn.spoken_fact(fact) == spoken


def guard_run(
    pieces: list[str], facts: list[str] = STUDENTS, wants_number: bool = True
) -> tuple[list[str], str, kn.GroundingGuard]:
    guard = kn.GroundingGuard(facts, CONTEXT, 1.0, wants_number)
    out = []
    for piece in pieces:
        out.append(guard.feed(piece))
        if guard.done:
            break
    return out, guard.finish(), guard


def test_the_guard_holds_the_start_until_a_fact_is_said_then_releases_it_by_sentence() -> None:
    out, rest, guard = guard_run(["Stud", "ents pay", " 10 euros.", " It is", " cheap. And"])
    assert out == ["", "", "Students pay 10", " euros. ", "It is cheap. "]  # "10" is the fact's
    assert rest == "And" and guard.decision == kn.Grounding("grounded") and not guard.done
    # a number is judged once complete: "1" could still become "14"
    out, rest, guard = guard_run(["Students pay 1", "0 euros", " today."])
    assert out == ["", "Students pay 10", ""] and rest == " euros today."
    # nothing to check in the facts: nothing is held
    plain = kn.GroundingGuard(["Students pay."], CONTEXT, 1.0)
    assert plain.decision == kn.Grounding("not_judged") and plain.feed("It sells") == "It sells"


def test_the_guard_replaces_a_reply_that_contradicts_or_omits_and_stops_reading() -> None:
    out, rest, guard = guard_run(["Students pay 12", " euros. More", " text."])
    assert out == ["", ""] and rest == "" and guard.done
    assert guard.decision == kn.Grounding("contradicts", ("12",))
    assert guard.replacement == "Students and seniors over 65 pay 10 euros."
    out, rest, guard = guard_run(["I'm sorry for your loss, but I cannot help."])
    assert out == [""] and rest == "" and guard.decision is not None and guard.decision.verdict == "omits"


def test_the_guard_cuts_a_later_sentence_that_invents_a_number() -> None:
    out, rest, guard = guard_run(["Students pay 10 euros. They", " also pay 99 euros. Bye."])
    assert out == ["Students pay 10 euros.", ""] and rest == ""
    assert guard.cut == kn.Grounding("contradicts", ("99",)) and guard.done


def test_the_guard_judges_a_short_reply_at_its_end_and_passes_an_unjudged_one() -> None:
    out, rest, guard = guard_run(["Ten", " euros."])
    assert out == ["", "Ten"] and rest == " euros." and guard.decision == kn.Grounding("grounded")
    out, rest, guard = guard_run(["It is", " cheap."])  # fewer words than a judged sentence needs
    assert out == ["", ""] and rest == "" and guard.decision == kn.Grounding("omits", ("10", "65"))
    out, rest, guard = guard_run(["Yes."], wants_number=False)
    assert rest == "" and guard.decision is not None and guard.decision.verdict == "omits"
    plain = kn.GroundingGuard(["Wheelchairs can be borrowed."], "Can I borrow a wheelchair?", 1.0)
    assert plain.feed("Yes. Then 99 more.") == "Yes. Then 99 more."  # nothing to check: unjudged
    assert plain.finish() == "" and plain.decision == kn.Grounding("not_judged")
    held = kn.GroundingGuard(STUDENTS, CONTEXT, 1.0)
    assert held.feed("Let me") == "" and held.release() == "Let me"  # a tool call follows


def test_the_guard_does_not_end_a_sentence_at_an_abbreviation_and_bounds_a_run_on() -> None:
    director = ["The museum director is Dr. Amara Quist."]
    guard = kn.GroundingGuard(director, "Who is the director?", 1.0)
    assert guard.feed("The museum director is Dr. ") == ""  # not a sentence end: still held
    assert guard.feed("Amara Quist. ") == "The museum director is Dr. Amara Quist."
    assert guard.decision == kn.Grounding("grounded")
    run_on = "and " * 80  # no sentence end: released in pieces of at most GROUNDING_MAX_CHARS
    out = guard.feed(run_on)
    assert out.startswith(" and") and 0 < len(out) <= kn.GROUNDING_MAX_CHARS + 1
    assert len(guard.finish()) <= kn.GROUNDING_MAX_CHARS


def test_a_weak_match_holds_each_sentence_and_replaces_an_invention_with_the_fallback() -> None:
    weak = kn.GroundingGuard(STUDENTS, CONTEXT, 0.2, fallback="I don't know.")
    assert weak.feed("The address") == "" and weak.feed(" is 123") == ""  # "123" may go on
    assert weak.feed(" Elm") == ""  # an invention decides before the sentence ends
    assert weak.done and weak.decision == kn.Grounding("invents", ("123",))
    assert weak.replacement == "I don't know." and weak.finish() == ""
    # nothing retrieved at all: the same check against the conversation alone
    none = kn.GroundingGuard([], CONTEXT, 0.0, fallback="I don't know.")
    assert none.feed("We are on the") == "" and none.feed(" 1.5 kilometers.") == ""
    assert none.done and none.replacement == "I don't know."


def test_a_weak_match_speaks_what_invents_nothing_and_cuts_a_later_invention() -> None:
    weak = kn.GroundingGuard(STUDENTS, CONTEXT, 0.2)
    assert weak.feed("I do not know that, sorry") == ""  # held: a later word could invent
    assert weak.feed(". Students pay 10") == "I do not know that, sorry."
    assert weak.decision == kn.Grounding("supported")
    assert weak.feed(" euros. It was built") == " Students pay 10 euros. "
    assert weak.feed(" in 1741. Bye") == "" and weak.done  # cut: nothing more is spoken
    assert weak.cut == kn.Grounding("invents", ("1741",)) and weak.finish() == ""
    short = kn.GroundingGuard([], CONTEXT, 0.0)
    assert short.feed("No.") == "" and short.finish() == "No."  # judged at its end
    assert short.decision == kn.Grounding("supported")


@pytest.mark.parametrize(
    ("term", "expected"),
    [
        ("addre", {"avenu", "lane", "locat", "quay", "road", "situa", "squar", "stand", "stree"}),
        ("cost", {"charg", "euro", "fee", "free", "pay", "price"}),
        ("euro", None),  # one way: "euros" does not find "cost"
        ("toile", {"bathr", "lavat", "restr", "wc"}),
        ("kid", {"child"}),
        ("clock", None),
    ],
)
def test_expansions(term: str, expected: set[str] | None) -> None:
    assert kn.EXPANSIONS.get(term) == expected


def test_an_expansion_counts_once_and_less_than_the_word_itself() -> None:
    docs = [["park", "car"], ["child", "pay", "euro", "free"], ["ticke", "cost"], ["museu"]]
    bm = kn.Bm25(docs)
    plain = bm.scores(["park", "cost"])
    wide = bm.scores(["park", "cost"], expand=True)
    assert plain.keys() == {0, 2} and wide.keys() == {0, 1, 2}
    assert wide[2] == plain[2]  # "cost" itself: its expansions do not add up
    pay = max(bm.scores(["pay"])[1], bm.scores(["euro"])[1], bm.scores(["free"])[1])
    assert wide[1] == pytest.approx(kn.EXPANSION_WEIGHT * pay)  # the best expansion, once
    assert wide[0] > wide[1]  # the question's own word first
    have = {"child", "pay", "euro"}
    assert kn.term_weight("cost", have, bm.idf) == kn.EXPANSION_WEIGHT * bm.idf("pay")
    assert kn.term_weight("pay", have, bm.idf) == bm.idf("pay")
    assert kn.term_weight("park", have, bm.idf) == 0.0


@pytest.mark.parametrize(
    ("question", "heads"),
    [
        ("How much does a child ticket cost?", {"ticke": "child", "cost": "ticke"}),
        ("How old is the tower clock?", {"clock": "tower"}),
        ("How many cuckoo clocks do you have?", {"clock": "cucko"}),  # not "many cuckoo"
        ("How much is the children's workshop?", {}),  # "children's": not two plain words
        (
            "I lost my scarf. How long do you keep lost property?",
            {"lost": "keep", "prope": "lost"},
        ),  # not "scarf how"
        ("What is the price of admission?", {}),
        ("Is tram 4 the first tram?", {}),  # numbers and ordinals do not modify
    ],
)
def test_compounds_are_two_adjacent_content_words(question: str, heads: dict[str, str]) -> None:
    assert kn.compounds(question) == heads


@pytest.mark.parametrize(
    ("sentence", "has_ticket"),
    [
        ("A family ticket for two adults and children costs 35 euros.", False),  # another ticket
        ("A child ticket costs 7 euros.", True),
        ("Tickets: a family ticket costs 35 euros.", True),  # also named plainly
        ("The ticket, family size, costs 35 euros.", True),
        ("Every ticket is sold at the desk.", True),  # "every" is no modifier
        ("Family, ticket and cost.", True),  # a comma between: not a compound
    ],
)
def test_a_compound_head_named_with_another_modifier_does_not_count(sentence: str, has_ticket: bool) -> None:
    heads = kn.compounds("How much does a child ticket cost?")
    assert ("ticke" in kn.sentence_terms(sentence, heads)) is has_ticket
    assert "ticke" in kn.sentence_terms(sentence)  # without a question's compounds: every word


def test_synonyms_and_compounds_pick_the_sentence_that_answers() -> None:
    prices = (
        "An adult ticket costs 14 euros. Children under 6 go free; children "
        "from 6 to 17 pay 7 euros. A family ticket for two adults and up to three children costs 35 euros."
    )
    visiting = "The museum stands at 12 Ropewalk Quay, next to the lighthouse."
    director = "Director: The museum director is Dr. Amara Quist."
    chunks = [prices, visiting, director, "The museum shop is next to the exit."]
    bm = kn.Bm25([kn.tokens(c) for c in chunks])
    child = "How much does a child ticket cost?"
    query = kn.question_tokens(child)
    heads = kn.compounds(child)
    pick = kn.select_sentences([prices], query, bm.idf, 400, prefer_numbers=True, heads=heads)
    assert pick[0] == "Children under 6 go free; children from 6 to 17 pay 7 euros."
    # without the compound rule the family ticket (child, ticket, cost) wins
    plain = kn.select_sentences([prices], query, bm.idf, 400, prefer_numbers=True)
    assert plain[0].startswith("A family ticket")
    # a sentence is scored with its section's heading: the child price under "Tickets and
    # prices" before the children's workshop that "costs" 6 euros
    workshop = "Children: The workshop for children aged 7 to 12 costs 6 euros."
    sections = ["Tickets and prices: " + prices, workshop]
    bm2 = kn.Bm25([kn.tokens(c) for c in [*sections, visiting, director]])
    pick = kn.select_sentences(sections, query, bm2.idf, 400, prefer_numbers=True, heads=heads)
    assert pick[0] == "Children under 6 go free; children from 6 to 17 pay 7 euros."
    no_heading = kn.select_sentences(
        [prices, workshop], query, bm2.idf, 400, prefer_numbers=True, heads=heads
    )
    assert no_heading[0] == workshop
    address = kn.question_tokens("What is the address of the museum?")
    ranked = bm.top(address, 2, expand=True)
    assert chunks[ranked[0][0]] == visiting  # "stands", "quay" for "address"
    assert bm.top(address, 1)[0][0] != 1  # the question's own words alone: any museum chunk
    assert kn.coverage(visiting, address, bm.idf, bm.max_idf) == 1.0
    assert kn.coverage(director, address, bm.idf, bm.max_idf) < kn.GROUNDING_COVERAGE
