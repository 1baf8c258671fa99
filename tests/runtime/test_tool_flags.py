"""Per-tool `disable_interruptions` and `force_pre_tool_speech` reach the local agent."""

from __future__ import annotations

from typing import Any

import yaml

from appliance.config import Config, load_config_text
from appliance.runtime.local_agent import PRE_TOOL_SPEECH, agent_tools, conversation_settings


def config(end_call: dict[str, Any], device: dict[str, Any]) -> Config:
    doc = {
        "conversation_config": {"agent": {"prompt": {"built_in_tools": {"end_call": end_call}}}},
        "appliance": {
            "tools": [
                {
                    "type": "client",
                    "name": "get_battery",
                    "description": "Battery level.",
                    "handler": "appliance.testing.example_tools:get_battery",
                    **device,
                }
            ]
        },
    }
    return load_config_text(yaml.safe_dump(doc), "t.yaml", log_warnings=False)


def descriptions(cfg: Config) -> dict[str, str]:
    return {t["function"]["name"]: t["function"]["description"] for t in agent_tools(cfg)[0]}


def test_the_flags_off_change_nothing() -> None:
    cfg = config({}, {})
    assert all(PRE_TOOL_SPEECH not in d for d in descriptions(cfg).values())
    assert conversation_settings(cfg, {}).uninterruptible_tools == frozenset()


def test_force_pre_tool_speech_and_disable_interruptions() -> None:
    cfg = config(
        {"force_pre_tool_speech": True}, {"disable_interruptions": True, "force_pre_tool_speech": True}
    )
    found = descriptions(cfg)
    assert found["get_battery"] == f"Battery level. {PRE_TOOL_SPEECH}"
    assert found["end_call"].endswith(PRE_TOOL_SPEECH)
    assert conversation_settings(cfg, {}).uninterruptible_tools == frozenset({"get_battery"})
    cfg = config({"disable_interruptions": True}, {})
    assert conversation_settings(cfg, {}).uninterruptible_tools == frozenset({"end_call"})
