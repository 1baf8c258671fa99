"""W3C Pronunciation Lexicon (PLS) dictionaries, applied to text before synthesis. Pure.

The platform's `tts.pronunciation_dictionary_locators` point at `.pls` files (seed digest §4.2);
on the device each locator names a local file. A lexicon holds lexemes: one or more
`<grapheme>` and a pronunciation, an `<alias>` (replacement text) or a `<phoneme>` in the
lexicon's `alphabet` (`ipa`, or CMU Arpabet: `cmu-arpabet`, `x-cmu`, `arpabet`...; a
`<phoneme>` or `<lexeme>` may carry its own `alphabet`).

Applying a lexicon (`Lexicon.for_voice(...).apply(text)`):
- graphemes match case-sensitively, whole words only (no letter, digit or `_` on either side),
  longest first; whitespace inside a grapheme matches any whitespace;
- an alias replaces the text; a phoneme becomes Piper's raw phoneme input `[[ ... ]]` — every
  Piper voice honours it (the platform honours phonemes on one model only);
- IPA is written the way espeak-ng writes it for the voice (`g` → `ɡ`, `ʧ` → `tʃ`, `'` → `ˈ`,
  syllable dots and tie bars dropped, stress marks moved from the syllable start to just before
  the vowel; for English `r` → `ɹ`, `ɝ` → `ɜː`), and every symbol is
  checked against the voice's phoneme set: one it lacks is dropped, with a warning;
- Arpabet is converted to IPA first (stress digits 1/2 become `ˈ`/`ˌ` before the vowel);
- a word not in the lexicon is untouched; one pass, so a replacement is never replaced again.

Where the seeds are silent: with several dictionaries (config order) or several lexemes for one
grapheme, the first wins; within a lexeme the pronunciation marked `prefer="true"` wins, else
the first. A broken file is a `LexiconError` naming the file and line. XML is read with expat
directly (stdlib): entity declarations are refused (no entity expansion, no external entity or
DTD is ever fetched), and elements keep their line numbers for the error messages.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from xml.parsers import expat

PLS_NAMESPACE = "http://www.w3.org/2005/01/pronunciation-lexicon"
IPA = "ipa"
ARPABET = "cmu-arpabet"
_ALPHABETS = {
    "ipa": IPA,
    "cmu-arpabet": ARPABET,
    "x-cmu": ARPABET,
    "x-cmu-arpabet": ARPABET,
    "x-arpabet": ARPABET,
    "arpabet": ARPABET,
    "cmu": ARPABET,
}

# ARPAbet (CMUdict's 39 symbols plus the TIMIT extensions) → IPA, as espeak-ng writes American
# English (long vowels with ː, stressed ER as ɜː). Vowels take a stress digit 0/1/2.
_ARPABET_VOWELS = {
    "AA": "ɑː", "AE": "æ", "AH": "ʌ", "AO": "ɔː", "AW": "aʊ", "AX": "ə", "AXR": "ɚ", "AY": "aɪ",
    "EH": "ɛ", "ER": "ɜː", "EY": "eɪ", "IH": "ɪ", "IX": "ᵻ", "IY": "iː", "OW": "oʊ", "OY": "ɔɪ",
    "UH": "ʊ", "UW": "uː", "UX": "ʉ",
}  # fmt: skip
_ARPABET_UNSTRESSED = {"AH": "ə", "ER": "ɚ"}
_ARPABET_CONSONANTS = {
    "B": "b", "CH": "tʃ", "D": "d", "DH": "ð", "DX": "ɾ", "EL": "əl", "EM": "əm", "EN": "ən",
    "F": "f", "G": "ɡ", "H": "h", "HH": "h", "JH": "dʒ", "K": "k", "L": "l", "M": "m", "N": "n",
    "NG": "ŋ", "NX": "ɾ̃", "P": "p", "Q": "ʔ", "R": "ɹ", "S": "s", "SH": "ʃ", "T": "t", "TH": "θ",
    "V": "v", "W": "w", "WH": "ʍ", "Y": "j", "Z": "z", "ZH": "ʒ",
}  # fmt: skip
_ARPABET_TOKEN = re.compile(r"([A-Z]+)([012]?)")

# IPA → espeak-ng notation. Always: ASCII stand-ins for stress and length. When the voice lacks
# the symbol: ligatures and variant letters. For English voices (espeak never says r or ɝ).
_ALWAYS = {"'": "ˈ", ":": "ː"}
_NOTATION = {
    "g": "ɡ", "ʧ": "tʃ", "ʤ": "dʒ", "ʦ": "ts", "ʣ": "dz", "ʨ": "tɕ", "ʥ": "dʑ", "ɝ": "ɜː",
    "ɩ": "ɪ", "ɷ": "ʊ", "ʚ": "ɞ", "ɼ": "r", "ǝ": "ə",
}  # fmt: skip
_ENGLISH = {"r": "ɹ", "ɝ": "ɜː", "ɫ": "l"}
_STRESS = frozenset("ˈˌ")
_VOWELS = frozenset("aeiouyæɐɑɒɔəɘɚɛɜɝɞɤɨɪɯɵɶʉʊʌʏᵻøœ")
# Syllable breaks, tie bars, linking and group marks, brackets: notation, not sound.
_IGNORED = frozenset("/[].‿|‖͜͡()")


class LexiconError(ValueError):
    """A broken pronunciation dictionary: `<file>:<line>: <what is wrong>`."""

    def __init__(self, source: str, line: int | None, message: str) -> None:
        self.source = source
        self.line = line
        self.message = message
        super().__init__(f"{source}:{line}: {message}" if line else f"{source}: {message}")


@dataclass(frozen=True)
class LexiconEntry:
    """One grapheme and its pronunciation: `alias` text or `phonemes` (IPA)."""

    grapheme: str
    alias: str | None = None
    phonemes: str | None = None
    where: str = ""
    """`file:line` of the lexeme, for warnings."""


@dataclass(frozen=True)
class Pronouncer:
    """A lexicon made ready for one voice: `apply(text)` / `parts(text)` and what could not be
    kept. `aliases` map graphemes to text, `phonemes` to the voice's phoneme symbols."""

    aliases: dict[str, str]
    phonemes: dict[str, str]
    warnings: tuple[str, ...] = ()
    _pattern: re.Pattern[str] | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        keys = sorted([*self.aliases, *self.phonemes], key=len, reverse=True)
        pattern = None
        if keys:
            alternatives = "|".join(r"\s+".join(map(re.escape, key.split())) for key in keys)
            pattern = re.compile(rf"(?<!\w)(?:{alternatives})(?!\w)")
        object.__setattr__(self, "_pattern", pattern)

    def apply(self, text: str) -> str:
        """Aliases replaced, phoneme entries as Piper's raw phoneme spans `[[ ... ]]`."""
        return "".join(piece if ph is None else f"[[ {ph} ]]" for piece, ph in self.parts(text))

    def parts(self, text: str) -> list[tuple[str, str | None]]:
        """`text` (aliases replaced) cut around phoneme entries: (text, None) pieces and
        (grapheme as written, phonemes) entries, in order."""
        if self._pattern is None:
            return [(text, None)]
        out: list[tuple[str, str | None]] = []
        pending: list[str] = []
        pos = 0
        for m in self._pattern.finditer(text):
            key = " ".join(m.group().split())
            pending.append(text[pos : m.start()])
            if key in self.phonemes:
                out.append(("".join(pending), None))
                out.append((m.group(), self.phonemes[key]))
                pending = []
            else:
                pending.append(self.aliases[key])
            pos = m.end()
        pending.append(text[pos:])
        out.append(("".join(pending), None))
        return [(piece, ph) for piece, ph in out if piece or ph is not None]


class Lexicon:
    """Entries in priority order (the first entry for a grapheme wins)."""

    def __init__(self, entries: Iterable[LexiconEntry] = ()) -> None:
        chosen: dict[str, LexiconEntry] = {}
        for entry in entries:
            chosen.setdefault(entry.grapheme, entry)
        self.entries = tuple(chosen.values())

    @classmethod
    def combine(cls, lexicons: Iterable[Lexicon]) -> Lexicon:
        """Several dictionaries, the earlier ones first."""
        return cls(entry for lexicon in lexicons for entry in lexicon.entries)

    def __len__(self) -> int:
        return len(self.entries)

    def for_voice(self, symbols: Collection[str] | None = None, language: str = "en") -> Pronouncer:
        """Ready for a voice with these phoneme symbols (None: no check) speaking `language`."""
        aliases: dict[str, str] = {}
        phoneme_entries: dict[str, str] = {}
        warnings: list[str] = []
        for entry in self.entries:
            if entry.alias is not None:
                aliases[entry.grapheme] = entry.alias
                continue
            phonemes, dropped = ipa_to_voice(entry.phonemes or "", symbols, language)
            if dropped:
                listed = " ".join(dict.fromkeys(dropped))
                warnings.append(
                    f"{entry.where}: {entry.grapheme!r}: not in the voice's phonemes, dropped: {listed}"
                )
            if not phonemes:
                warnings.append(
                    f"{entry.where}: {entry.grapheme!r}: no phoneme left; the word is read as written"
                )
                continue
            phoneme_entries[entry.grapheme] = phonemes
        return Pronouncer(aliases, phoneme_entries, tuple(warnings))


def ipa_to_voice(ipa: str, symbols: Collection[str] | None, language: str = "en") -> tuple[str, list[str]]:
    """IPA written as espeak-ng / Piper phoneme symbols, and the symbols the voice lacks."""
    english = language.lower().startswith("en")
    out: list[str] = []
    dropped: list[str] = []
    for ch in unicodedata.normalize("NFC", ipa):
        if ch in _IGNORED:
            continue
        if ch.isspace():
            out.append(" ")
            continue
        if ch in _ALWAYS:
            replacement = _ALWAYS[ch]
        elif english and ch in _ENGLISH:
            replacement = _ENGLISH[ch]
        elif ch in _NOTATION and (symbols is None or ch not in symbols):
            replacement = _NOTATION[ch]
        else:
            replacement = ch
        for symbol in replacement:
            if symbols is None or symbol in symbols:
                out.append(symbol)
                continue
            parts = unicodedata.normalize("NFD", symbol)
            if len(parts) > 1 and all(p in symbols for p in parts):
                out.extend(parts)
            else:
                dropped.append(symbol)
    return " ".join(_stress_before_vowels("".join(out)).split()), dropped


def _stress_before_vowels(phonemes: str) -> str:
    """IPA puts a stress mark before the syllable (`bəˈnænə`), espeak-ng just before its vowel
    (`bənˈænə`), which is what Piper voices learned: move each mark past the onset consonants."""
    out = list(phonemes)
    i = 0
    while i < len(out):
        if out[i] in _STRESS:
            j = i + 1
            while j < len(out) and out[j] not in _VOWELS and out[j] not in _STRESS and not out[j].isspace():
                j += 1
            if j < len(out) and out[j] in _VOWELS and j > i + 1:
                mark = out.pop(i)
                out.insert(j - 1, mark)
                i = j
                continue
        i += 1
    return "".join(out)


def arpabet_to_ipa(arpabet: str) -> str:
    """CMU Arpabet (`T AH0 M EY1 T OW2`) as IPA (`təmˈeɪtˌoʊ`). ValueError on an unknown symbol."""
    out: list[str] = []
    for token in arpabet.split():
        m = _ARPABET_TOKEN.fullmatch(token.upper())
        if m is None:
            raise ValueError(f"unknown Arpabet symbol {token!r}")
        base, stress = m.groups()
        if base in _ARPABET_VOWELS:
            ipa = (
                _ARPABET_UNSTRESSED.get(base, _ARPABET_VOWELS[base])
                if stress == "0"
                else _ARPABET_VOWELS[base]
            )
            out.append({"1": "ˈ", "2": "ˌ"}.get(stress, "") + ipa)
        elif base in _ARPABET_CONSONANTS and not stress:
            out.append(_ARPABET_CONSONANTS[base])
        else:
            raise ValueError(f"unknown Arpabet symbol {token!r}")
    return "".join(out)


# ------------------------------------------------------------------------------------ PLS files
@dataclass
class _Node:
    name: str
    namespace: str
    attrs: dict[str, str]
    line: int
    children: list[_Node] = field(default_factory=list)
    text: list[str] = field(default_factory=list)

    def content(self) -> str:
        """All text inside, children included, whitespace-normalized."""
        parts = list(self.text)
        for child in self.children:
            parts.append(child.content())
        return " ".join(" ".join(parts).split())


def load_pls(path: str | Path) -> Lexicon:
    """Read a `.pls` file; LexiconError naming the file (and line) if it is broken."""
    source = str(path)
    try:
        data = Path(path).read_bytes()
    except OSError as err:
        raise LexiconError(source, None, f"cannot read the pronunciation dictionary: {err.strerror}") from err
    return parse_pls(data, source)


def parse_pls(data: bytes | str, source: str = "<pls>") -> Lexicon:
    root = _parse_xml(data, source)
    if root.name != "lexicon" or root.namespace not in ("", PLS_NAMESPACE):
        raise LexiconError(source, root.line, f"the root element is <{root.name}>, not a PLS <lexicon>")
    default_alphabet = root.attrs.get("alphabet")
    entries: list[LexiconEntry] = []
    for lexeme in root.children:
        if lexeme.namespace not in ("", PLS_NAMESPACE) or lexeme.name != "lexeme":
            continue  # <meta>, <metadata>, foreign elements
        entries.extend(_lexeme_entries(lexeme, lexeme.attrs.get("alphabet", default_alphabet), source))
    return Lexicon(entries)


def _lexeme_entries(lexeme: _Node, alphabet: str | None, source: str) -> list[LexiconEntry]:
    where = f"{source}:{lexeme.line}"
    graphemes: list[str] = []
    pronunciations: list[_Node] = []
    for child in lexeme.children:
        if child.namespace not in ("", PLS_NAMESPACE):
            continue
        if child.name == "grapheme":
            text = child.content()
            if not text:
                raise LexiconError(source, child.line, "empty <grapheme>")
            graphemes.append(text)
        elif child.name in ("alias", "phoneme"):
            pronunciations.append(child)
    if not graphemes:
        raise LexiconError(source, lexeme.line, "<lexeme> without a <grapheme>")
    if not pronunciations:
        raise LexiconError(source, lexeme.line, "<lexeme> without an <alias> or a <phoneme>")
    chosen = next((p for p in pronunciations if p.attrs.get("prefer") == "true"), pronunciations[0])
    text = chosen.content()
    if not text:
        raise LexiconError(source, chosen.line, f"empty <{chosen.name}>")
    if chosen.name == "alias":
        return [LexiconEntry(g, alias=text, where=where) for g in graphemes]
    name = chosen.attrs.get("alphabet", alphabet)
    if name is None:
        raise LexiconError(source, chosen.line, "<phoneme> without an alphabet (set alphabet= on <lexicon>)")
    kind = _ALPHABETS.get(name.strip().lower())
    if kind is None:
        raise LexiconError(source, chosen.line, f"unsupported alphabet {name!r} (use 'ipa' or 'cmu-arpabet')")
    if kind == ARPABET:
        try:
            text = arpabet_to_ipa(text)
        except ValueError as err:
            raise LexiconError(source, chosen.line, str(err)) from None
    return [LexiconEntry(g, phonemes=text, where=where) for g in graphemes]


def _parse_xml(data: bytes | str, source: str) -> _Node:
    parser = expat.ParserCreate(namespace_separator=" ")
    parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
    stack: list[_Node] = []
    roots: list[_Node] = []

    def split(name: str) -> tuple[str, str]:
        namespace, _, local = name.rpartition(" ")
        return namespace, local

    def start(name: str, attrs: dict[str, str]) -> None:
        namespace, local = split(name)
        node = _Node(local, namespace, {split(k)[1]: v for k, v in attrs.items()}, parser.CurrentLineNumber)
        (stack[-1].children if stack else roots).append(node)
        stack.append(node)

    def end(name: str) -> None:
        stack.pop()

    def text(data: str) -> None:
        if stack:
            stack[-1].text.append(data)

    def no_entities(*args: object) -> None:
        raise LexiconError(source, parser.CurrentLineNumber, "entity declarations are not allowed")

    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.CharacterDataHandler = text
    parser.EntityDeclHandler = no_entities
    parser.UnparsedEntityDeclHandler = no_entities
    parser.ExternalEntityRefHandler = no_entities  # type: ignore[assignment]
    try:
        parser.Parse(data, True)
    except expat.ExpatError as err:
        message = expat.ErrorString(err.code) or str(err)
        raise LexiconError(
            source, err.lineno, f"not well-formed XML: {message} (column {err.offset + 1})"
        ) from None
    if not roots:
        raise LexiconError(source, None, "no XML element")
    return roots[0]
