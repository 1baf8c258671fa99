"""PLS pronunciation dictionaries: parsing, errors with file and line, applying to text, Arpabet
and IPA conversion to Piper's phoneme symbols."""

from __future__ import annotations

from pathlib import Path

import pytest

from appliance.core.pronunciation import (
    Lexicon,
    LexiconEntry,
    LexiconError,
    arpabet_to_ipa,
    ipa_to_voice,
    load_pls,
    parse_pls,
)

NS = 'xmlns="http://www.w3.org/2005/01/pronunciation-lexicon"'

# The platform's documented example, verbatim (seed digest §4.2).
PLATFORM_EXAMPLE = """<?xml version="1.0" encoding="UTF-8"?>
<lexicon version="1.0"
      xmlns="http://www.w3.org/2005/01/pronunciation-lexicon"
      xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"
      xsi:schemaLocation="http://www.w3.org/2005/01/pronunciation-lexicon
        http://www.w3.org/TR/2007/CR-pronunciation-lexicon-20071212/pls.xsd"
      alphabet="ipa" xml:lang="en-GB">
  <lexeme>
    <grapheme>Apple</grapheme>
    <phoneme>ˈæpl̩</phoneme>
  </lexeme>
  <lexeme>
    <grapheme>UN</grapheme>
    <alias>United Nations</alias>
  </lexeme>
</lexicon>
"""


def lexicon(body: str, alphabet: str = "ipa") -> Lexicon:
    return parse_pls(f'<lexicon version="1.0" {NS} alphabet="{alphabet}">{body}</lexicon>', "test.pls")


def apply(lx: Lexicon, text: str) -> str:
    return lx.for_voice(None).apply(text)


def test_platform_example_parses() -> None:
    lx = parse_pls(PLATFORM_EXAMPLE, "example.pls")
    assert lx.entries == (
        LexiconEntry("Apple", phonemes="ˈæpl̩", where="example.pls:8"),
        LexiconEntry("UN", alias="United Nations", where="example.pls:12"),
    )
    assert apply(lx, "The UN likes Apple.") == "The United Nations likes [[ ˈæpl̩ ]]."


# --------------------------------------------------------------------------- applying to text
UN = "<lexeme><grapheme>UN</grapheme><alias>United Nations</alias></lexeme>"
NY = (
    "<lexeme><grapheme>New York</grapheme><alias>the Big Apple</alias></lexeme>"
    "<lexeme><grapheme>New</grapheme><alias>Old</alias></lexeme>"
)


@pytest.mark.parametrize(
    ("body", "text", "expected"),
    [
        (UN, "The UN met.", "The United Nations met."),
        (UN, "the un met", "the un met"),  # case-sensitive
        (UN, "Un, UN's, (UN)", "Un, United Nations's, (United Nations)"),
        (UN, "UNICEF and FUN and UN_X and UN2", "UNICEF and FUN and UN_X and UN2"),  # whole words only
        (UN, "No entry here.", "No entry here."),  # untouched
        (NY, "New York is new. New  York!", "the Big Apple is new. the Big Apple!"),  # longest first
        (NY, "New ideas", "Old ideas"),
        (  # one pass: a replacement is never replaced again
            "<lexeme><grapheme>A</grapheme><alias>B</alias></lexeme>"
            "<lexeme><grapheme>B</grapheme><alias>C</alias></lexeme>",
            "A B",
            "B C",
        ),
        (  # several graphemes for one lexeme
            "<lexeme><grapheme>colour</grapheme><grapheme>color</grapheme><alias>hue</alias></lexeme>",
            "color colour",
            "hue hue",
        ),
        (  # `prefer` picks the pronunciation, else the first
            "<lexeme><grapheme>x</grapheme><alias>first</alias><alias prefer='true'>chosen</alias></lexeme>"
            "<lexeme><grapheme>y</grapheme><alias>first</alias><phoneme>wɑɪ</phoneme></lexeme>",
            "x y",
            "chosen first",
        ),
        (  # the first lexeme for a grapheme wins
            "<lexeme><grapheme>GIF</grapheme><alias>jif</alias></lexeme>"
            "<lexeme><grapheme>GIF</grapheme><alias>gif</alias></lexeme>",
            "a GIF",
            "a jif",
        ),
        (  # foreign and metadata elements are ignored
            "<meta name='x' content='y'/><lexeme><grapheme>UN</grapheme><example>UN</example>"
            "<alias>United Nations</alias></lexeme>",
            "UN",
            "United Nations",
        ),
    ],
)
def test_apply(body: str, text: str, expected: str) -> None:
    assert apply(lexicon(body), text) == expected


def test_phoneme_entries_become_piper_phoneme_spans() -> None:
    lx = lexicon("<lexeme><grapheme>nginx</grapheme><phoneme>/ˈɛndʒɪnˈɛks/</phoneme></lexeme>")
    assert apply(lx, "Run nginx, then stop.") == "Run [[ ˈɛndʒɪnˈɛks ]], then stop."


def test_multiple_dictionaries_in_order() -> None:
    first = lexicon("<lexeme><grapheme>SQL</grapheme><alias>sequel</alias></lexeme>")
    second = lexicon(
        "<lexeme><grapheme>SQL</grapheme><alias>S Q L</alias></lexeme>"
        "<lexeme><grapheme>API</grapheme><alias>A P I</alias></lexeme>"
    )
    combined = Lexicon.combine([first, second])
    assert apply(combined, "SQL API") == "sequel A P I"
    assert apply(Lexicon.combine([second, first]), "SQL API") == "S Q L A P I"
    assert apply(Lexicon(), "SQL") == "SQL"


def test_arpabet_lexicon_and_lexeme_level_alphabets() -> None:
    lx = parse_pls(
        f"""<lexicon version="1.0" {NS} alphabet="cmu-arpabet">
  <lexeme><grapheme>tomato</grapheme><phoneme>T AH0 M EY1 T OW2</phoneme></lexeme>
  <lexeme alphabet="ipa"><grapheme>Apple</grapheme><phoneme>ˈæpəl</phoneme></lexeme>
  <lexeme><grapheme>data</grapheme><phoneme alphabet="x-cmu">D EY1 T AH0</phoneme></lexeme>
</lexicon>""",
        "cmu.pls",
    )
    assert [e.phonemes for e in lx.entries] == ["təmˈeɪtˌoʊ", "ˈæpəl", "dˈeɪtə"]


# --------------------------------------------------------------------------- Arpabet → IPA
@pytest.mark.parametrize(
    ("arpabet", "ipa"),
    [
        ("T AH0 M EY1 T OW2", "təmˈeɪtˌoʊ"),  # the platform's example
        ("F AA1 DH ER0", "fˈɑːðɚ"),  # father, as espeak-ng writes it
        ("B ER1 D", "bˈɜːd"),  # bird
        ("B AH1 T ER0", "bˈʌtɚ"),
        ("HH AH0 L OW1", "həlˈoʊ"),
        ("CH ER1 CH", "tʃˈɜːtʃ"),
        ("JH AH1 JH", "dʒˈʌdʒ"),
        ("S IH1 NG", "sˈɪŋ"),
        ("TH IH1 NG", "θˈɪŋ"),
        ("M EH1 ZH ER0", "mˈɛʒɚ"),
        ("K AO1 T", "kˈɔːt"),
        ("S IY1", "sˈiː"),
        ("B L UW1", "blˈuː"),
        ("B OY1", "bˈɔɪ"),
        ("N AW1", "nˈaʊ"),
        ("M AY1", "mˈaɪ"),
        ("K AE1 T", "kˈæt"),
        ("P UH1 T", "pˈʊt"),
        ("Y EH1 S", "jˈɛs"),
        ("W IH1 DH", "wˈɪð"),
        ("R EH1 D", "ɹˈɛd"),
        ("SH IY1", "ʃˈiː"),
        ("G OW1", "ɡˈoʊ"),
        ("V AE1 N Z", "vˈænz"),
        ("AH0 B AW1 T", "əbˈaʊt"),
        ("b ah1 t", "bˈʌt"),  # case-insensitive
    ],
)
def test_arpabet_to_ipa(arpabet: str, ipa: str) -> None:
    assert arpabet_to_ipa(arpabet) == ipa


@pytest.mark.parametrize("bad", ["XX", "AH3", "B1", "T-AH0", "AH01"])
def test_arpabet_unknown_symbols_are_errors(bad: str) -> None:
    with pytest.raises(ValueError, match="Arpabet"):
        arpabet_to_ipa(bad)


# --------------------------------------------------------------------------- IPA → voice symbols
ESPEAK_EN = frozenset("abdefhijklmnoprstuvwxzæðŋɐɑɔəɚɛɜɡɪɹɾʃʊʌʒʔˈˌːθᵻ̩ ")


@pytest.mark.parametrize(
    ("ipa", "expected", "dropped"),
    [
        ("ˈæpl̩", "ˈæpl̩", []),
        ("/ˈtɒm.ə.toʊ/", "tmˈətoʊ", ["ɒ"]),  # slashes and syllable dots are notation; ɒ is missing
        ("ˈgoʊ", "ɡˈoʊ", []),  # ASCII g is IPA ɡ
        ("ʧɝʧ", "tʃɜːtʃ", []),  # ligature, and ɝ as espeak writes English
        ("t͡ʃiːz", "tʃiːz", []),  # tie bar
        ("'rɛd", "ɹˈɛd", []),  # ASCII stress; English r is espeak's ɹ
        ("si:", "siː", []),  # ASCII length
        ("ˈbɛt ɪt", "bˈɛt ɪt", []),  # spaces between words are kept
        ("ǃ", "", ["ǃ"]),
        ("bəˈnænə", "bənˈænə", []),  # stress just before the vowel, as espeak-ng writes it
        ("ˌɛkˈsplɔɪt", "ˌɛksplˈɔɪt", []),
        ("ˈstr", "ˈstɹ", []),  # no vowel: the mark stays
    ],
)
def test_ipa_to_voice_symbols(ipa: str, expected: str, dropped: list[str]) -> None:
    assert ipa_to_voice(ipa, ESPEAK_EN, "en-us") == (expected, dropped)


def test_ipa_r_stays_trilled_outside_english() -> None:
    assert ipa_to_voice("ˈroma", ESPEAK_EN, "it") == ("rˈoma", [])


def test_precomposed_symbols_decompose_when_the_voice_has_the_parts() -> None:
    assert ipa_to_voice("ã", frozenset({"a", "\u0303"}), "pt") == ("a\u0303", [])


def test_missing_symbols_are_dropped_with_a_warning_and_empty_entries_skipped() -> None:
    lx = parse_pls(
        f"""<lexicon version="1.0" {NS} alphabet="ipa">
<lexeme><grapheme>Bach</grapheme><phoneme>baχ</phoneme></lexeme>
<lexeme><grapheme>click</grapheme><phoneme>ǃ</phoneme></lexeme>
</lexicon>""",
        "de.pls",
    )
    pronouncer = lx.for_voice(frozenset("ab"), "en-us")
    assert pronouncer.apply("Bach click") == "[[ ba ]] click"
    assert pronouncer.warnings == (
        "de.pls:2: 'Bach': not in the voice's phonemes, dropped: χ",
        "de.pls:3: 'click': not in the voice's phonemes, dropped: ǃ",
        "de.pls:3: 'click': no phoneme left; the word is read as written",
    )


# --------------------------------------------------------------------------- broken files
def lex(body: str, alphabet: str | None = None) -> str:
    attr = f' alphabet="{alphabet}"' if alphabet else ""
    return f"<lexicon {NS}{attr}>\n{body}</lexicon>"


G = "<grapheme>a</grapheme>"
BROKEN = {  # name: (file text, line, message)
    "mismatched-tag": (lex(f"<lexeme>\n{G}\n", "ipa"), 4, "mismatched tag"),
    "empty-file": ("", 1, "no element found"),
    "undefined-entity": (lex(f"<lexeme>{G}<alias>b</alias></lexeme>\n&undefined;"), 3, "undefined entity"),
    "not-a-lexicon": ("<html/>", 1, "not a PLS <lexicon>"),
    "no-grapheme": (lex("<lexeme>\n<alias>b</alias></lexeme>"), 2, "without a <grapheme>"),
    "no-pronunciation": (lex(f"<lexeme>{G}</lexeme>"), 2, "without an <alias> or a <phoneme>"),
    "empty-grapheme": (lex("<lexeme><grapheme> </grapheme><alias>b</alias></lexeme>"), 2, "empty <grapheme>"),
    "empty-alias": (lex(f"<lexeme>{G}\n<alias/></lexeme>"), 3, "empty <alias>"),
    "no-alphabet": (lex(f"<lexeme>{G}\n<phoneme>a</phoneme></lexeme>"), 3, "without an alphabet"),
    "unsupported-alphabet": (
        lex(f"<lexeme>{G}\n\n<phoneme>a</phoneme></lexeme>", "x-sampa"),
        4,
        "unsupported alphabet 'x-sampa'",
    ),
    "bad-arpabet": (
        lex(f"<lexeme>{G}\n<phoneme>AH0 QQ1</phoneme></lexeme>", "cmu-arpabet"),
        3,
        "unknown Arpabet symbol 'QQ1'",
    ),
    "entity-bomb": ('<!DOCTYPE lexicon [\n<!ENTITY lol "lol">\n]>\n<lexicon/>', 2, "entity declarations"),
    "external-entity": (
        '<!DOCTYPE lexicon [\n<!ENTITY ext SYSTEM "file:///etc/passwd">\n]>\n<lexicon>&ext;</lexicon>',
        2,
        "entity declarations are not allowed",
    ),
}


@pytest.mark.parametrize(("text", "line", "message"), list(BROKEN.values()), ids=list(BROKEN))
def test_broken_files_name_the_file_and_line(text: str, line: int, message: str) -> None:
    with pytest.raises(LexiconError) as caught:
        parse_pls(text, "/etc/appliance/words.pls")
    err = caught.value
    assert (err.source, err.line) == ("/etc/appliance/words.pls", line)
    assert str(err).startswith(f"/etc/appliance/words.pls:{line}: ")
    assert message in str(err)


def test_load_pls_reads_a_file_and_names_a_missing_one(tmp_path: Path) -> None:
    path = tmp_path / "words.pls"
    path.write_text(PLATFORM_EXAMPLE, encoding="utf-8")
    assert len(load_pls(path)) == 2
    with pytest.raises(LexiconError, match=r"^.*missing\.pls: cannot read the pronunciation dictionary"):
        load_pls(tmp_path / "missing.pls")


def test_utf16_file_with_declaration(tmp_path: Path) -> None:
    path = tmp_path / "utf16.pls"
    path.write_bytes(PLATFORM_EXAMPLE.replace('encoding="UTF-8"', 'encoding="UTF-16"').encode("utf-16"))
    assert [e.grapheme for e in load_pls(path).entries] == ["Apple", "UN"]
