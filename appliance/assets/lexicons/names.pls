<?xml version="1.0" encoding="UTF-8"?>
<!-- Example pronunciation dictionary (W3C PLS 1.0), as the ElevenLabs platform takes them.
     Referenced by example-config.yaml: conversation_config.tts.pronunciation_dictionary_locators[].path
     Graphemes are case-sensitive and match whole words; the first entry for a grapheme wins. -->
<lexicon version="1.0"
      xmlns="http://www.w3.org/2005/01/pronunciation-lexicon"
      alphabet="ipa" xml:lang="en-US">
  <lexeme>
    <grapheme>UN</grapheme>
    <alias>United Nations</alias>
  </lexeme>
  <lexeme>
    <grapheme>nginx</grapheme>
    <phoneme>ˈɛndʒɪnˈɛks</phoneme>
  </lexeme>
  <lexeme>
    <grapheme>Jarvis</grapheme>
    <phoneme alphabet="cmu-arpabet">JH AA1 R V IH0 S</phoneme>
  </lexeme>
</lexicon>
