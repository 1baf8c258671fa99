"""Language presets on the device: first message, prompt and speed after a language switch."""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml

from appliance.config import Config, load_config_text
from appliance.runtime.local_agent import conversation_settings, preset_first_message, preset_speed

HASH = json.dumps({"firstMessage": "Hi!", "language": "en"})


def config(
    presets: dict[str, Any], stt_language: str | None = None, url: str = "http://127.0.0.1:9/v1"
) -> Config:
    doc: dict[str, Any] = {
        "conversation_config": {
            "agent": {
                "first_message": "Hi!",
                "language": "en",
                "prompt": {
                    "prompt": "You help {{user}}.",
                    "llm": "custom-llm",
                    "custom_llm": {"url": url, "model_id": "m"},
                    "built_in_tools": {"language_detection": {}},
                },
                "dynamic_variables": {"dynamic_variable_placeholders": {"user": "Ann"}},
            },
            "turn": {"soft_timeout_config": {"timeout_seconds": -1}},
            "language_presets": presets,
        },
        "appliance": {"local": {"stt": {"language": stt_language}}},
    }
    return load_config_text(yaml.safe_dump(doc), "t.yaml", log_warnings=False)


DE = {"overrides": {"agent": {"first_message": "Hallo!", "prompt": {"prompt": "Du hilfst {{user}}."}},
                    "tts": {"speed": 1.1}}}  # fmt: skip


@pytest.mark.parametrize(
    ("presets", "language", "first"),
    [
        ({"de": DE}, "de", "Hallo!"),  # the preset's own first message
        ({"de": {"overrides": {}, "first_message_translation": {"source_hash": HASH, "text": "Hallo (ü)!"}}},
         "de", "Hallo (ü)!"),  # the platform's translation of the first message
        ({"de": {"overrides": {}, "first_message_translation": {
            "source_hash": json.dumps({"firstMessage": "Hello!", "language": "en"}), "text": "Hallo alt!"}}},
         "de", None),  # translated from another first message: stale
        ({"de": DE}, "fr", None),  # no preset for the language
    ],
)  # fmt: skip
def test_the_first_message_in_the_preset_language(
    presets: dict[str, Any], language: str, first: str | None
) -> None:
    assert preset_first_message(config(presets), language) == first


def test_a_session_starting_in_a_preset_language_uses_its_first_message_and_prompt() -> None:
    cfg = config({"de": DE}, stt_language="de")
    settings = conversation_settings(cfg, {"user": "Ann"})
    assert settings.first_message == "Hallo!"
    assert settings.system_prompt.startswith("Du hilfst Ann.")
    assert settings.language_prompts["de"].startswith("Du hilfst Ann.")
    english = conversation_settings(config({"de": DE}), {"user": "Ann"})
    assert (english.first_message, english.system_prompt[:13]) == ("Hi!", "You help Ann.")
    assert preset_speed(cfg, "de") == 1.1 and preset_speed(cfg, "en") is None
