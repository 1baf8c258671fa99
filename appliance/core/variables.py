"""Dynamic variables as the ElevenLabs Agents platform defines them (seed §5.1).

- `{{name}}` / `{{ name }}` in the system prompt, the first message, tool parameters and tool
  headers; names are case-sensitive. Values are strings, numbers, booleans (or null).
- `system__*` variables are reserved: only the appliance sets them (`system_variables`).
- `secret__*` variables may only be used in tool headers: never in anything that reaches an LLM
  or a log (`render(..., allow_secrets=False)`, `public_variables`).
- Tools update variables from their JSON result by dot path (`response.users.0.email`); a path
  that does not exist updates nothing.

Rendering is a single pass: a value that itself contains `{{...}}` is not expanded again.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Collection, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from appliance.errors import ApplianceError

VariableValue = str | int | float | bool | None

SYSTEM_PREFIX = "system__"
SECRET_PREFIX = "secret__"
_REFERENCE = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")


class MissingVariableError(ApplianceError):
    """A template uses a dynamic variable that was not provided (platform close reason)."""

    code = "missing_dynamic_variable"

    def __init__(self, name: str, where: str) -> None:
        self.name = name
        self.where = where
        super().__init__(f"dynamic variable '{name}' used in {where} is not defined")


class SecretVariableError(ApplianceError):
    """A `secret__` variable is used where its value would reach an LLM or a log."""

    code = "secret_in_prompt"

    def __init__(self, name: str, where: str) -> None:
        self.name = name
        self.where = where
        super().__init__(
            f"secret variable '{name}' used in {where}: secret__ variables may only be used in tool headers"
        )


def format_value(value: object) -> str:
    """A variable value as text: `true`/`false`, `""` for None, `3` for 3.0, JSON for containers."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return str(int(value))
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return str(value)


def references(template: str) -> list[str]:
    """Variable names used in `template`, in order of first use."""
    return list(dict.fromkeys(m.group(1) for m in _REFERENCE.finditer(template)))


def unresolved(
    template: str, defined: Collection[str], *, allow_secrets: bool = False
) -> tuple[list[str], list[str]]:
    """What `render` would refuse in `template`, all at once: `(missing, secret)` variable names,
    each in order of first use. A `secret__` name is a secret problem whether defined or not."""
    missing: list[str] = []
    secret: list[str] = []
    for name in references(template):
        if name.startswith(SECRET_PREFIX) and not allow_secrets:
            secret.append(name)
        elif name not in defined:
            missing.append(name)
    return missing, secret


def render(
    template: str,
    variables: Mapping[str, VariableValue],
    *,
    allow_secrets: bool = False,
    where: str = "the template",
) -> str:
    """Replace every `{{name}}`; `where` names the place in error messages ("the system prompt")."""

    def substitute(match: re.Match[str]) -> str:
        name = match.group(1)
        if name.startswith(SECRET_PREFIX) and not allow_secrets:
            raise SecretVariableError(name, where)
        if name not in variables:
            raise MissingVariableError(name, where)
        return format_value(variables[name])

    return _REFERENCE.sub(substitute, template)


def system_variables(
    *,
    now_utc: datetime,
    timezone: str | None,
    conversation_id: str,
    agent_id: str,
    call_duration_secs: float,
    current_agent_id: str | None = None,
) -> dict[str, str]:
    """The `system__` variables of a device conversation. A naive `now_utc` is taken as UTC.

    Telephony-only ones (`system__caller_id`, `system__called_number`, `system__call_sid`) do not
    exist on the device. `system__timezone` is `UTC` when no timezone is configured.
    """
    now = now_utc.replace(tzinfo=UTC) if now_utc.tzinfo is None else now_utc.astimezone(UTC)
    zone_name = timezone or "UTC"
    try:
        zone = ZoneInfo(zone_name)
    except (ZoneInfoNotFoundError, ValueError) as err:
        raise ValueError(f"timezone {zone_name!r} is not a valid IANA timezone name") from err
    return {
        "system__time_utc": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "system__time": now.astimezone(zone).isoformat(timespec="seconds"),
        "system__timezone": zone_name,
        "system__conversation_id": conversation_id,
        "system__agent_id": agent_id,
        "system__current_agent_id": current_agent_id or agent_id,
        "system__call_duration_secs": str(int(max(0.0, call_duration_secs))),
    }


def merge_variables(
    placeholders: Mapping[str, VariableValue],
    per_session: Mapping[str, VariableValue],
    system: Mapping[str, VariableValue],
) -> dict[str, VariableValue]:
    """Placeholders < per-session values; `system__` keys only from `system`."""
    for source, mapping in (("placeholders", placeholders), ("per-session dynamic variables", per_session)):
        reserved = sorted(k for k in mapping if k.startswith(SYSTEM_PREFIX))
        if reserved:
            raise ValueError(
                f"{source} define {', '.join(reserved)}: the system__ prefix is reserved "
                "for variables the appliance sets"
            )
    stray = sorted(k for k in system if not k.startswith(SYSTEM_PREFIX))
    if stray:
        raise ValueError(f"system variables must start with system__: {', '.join(stray)}")
    return {**placeholders, **per_session, **system}


def secret_names(variables: Mapping[str, object]) -> set[str]:
    return {k for k in variables if k.startswith(SECRET_PREFIX)}


def public_variables(variables: Mapping[str, VariableValue]) -> dict[str, VariableValue]:
    """The variables without `secret__` ones: what may go to an LLM or a log."""
    return {k: v for k, v in variables.items() if not k.startswith(SECRET_PREFIX)}


_MISSING = object()


def _read_path(result: object, value_path: str) -> object:
    """The value at a dot path (`response.users.0.email`) in a JSON-like result, or `_MISSING`.

    A leading `response` segment is the result itself; integer segments index lists. A result
    given as a JSON string is parsed first.
    """
    node = result
    if isinstance(node, str | bytes):
        try:
            node = json.loads(node)
        except ValueError:
            return _MISSING
    segments = value_path.split(".")
    if segments and segments[0] == "response":
        segments = segments[1:]
    for segment in segments:
        if isinstance(node, Mapping) and segment in node:
            node = node[segment]
        elif isinstance(node, list) and segment.isdigit() and int(segment) < len(node):
            node = node[int(segment)]
        else:
            return _MISSING
    return node


def apply_assignments(
    variables: Mapping[str, VariableValue],
    assignments: Sequence[Mapping[str, str]],
    result: object,
    *,
    tool_name: str,
    now: float,
    tool_request_id: str = "",
) -> tuple[dict[str, VariableValue], list[dict[str, Any]]]:
    """Apply a tool's `assignments` to its result: the new variables and the audit records.

    Only `source: response` exists on the platform; other sources, `system__` targets and
    missing paths update nothing. Dicts and lists are stored JSON-encoded; scalars keep their
    type. A `secret__` target is updated but its values are `***` in the audit record.
    """
    updated: dict[str, VariableValue] = dict(variables)
    records: list[dict[str, Any]] = []
    for assignment in assignments:
        name = assignment.get("dynamic_variable", "")
        if assignment.get("source", "response") != "response" or not name:
            continue
        if name.startswith(SYSTEM_PREFIX):
            continue
        value = _read_path(result, assignment.get("value_path", ""))
        if value is _MISSING:
            continue
        new = value if isinstance(value, str | int | float | bool | None) else format_value(value)
        old_value = format_value(updated[name]) if name in updated else None
        new_value = format_value(new)
        if name.startswith(SECRET_PREFIX):
            old_value = None if old_value is None else "***"
            new_value = "***"
        updated[name] = new
        records.append(
            {
                "variable_name": name,
                "old_value": old_value,
                "new_value": new_value,
                "updated_at": now,
                "tool_name": tool_name,
                "tool_request_id": tool_request_id,
            }
        )
    return updated, records
