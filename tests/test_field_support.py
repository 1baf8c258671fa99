"""Every modelled field is in FIELD_SUPPORT: honoured on the device, or ignored with a reason."""

from __future__ import annotations

from types import NoneType, UnionType
from typing import Annotated, Any, Union, get_args, get_origin

import pytest
import yaml
from pydantic import BaseModel

from appliance.agent_config import BuiltInTools, ConversationConfig, PlatformSettings
from appliance.config import DeviceTool, load_config_text
from appliance.field_support import FIELD_SUPPORT


def _models(tp: Any) -> list[tuple[type[BaseModel], str]]:
    """The models inside a field's type, each with the path suffix that reaches it."""
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return [(tp, "")]
    origin, args = get_origin(tp), get_args(tp)
    if origin is Annotated:
        return _models(args[0])
    if origin in (Union, UnionType):
        return [m for a in args if a is not NoneType for m in _models(a)]
    if origin is list:
        return [(m, "[]" + s) for m, s in _models(args[0])]
    if origin is dict:
        return [(m, ".*" + s) for m, s in _models(args[1])]
    return []


def modelled_fields(model: type[BaseModel], prefix: str) -> set[str]:
    out: set[str] = set()
    for name, info in model.model_fields.items():
        path = f"{prefix}.{'*' if model is BuiltInTools else name}"
        inner = _models(info.annotation)
        if not inner:
            out.add(path)
        for sub, suffix in inner:
            out |= modelled_fields(sub, path + suffix)
    return out


def test_every_modelled_field_is_honoured_or_ignored_with_a_reason() -> None:
    fields = (
        modelled_fields(ConversationConfig, "conversation_config")
        | modelled_fields(PlatformSettings, "platform_settings")
        | modelled_fields(DeviceTool, "appliance.tools[]")
    )
    assert sorted(fields - FIELD_SUPPORT.keys()) == []  # a new field needs a line in the table
    assert sorted(FIELD_SUPPORT.keys() - fields) == []  # and the table names no field that is gone
    for path, support in FIELD_SUPPORT.items():
        assert support.startswith(("honoured", "ignored: ")), path
        assert support == "honoured" or len(support.split(": ", 1)[1]) > 5, path


def check(settings: dict[str, Any], mode: str = "local") -> list[str]:
    doc: dict[str, Any] = {"appliance": {"mode": mode, "remote": {"agent_id": "a"}}}
    for path, value in settings.items():
        node = doc
        *parents, last = path.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    cfg = load_config_text(yaml.safe_dump(doc), "t.yaml", log_warnings=False)
    return [w for w in cfg.warnings if "ignored on the device:" in w]


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        ({"conversation_config.agent.prompt.tool_ids": ["t1"]},
         ["conversation_config.agent.prompt.tool_ids: ignored on the device: platform tools live in the "
          "cloud; device tools go under appliance.tools"]),
        ({"conversation_config.agent.prompt.tool_ids": []}, []),  # the default: nothing to say
        ({"conversation_config.conversation.text_only": True},
         ["conversation_config.conversation.text_only: ignored on the device: the local agent is a voice "
          "agent (the remote session sends it as an override)"]),
        ({"conversation_config.agent.prompt.built_in_tools.end_call": {"response_timeout_secs": 5}},
         ["conversation_config.agent.prompt.built_in_tools.end_call.response_timeout_secs: ignored on the "
          "device: system tools run inside the device's conversation machine, at once"]),
        ({"conversation_config.agent.prompt.built_in_tools.transfer_to_number": {"response_timeout_secs": 5}},
         []),  # a cloud tool has its own line (cloud-only tool)
        ({"platform_settings.overrides.enable_conversation_initiation_client_data_from_webhook": True},
         ["platform_settings.overrides.enable_conversation_initiation_client_data_from_webhook: ignored on "
          "the device: the initiation webhook is called by the cloud"]),
    ],
)  # fmt: skip
def test_check_config_lists_ignored_fields_that_are_set(
    settings: dict[str, Any], expected: list[str]
) -> None:
    assert check(settings) == expected


def test_remote_mode_lists_nothing_the_platform_agent_honours() -> None:
    assert check({"conversation_config.conversation.text_only": True}, mode="remote") == []
