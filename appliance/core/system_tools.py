"""OpenAI function schemas for the agent's tools, and the system-tool result payload.

System tools (seed §5.3) are enabled by name in `prompt.built_in_tools` (a config mapping, or
None for off); a non-empty `description` replaces the platform's default one. The device offers
`end_call`, `skip_turn` and `language_detection`; the telephony and hosted-orchestration tools
(`transfer_to_number`, `play_keypad_touch_tone`, `voicemail_detection`, `transfer_to_agent`)
and unknown names come back in a second list so the caller can warn once.

Webhook and client tools (seed §5.4, §5.5) become one function each. A webhook tool's
arguments are grouped as the request needs them: `path_params`, `query_params`,
`request_body` (each present only when the LLM has something to fill). Properties with a
`constant_value` or a `dynamic_variable` are filled by the device and never shown to the LLM.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Any


class SystemTool(StrEnum):
    END_CALL = "end_call"
    SKIP_TURN = "skip_turn"
    LANGUAGE_DETECTION = "language_detection"
    TRANSFER_TO_AGENT = "transfer_to_agent"
    TRANSFER_TO_NUMBER = "transfer_to_number"
    PLAY_KEYPAD_TOUCH_TONE = "play_keypad_touch_tone"
    VOICEMAIL_DETECTION = "voicemail_detection"


DEVICE_SYSTEM_TOOLS = (SystemTool.END_CALL, SystemTool.SKIP_TURN, SystemTool.LANGUAGE_DETECTION)

# The seeds quote only the beginning of each default description ("...", seed §5.3); the rest
# completes it from the trigger conditions the same pages list.
DEFAULT_DESCRIPTIONS: dict[SystemTool, str] = {
    SystemTool.END_CALL: (
        "Call this function to end the current conversation when the main task has been completed "
        "and the user is satisfied, when the conversation has reached a natural conclusion, or when "
        "the user explicitly indicates they want to end the conversation."
    ),
    SystemTool.SKIP_TURN: (
        "Skip a turn when the user explicitly indicates they need a moment to think or asks for a "
        'pause ("Give me a second", "Let me think", "One moment please"). After this call you stay '
        "silent until the user speaks again."
    ),
    SystemTool.LANGUAGE_DETECTION: (
        "Change the conversation language when the user expresses a language preference explicitly "
        "or starts speaking in a language other than the current one. No need to ask for "
        "confirmation."
    ),
}
_REASON = {"type": "string", "description": "The reason for the tool call."}


def _function(name: str, description: str, parameters: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "function",
        "function": {"name": name, "description": description, "parameters": parameters},
    }


def system_tool_schemas(
    built_in_tools: Mapping[str, Mapping[str, Any] | None], supported_languages: list[str]
) -> tuple[list[dict[str, Any]], list[str]]:
    """`(schemas of the enabled device tools, names of enabled tools the device does not offer)`."""
    schemas: list[dict[str, Any]] = []
    unsupported: list[str] = []
    for name, config in built_in_tools.items():
        if config is None:
            continue
        if name not in {t.value for t in DEVICE_SYSTEM_TOOLS}:
            unsupported.append(name)
            continue
        tool = SystemTool(name)
        description = str(config.get("description") or "").strip() or DEFAULT_DESCRIPTIONS[tool]
        schemas.append(_system_tool_schema(tool, description, supported_languages))
    return schemas, unsupported


def _system_tool_schema(tool: SystemTool, description: str, languages: list[str]) -> dict[str, Any]:
    if tool is SystemTool.END_CALL:
        message = {
            "type": "string",
            "description": "A farewell message to send to the user along right before ending the call.",
        }
        params = {
            "type": "object",
            "properties": {"reason": _REASON, "message": message},
            "required": ["reason"],
        }
        return _function(tool.value, description, params)
    if tool is SystemTool.SKIP_TURN:
        reason = {
            "type": "string",
            "description": "Optional free-form reason explaining why the pause is needed.",
        }
        return _function(
            tool.value, description, {"type": "object", "properties": {"reason": reason}, "required": []}
        )
    if tool is SystemTool.LANGUAGE_DETECTION:
        if not languages:
            raise ValueError("language_detection needs the agent's supported language codes")
        language = {
            "type": "string",
            "description": "The language to switch to. Must be one of language codes in tool description.",
            "enum": list(languages),
        }
        description = f"{description} Supported language codes: {', '.join(languages)}."
        props = {"reason": _REASON, "language": language}
        return _function(
            tool.value,
            description,
            {"type": "object", "properties": props, "required": ["reason", "language"]},
        )
    raise ValueError(f"system tool {tool} is not offered on the device")


def system_tool_result(tool: SystemTool, arguments: Mapping[str, Any]) -> dict[str, Any]:
    """What a system tool call records as its result (the conversation's history): the platform's
    `<tool>_success` with the call's own arguments (`reason`, `message`, `language`...)."""
    return {"result_type": f"{tool.value}_success", "status": "success", **arguments}


def webhook_tool_schema(tool: Mapping[str, Any]) -> dict[str, Any]:
    """One function for a `WebhookToolConfig`: arguments grouped by where they go in the request."""
    api = tool.get("api_schema") or {}
    groups: dict[str, Any] = {}
    required: list[str] = []
    path_props = _exposed_properties(api.get("path_params_schema") or {})
    if path_props:
        groups["path_params"] = _object("URL path parameters.", path_props, list(path_props))
        required.append("path_params")
    query = api.get("query_params_schema") or {}
    query_props = _exposed_properties(query.get("properties") or {})
    if query_props:
        query_required = [n for n in query.get("required") or () if n in query_props]
        groups["query_params"] = _object("URL query parameters.", query_props, query_required)
        if query_required:
            required.append("query_params")
    body_schema = api.get("request_body_schema")
    body = _property(body_schema) if body_schema else None
    if body is not None:
        body.setdefault("description", "JSON request body.")
        groups["request_body"] = body
        if body.get("required"):
            required.append("request_body")
    params = {"type": "object", "properties": groups, "required": required}
    return _function(str(tool["name"]), str(tool.get("description") or ""), params)


def client_tool_schema(tool: Mapping[str, Any]) -> dict[str, Any]:
    """One function for a `ClientToolConfig` (its `parameters` is an ObjectJsonSchemaProperty)."""
    params = _property(tool["parameters"]) if tool.get("parameters") else None
    if params is None:
        params = {"type": "object", "properties": {}, "required": []}
    return _function(str(tool["name"]), str(tool.get("description") or ""), params)


def _object(description: str, properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    return {"type": "object", "description": description, "properties": properties, "required": required}


def _filled_by_device(prop: Mapping[str, Any]) -> bool:
    constant = prop.get("constant_value")
    value_type = prop.get("value_type")
    return (
        bool(prop.get("dynamic_variable"))
        or (constant is not None and constant != "")
        or (value_type is not None and value_type != "llm_prompt")
    )


def _exposed_properties(properties: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, prop in properties.items():
        converted = _property(prop)
        if converted is not None:
            out[name] = converted
    return out


def _property(prop: Mapping[str, Any]) -> dict[str, Any] | None:
    """JSON schema of a Literal/Object/Array property for the LLM; None if the device fills it."""
    if _filled_by_device(prop):
        return None
    kind = prop.get("type", "string")
    out: dict[str, Any] = {"type": kind}
    if prop.get("description"):
        out["description"] = str(prop["description"])
    if kind == "object":
        props = _exposed_properties(prop.get("properties") or {})
        if prop.get("properties") and not props:
            return None  # every field is filled by the device
        out["properties"] = props
        out["required"] = [n for n in prop.get("required") or () if n in props]
    elif kind == "array":
        items = _property(prop.get("items") or {"type": "string"})
        if items is None:
            return None
        out["items"] = items
    elif prop.get("enum"):
        out["enum"] = list(prop["enum"])
    return out
