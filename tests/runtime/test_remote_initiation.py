"""What a remote session sends at the start, built from the config (runtime/remote_agent.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from appliance.config import load_config_text
from appliance.errors import ApplianceError
from appliance.runtime.remote_agent import api_key, initiation_for, remote_settings


def config(extra: dict[str, Any] | None = None, **appliance: Any) -> Any:
    doc: dict[str, Any] = {
        "conversation_config": {
            "agent": {
                "first_message": "Hi {{user_name}}!",
                "language": "de",
                "prompt": {"prompt": "You are {{user_name}}'s assistant."},
                "dynamic_variables": {
                    "dynamic_variable_placeholders": {"user_name": "Thor", "greeting": "Hey"}
                },
            },
            "tts": {"voice_id": "voice-1"},
        },
        "appliance": {
            "mode": "remote",
            "remote": {"agent_id": "agent_1", "user_id": "kitchen-pi"},
            "wake_words": {"words": [{"name": "hey_jarvis", "dynamic_variables": {"user_name": "Loki"}}]},
            "custom_llm_extra_body": {"room": "kitchen"},
            **appliance,
        },
    }
    for key, value in (extra or {}).items():
        doc[key] = value
    return load_config_text(yaml.safe_dump(doc), "t.yaml")


def test_nothing_is_overridden_unless_the_agent_allows_it() -> None:
    data = initiation_for(config(), "hey_jarvis", device_name="pi")
    assert data.conversation_config_override == {}
    assert data.custom_llm_extra_body == {}
    assert data.dynamic_variables == {
        "device_name": "pi",
        "device_wake_word": "hey_jarvis",
        "user_name": "Loki",
        "greeting": "Hey",
    }
    assert data.user_id == "kitchen-pi" and data.source == "unknown" and data.version.startswith("appliance/")


def test_allowed_overrides_and_extra_body_are_sent() -> None:
    allowed = {
        "platform_settings": {
            "overrides": {
                "custom_llm_extra_body": True,
                "conversation_config_override": {
                    "agent": {"first_message": True, "language": True, "prompt": {"prompt": True}},
                    "tts": {"voice_id": True},
                },
            }
        }
    }
    data = initiation_for(config(allowed), "other_word", device_name="pi")
    assert data.conversation_config_override == {
        "agent": {
            "prompt": {"prompt": "You are {{user_name}}'s assistant."},
            "first_message": "Hi {{user_name}}!",
            "language": "de",
        },
        "tts": {"voice_id": "voice-1"},
    }
    assert data.custom_llm_extra_body == {"room": "kitchen"}
    assert data.dynamic_variables["user_name"] == "Thor"  # no per-wake-word value for this word


def test_settings_and_the_api_key(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    cfg = config(remote={"agent_id": "agent_1", "requires_auth": True, "chunk_ms": 50, "stall_timeout_s": 7})
    settings = remote_settings(cfg)
    assert (settings.agent_id, settings.chunk_ms, settings.stall_timeout_s) == ("agent_1", 50, 7)
    monkeypatch.delenv("ELEVENLABS_API_KEY", raising=False)
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    with pytest.raises(ApplianceError, match="ELEVENLABS_API_KEY") as err:
        api_key(cfg)
    assert err.value.code == "api_key_missing"
    (tmp_path / "elevenlabs_api_key").write_text("sk_from_credential\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))  # systemd LoadCredential=
    assert api_key(cfg) == "sk_from_credential"
