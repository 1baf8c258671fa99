"""Dynamic variables: templating, system__ and secret__ rules, tool-result assignments."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from appliance.core.variables import (
    MissingVariableError,
    SecretVariableError,
    VariableValue,
    apply_assignments,
    format_value,
    merge_variables,
    public_variables,
    references,
    render,
    secret_names,
    system_variables,
    unresolved,
)
from appliance.errors import ApplianceError


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("Hello {{user_name}}!", "Hello Ada!"),
        ("Hello {{ user_name }}!", "Hello Ada!"),
        ("{{count}} items, {{ratio}} ratio, {{price}} EUR", "3 items, 0.5 ratio, 2 EUR"),
        ("premium: {{premium}}, trial: {{trial}}", "premium: true, trial: false"),
        ("[{{nothing}}]", "[]"),
        ("no variables {here} or {{ not a name }}", "no variables {here} or {{ not a name }}"),
        ("{{nested}}", "{{user_name}}"),  # single pass: values are not expanded again
    ],
)
def test_render(template: str, expected: str) -> None:
    variables: dict[str, VariableValue] = {
        "user_name": "Ada",
        "count": 3,
        "ratio": 0.5,
        "price": 2.0,
        "premium": True,
        "trial": False,
        "nothing": None,
        "nested": "{{user_name}}",
    }
    assert render(template, variables) == expected


def test_names_are_case_sensitive() -> None:
    with pytest.raises(MissingVariableError):
        render("{{User_Name}}", {"user_name": "Ada"})


def test_missing_variable_names_the_variable_and_the_place() -> None:
    with pytest.raises(MissingVariableError) as info:
        render("Hi {{user_name}}", {}, where="the system prompt")
    err = info.value
    assert isinstance(err, ApplianceError)
    assert err.code == "missing_dynamic_variable"
    assert (err.name, err.where) == ("user_name", "the system prompt")
    assert str(err) == "dynamic variable 'user_name' used in the system prompt is not defined"


def test_secret_variables_are_refused_outside_tool_headers_without_leaking_the_value() -> None:
    variables = {"secret__token": "s3cr3t-value"}
    with pytest.raises(SecretVariableError) as info:
        render("Bearer {{secret__token}}", variables, where="the first message")
    assert info.value.code == "secret_in_prompt"
    assert "tool headers" in str(info.value)
    assert "secret__token" in str(info.value)
    assert "s3cr3t-value" not in str(info.value)
    assert render("Bearer {{secret__token}}", variables, allow_secrets=True) == "Bearer s3cr3t-value"


def test_an_undefined_secret_is_still_a_secret_error() -> None:
    with pytest.raises(SecretVariableError):
        render("{{secret__key}}", {})


@pytest.mark.parametrize(
    ("template", "defined", "missing", "secret"),
    [
        ("Hi {{user}}", {"user"}, [], []),
        ("Hi {{user}} in {{ city }}, {{user}}", {"x"}, ["user", "city"], []),
        ("{{secret__token}} {{secret__key}}", {"secret__token"}, [], ["secret__token", "secret__key"]),
        ("{{a}} {{secret__b}} {{system__time}}", {"system__time"}, ["a"], ["secret__b"]),
        ("{{ not a name }} {single}", set(), [], []),
    ],
)
def test_unresolved_finds_every_reference_render_would_refuse(
    template: str, defined: set[str], missing: list[str], secret: list[str]
) -> None:
    assert unresolved(template, defined) == (missing, secret)
    variables: dict[str, VariableValue] = dict.fromkeys(defined, "v")
    if missing or secret:
        with pytest.raises((MissingVariableError, SecretVariableError)) as exc:
            render(template, variables)
        assert exc.value.name in missing + secret
    else:
        render(template, variables)
    assert unresolved("{{secret__b}}", set(), allow_secrets=True) == (["secret__b"], [])


@pytest.mark.parametrize(
    ("value", "text"),
    [(True, "true"), (False, "false"), (None, ""), (3, "3"), (3.0, "3"), (-2.5, "-2.5"),
     (1e20, "100000000000000000000"), (float("inf"), "inf"), ("x", "x"), ({"a": [1, 2]}, '{"a":[1,2]}')],
)  # fmt: skip
def test_format_value(value: object, text: str) -> None:
    assert format_value(value) == text


def test_references_in_order_of_first_use() -> None:
    assert references("{{b}} {{ a }} {{b}} {{secret__c}}") == ["b", "a", "secret__c"]


NOW = datetime(2025, 1, 15, 12, 30, 45, 123456, tzinfo=UTC)


def test_system_variables_in_a_timezone() -> None:
    got = system_variables(
        now_utc=NOW,
        timezone="Europe/Helsinki",
        conversation_id="conv_1",
        agent_id="agent_1",
        call_duration_secs=61.9,
    )
    assert got == {
        "system__time_utc": "2025-01-15T12:30:45Z",
        "system__time": "2025-01-15T14:30:45+02:00",
        "system__timezone": "Europe/Helsinki",
        "system__conversation_id": "conv_1",
        "system__agent_id": "agent_1",
        "system__current_agent_id": "agent_1",
        "system__call_duration_secs": "61",
    }


def test_system_variables_default_to_utc_and_accept_other_offsets() -> None:
    other = NOW.astimezone(timezone(timedelta(hours=-5)))
    got = system_variables(
        now_utc=other, timezone=None, conversation_id="c", agent_id="a", call_duration_secs=0
    )
    assert got["system__time_utc"] == "2025-01-15T12:30:45Z"
    assert got["system__time"] == "2025-01-15T12:30:45+00:00"
    assert got["system__timezone"] == "UTC"
    naive = system_variables(
        now_utc=NOW.replace(tzinfo=None),
        timezone=None,
        conversation_id="c",
        agent_id="a",
        call_duration_secs=0,
    )
    assert naive["system__time_utc"] == "2025-01-15T12:30:45Z"


def test_invalid_timezone_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="Mars/Olympus"):
        system_variables(
            now_utc=NOW, timezone="Mars/Olympus", conversation_id="c", agent_id="a", call_duration_secs=0
        )


def test_merge_precedence() -> None:
    merged = merge_variables(
        {"user_name": "placeholder", "plan": "free"},
        {"user_name": "Ada"},
        {"system__agent_id": "agent_1"},
    )
    assert merged == {"user_name": "Ada", "plan": "free", "system__agent_id": "agent_1"}


@pytest.mark.parametrize("where", ["placeholders", "per_session"])
def test_user_provided_system_variables_are_rejected(where: str) -> None:
    user = {"system__agent_id": "spoofed"}
    args = (user, {}) if where == "placeholders" else ({}, user)
    with pytest.raises(ValueError, match=r"system__agent_id.*reserved"):
        merge_variables(*args, {"system__agent_id": "real"})


def test_system_mapping_must_hold_only_system_variables() -> None:
    with pytest.raises(ValueError, match="user_name"):
        merge_variables({}, {}, {"user_name": "x"})


def test_secret_names_and_public_variables() -> None:
    variables: dict[str, VariableValue] = {"user_name": "Ada", "secret__token": "t", "secret__id": 7}
    assert secret_names(variables) == {"secret__token", "secret__id"}
    assert public_variables(variables) == {"user_name": "Ada"}


RESULT = {
    "status": "active",
    "count": 2,
    "vip": True,
    "users": [{"email": "ada@example.com"}, {"email": "bob@example.com"}],
    "meta": {"tags": ["a", "b"]},
}


def assign(
    variables: Mapping[str, VariableValue], *pairs: tuple[str, str], result: object = RESULT
) -> tuple[dict[str, VariableValue], list[dict[str, Any]]]:
    assignments: list[Mapping[str, str]] = [
        {"source": "response", "dynamic_variable": n, "value_path": p} for n, p in pairs
    ]
    return apply_assignments(variables, assignments, result, tool_name="lookup", now=12.5)


def test_assignments_by_dot_path() -> None:
    variables, records = assign(
        {"status": "unknown"},
        ("status", "response.status"),
        ("email", "response.users.1.email"),
        ("count", "count"),
        ("vip", "response.vip"),
        ("tags", "response.meta.tags"),
    )
    assert variables == {
        "status": "active",
        "email": "bob@example.com",
        "count": 2,
        "vip": True,
        "tags": '["a","b"]',
    }
    assert records[0] == {
        "variable_name": "status",
        "old_value": "unknown",
        "new_value": "active",
        "updated_at": 12.5,
        "tool_name": "lookup",
        "tool_request_id": "",
    }
    assert [(r["variable_name"], r["old_value"], r["new_value"]) for r in records[1:]] == [
        ("email", None, "bob@example.com"),
        ("count", None, "2"),
        ("vip", None, "true"),
        ("tags", None, '["a","b"]'),
    ]


@pytest.mark.parametrize(
    "path", ["response.missing", "response.users.5.email", "response.users.x", "response.status.deeper", ""]
)
def test_missing_paths_update_nothing(path: str) -> None:
    original = {"status": "unknown"}
    variables, records = assign(original, ("status", path))
    assert variables == original
    assert records == []


def test_json_text_results_are_parsed_and_invalid_ones_ignored() -> None:
    variables, _ = assign({}, ("status", "response.status"), result=json.dumps(RESULT))
    assert variables == {"status": "active"}
    variables, records = assign({}, ("status", "response.status"), result="not json")
    assert (variables, records) == ({}, [])


def test_the_whole_response_and_sequential_updates() -> None:
    variables, records = assign({}, ("n", "response.count"), ("n", "response.status"), result=RESULT)
    assert variables == {"n": "active"}
    assert [(r["old_value"], r["new_value"]) for r in records] == [(None, "2"), ("2", "active")]
    variables, _ = assign({}, ("all", "response"), result=[1, 2])
    assert variables == {"all": "[1,2]"}


def test_system_targets_and_other_sources_are_ignored_and_secrets_redacted() -> None:
    assignments = [
        {"source": "response", "dynamic_variable": "system__agent_id", "value_path": "response.status"},
        {"source": "request", "dynamic_variable": "status", "value_path": "response.status"},
        {"source": "response", "dynamic_variable": "secret__token", "value_path": "response.status"},
    ]
    variables, records = apply_assignments(
        {"secret__token": "old"}, assignments, RESULT, tool_name="t", now=1.0, tool_request_id="req_1"
    )
    assert variables == {"secret__token": "active"}
    assert records == [
        {
            "variable_name": "secret__token",
            "old_value": "***",
            "new_value": "***",
            "updated_at": 1.0,
            "tool_name": "t",
            "tool_request_id": "req_1",
        }
    ]


def test_input_mapping_is_not_mutated() -> None:
    original = {"status": "unknown"}
    assign(original, ("status", "response.status"))
    assert original == {"status": "unknown"}
