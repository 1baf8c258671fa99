"""Tool schemas for the LLM: system tools from `built_in_tools`, webhook and client tools."""

from __future__ import annotations

from typing import Any

import pytest

from appliance.core.system_tools import (
    DEFAULT_DESCRIPTIONS,
    SystemTool,
    client_tool_schema,
    system_tool_result,
    system_tool_schemas,
    webhook_tool_schema,
)


def by_name(schemas: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {s["function"]["name"]: s["function"] for s in schemas}


def test_end_call_matches_the_platform_schema() -> None:
    schemas, unsupported = system_tool_schemas({"end_call": {}}, ["en"])
    assert unsupported == []
    assert schemas == [
        {
            "type": "function",
            "function": {
                "name": "end_call",
                "description": DEFAULT_DESCRIPTIONS[SystemTool.END_CALL],
                "parameters": {
                    "type": "object",
                    "properties": {
                        "reason": {"type": "string", "description": "The reason for the tool call."},
                        "message": {
                            "type": "string",
                            "description": "A farewell message to send to the user along right before "
                            "ending the call.",
                        },
                    },
                    "required": ["reason"],
                },
            },
        }
    ]
    assert schemas[0]["function"]["description"].startswith(
        "Call this function to end the current conversation when the main task has been completed"
    )


def test_skip_turn_and_language_detection() -> None:
    schemas, _ = system_tool_schemas(
        {"skip_turn": {}, "language_detection": {"description": ""}}, ["en", "fi"]
    )
    tools = by_name(schemas)
    skip = tools["skip_turn"]
    assert skip["description"].startswith("Skip a turn when the user explicitly indicates they need a moment")
    assert skip["parameters"]["required"] == []
    assert list(skip["parameters"]["properties"]) == ["reason"]
    lang = tools["language_detection"]
    assert lang["description"].endswith("Supported language codes: en, fi.")
    assert lang["parameters"]["required"] == ["reason", "language"]
    language = lang["parameters"]["properties"]["language"]
    assert (
        language["description"]
        == "The language to switch to. Must be one of language codes in tool description."
    )
    assert language["enum"] == ["en", "fi"]


def test_a_configured_description_overrides_the_default() -> None:
    schemas, _ = system_tool_schemas(
        {
            "end_call": {"description": "End when the user says bye."},
            "language_detection": {"description": "Switch."},
        },
        ["en", "es"],
    )
    tools = by_name(schemas)
    assert tools["end_call"]["description"] == "End when the user says bye."
    assert tools["language_detection"]["description"] == "Switch. Supported language codes: en, es."


def test_disabled_and_device_unsupported_tools() -> None:
    built_in: dict[str, dict[str, Any] | None] = {
        "end_call": None,
        "skip_turn": {},
        "transfer_to_number": {"params": {}},
        "play_keypad_touch_tone": {},
        "voicemail_detection": {},
        "transfer_to_agent": {},
        "transfer_to_human": {},
        "language_detection": None,
    }
    schemas, unsupported = system_tool_schemas(built_in, ["en"])
    assert list(by_name(schemas)) == ["skip_turn"]
    assert unsupported == [
        "transfer_to_number",
        "play_keypad_touch_tone",
        "voicemail_detection",
        "transfer_to_agent",
        "transfer_to_human",
    ]


def test_language_detection_needs_languages() -> None:
    with pytest.raises(ValueError, match="language"):
        system_tool_schemas({"language_detection": {}}, [])


def test_result_payloads() -> None:
    """A system tool's result is `<tool>_success` with the call's own arguments."""
    assert system_tool_result(SystemTool.END_CALL, {"reason": "done", "message": "Bye!"}) == {
        "result_type": "end_call_success",
        "status": "success",
        "reason": "done",
        "message": "Bye!",
    }
    assert system_tool_result(SystemTool.SKIP_TURN, {}) == {
        "result_type": "skip_turn_success",
        "status": "success",
    }
    assert system_tool_result(SystemTool.LANGUAGE_DETECTION, {"reason": "asked", "language": "es"}) == {
        "result_type": "language_detection_success",
        "status": "success",
        "reason": "asked",
        "language": "es",
    }


WEATHER = {
    "type": "webhook",
    "name": "get_weather",
    "description": "Gets the current weather forecast for a location",
    "api_schema": {
        "url": "https://api.open-meteo.com/v1/forecast?latitude={latitude}&longitude={longitude}",
        "method": "GET",
        "path_params_schema": {
            "latitude": {"type": "string", "description": "Latitude"},
            "longitude": {"type": "string", "description": "Longitude"},
        },
    },
}


def test_webhook_path_params_are_required() -> None:
    assert webhook_tool_schema(WEATHER) == {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Gets the current weather forecast for a location",
            "parameters": {
                "type": "object",
                "properties": {
                    "path_params": {
                        "type": "object",
                        "description": "URL path parameters.",
                        "properties": {
                            "latitude": {"type": "string", "description": "Latitude"},
                            "longitude": {"type": "string", "description": "Longitude"},
                        },
                        "required": ["latitude", "longitude"],
                    }
                },
                "required": ["path_params"],
            },
        },
    }


def test_webhook_query_and_body_hide_device_filled_properties() -> None:
    tool = {
        "name": "book",
        "description": "Book a table",
        "api_schema": {
            "url": "https://example.com/{account}/book",
            "method": "POST",
            "path_params_schema": {"account": {"type": "string", "dynamic_variable": "account_id"}},
            "query_params_schema": {
                "properties": {
                    "lang": {"type": "string", "constant_value": "en"},
                    "dry_run": {"type": "boolean", "description": "Only check", "constant_value": ""},
                },
                "required": ["lang"],
            },
            "request_body_schema": {
                "type": "object",
                "description": "Booking",
                "required": ["when", "party", "source"],
                "properties": {
                    "when": {"type": "string", "description": "YYYY-mm-dd HH:MM"},
                    "party": {"type": "integer", "description": "People", "constant_value": None},
                    "source": {"type": "string", "constant_value": "appliance"},
                    "seating": {"type": "string", "enum": ["inside", "outside"]},
                    "tags": {"type": "array", "items": {"type": "string"}},
                    "meta": {
                        "type": "object",
                        "properties": {"device": {"type": "string", "value_type": "constant"}},
                    },
                    "flag": {"type": "boolean", "constant_value": False},
                },
            },
        },
    }
    params = webhook_tool_schema(tool)["function"]["parameters"]
    assert list(params["properties"]) == ["query_params", "request_body"]
    assert params["required"] == ["request_body"]
    assert params["properties"]["query_params"]["properties"] == {
        "dry_run": {"type": "boolean", "description": "Only check"}
    }
    assert params["properties"]["query_params"]["required"] == []
    assert params["properties"]["request_body"] == {
        "type": "object",
        "description": "Booking",
        "properties": {
            "when": {"type": "string", "description": "YYYY-mm-dd HH:MM"},
            "party": {"type": "integer", "description": "People"},
            "seating": {"type": "string", "enum": ["inside", "outside"]},
            "tags": {"type": "array", "items": {"type": "string"}},
        },
        "required": ["when", "party"],
    }


def test_webhook_without_parameters() -> None:
    tool = {"name": "ping", "description": "Ping", "api_schema": {"url": "https://x", "method": "GET"}}
    params = webhook_tool_schema(tool)["function"]["parameters"]
    assert params == {"type": "object", "properties": {}, "required": []}


def test_client_tool() -> None:
    tool = {
        "type": "client",
        "name": "changeBrightness",
        "description": "Change the screen brightness",
        "expects_response": False,
        "parameters": {
            "type": "object",
            "required": ["level"],
            "properties": {
                "level": {"type": "number", "description": "0 to 1"},
                "screen": {"type": "string", "dynamic_variable": "screen_id"},
            },
        },
    }
    assert client_tool_schema(tool)["function"] == {
        "name": "changeBrightness",
        "description": "Change the screen brightness",
        "parameters": {
            "type": "object",
            "properties": {"level": {"type": "number", "description": "0 to 1"}},
            "required": ["level"],
        },
    }
    no_params = client_tool_schema({"name": "flashScreen", "description": "Flash", "parameters": None})
    assert no_params["function"]["parameters"] == {"type": "object", "properties": {}, "required": []}
