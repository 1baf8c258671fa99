"""Which LLM the local agent uses (the platform's meaning of `prompt.llm`), how the custom LLM's
key and headers are found, what `check-config` says, and secret masking at config load."""

from __future__ import annotations

import json
import logging
import re
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus, unquote

import pytest
import yaml

from appliance.config import (
    Config,
    custom_llm_access,
    display_url,
    llm_summary,
    load_config_text,
    secret_env_name,
    select_llm,
    url_credentials,
)
from appliance.errors import ConfigError
from appliance.logs import MASK, redact, register_secret

URL = "https://llm.example.test/v1"
PROMPT = "conversation_config.agent.prompt"
CONTRADICTION = (
    "appliance.local.llm.backend: 'llama_cpp' contradicts conversation_config.agent.prompt.llm "
    "'custom-llm' (which calls prompt.custom_llm): remove the override to use the custom LLM, "
    "or set prompt.llm to another model to use the device's llama.cpp model"
)
URL_FOR_CUSTOM = (
    "conversation_config.agent.prompt.custom_llm.url: required when conversation_config.agent.prompt.llm "
    "is 'custom-llm'"
)
URL_FOR_OPENAI = (
    "conversation_config.agent.prompt.custom_llm.url: required when appliance.local.llm.backend is 'openai'"
)


def unique(prefix: str) -> str:
    """A fresh secret per test: the redactor's registry lives for the whole process."""
    return f"{prefix}{uuid.uuid4().hex[:12]}"


def document(
    llm: str | None = None,
    backend: str | None = None,
    url: str | None = None,
    custom: dict[str, Any] | None = None,
    **appliance: Any,
) -> dict[str, Any]:
    prompt: dict[str, Any] = {"prompt": "You are a test agent."}
    if llm is not None:
        prompt["llm"] = llm
    if url is not None or custom:
        prompt["custom_llm"] = {**({"url": url} if url else {}), **(custom or {})}
    doc: dict[str, Any] = {"conversation_config": {"agent": {"prompt": prompt}}, "appliance": dict(appliance)}
    if backend is not None:
        doc["appliance"]["local"] = {"llm": {"backend": backend}}
    return doc


def load(doc: dict[str, Any]) -> Config:
    return load_config_text(yaml.safe_dump(doc), "test.yaml", log_warnings=False)


# --------------------------------------------------------------------------- the selection table

SELECTION = [
    # prompt.llm,        backend,     custom_llm.url → the LLM the device uses, or the problems
    (None, None, None, "llama_cpp"),
    ("gemini-2.0-flash", None, None, "llama_cpp"),
    ("gemini-2.0-flash", None, URL, "llama_cpp"),  # a URL alone does not select it
    ("qwen3-4b", None, URL, "llama_cpp"),
    ("custom-llm", None, URL, "openai"),  # the platform's meaning, no override needed
    ("custom-llm", "openai", URL, "openai"),  # the old way keeps working
    (None, "openai", URL, "openai"),  # an explicit override (configs written before)
    ("gpt-4o-mini", "openai", URL, "openai"),
    (None, "llama_cpp", None, "llama_cpp"),
    ("gemini-2.0-flash", "llama_cpp", URL, "llama_cpp"),
    ("custom-llm", "llama_cpp", URL, [CONTRADICTION]),
    ("custom-llm", None, None, [URL_FOR_CUSTOM]),
    (None, "openai", None, [URL_FOR_OPENAI]),
    ("custom-llm", "openai", None, [URL_FOR_OPENAI]),
    ("custom-llm", "llama_cpp", None, [CONTRADICTION, URL_FOR_CUSTOM]),
]


@pytest.mark.parametrize(("llm", "backend", "url", "expected"), SELECTION)
def test_llm_selection_follows_the_platform(
    llm: str | None, backend: str | None, url: str | None, expected: str | list[str]
) -> None:
    if isinstance(expected, str):
        cfg = load(document(llm, backend, url))
        assert cfg.llm_backend == expected
        assert select_llm(llm, backend) == expected  # type: ignore[arg-type]
    else:
        with pytest.raises(ConfigError) as exc:
            load(document(llm, backend, url))
        assert exc.value.problems == expected


def test_the_default_backend_is_no_override() -> None:
    cfg = load(document())
    assert cfg.appliance.local.llm.backend is None
    with pytest.raises(ConfigError) as exc:
        load(document(backend="gpt"))
    assert exc.value.problems == ["appliance.local.llm.backend: 'gpt' is not one of 'llama_cpp' or 'openai'"]


def test_shipped_configs_select_as_documented() -> None:
    from appliance.config import load_config

    assets = Path(__file__).parents[1] / "appliance" / "assets"
    assert load_config(None, log_warnings=False).llm_backend == "llama_cpp"
    example = load_config(assets / "example-config.yaml", log_warnings=False)
    assert example.conversation_config.agent.prompt.llm == "custom-llm"
    assert example.llm_backend == "openai"


# --------------------------------------------------------------------------- request headers


def test_header_values_are_strings_secret_or_variable_references() -> None:
    headers = {"X-Org": "acme", "X-Key": {"secret_id": "k1"}, "X-User": {"variable_name": "user_name"}}
    cfg = load(document("custom-llm", url=URL, custom={"request_headers": headers}))
    custom = cfg.conversation_config.agent.prompt.custom_llm
    assert custom is not None and custom.request_headers == headers
    with pytest.raises(ConfigError) as exc:
        load(document("custom-llm", url=URL, custom={"request_headers": {"X-Bad": 3, "X-List": ["a"]}}))
    assert exc.value.problems == [
        f"{PROMPT}.custom_llm.request_headers.X-Bad: 3 is not a string, {{secret_id: ...}} or "
        "{variable_name: ...}",
        f"{PROMPT}.custom_llm.request_headers.X-List: a list is not a string, {{secret_id: ...}} or "
        "{variable_name: ...}",
    ]


def test_key_and_headers_come_from_the_environment() -> None:
    custom = {
        "model_id": "m1",
        "api_key": {"secret_id": "llm-key.1"},
        "request_headers": {
            "X-Org": "acme",
            "X-Api-Token": {"secret_id": "hdr"},
            "X-Missing": {"secret_id": "nowhere"},
            "X-User": {"variable_name": "secret__user_token"},
        },
        "api_version": "2024-06-01",
    }
    cfg = load(document("custom-llm", url=URL, custom=custom))
    assert secret_env_name("llm-key.1") == "APPLIANCE_SECRET_LLM_KEY_1"
    env = {"APPLIANCE_SECRET_LLM_KEY_1": "sk-from-secret", "APPLIANCE_SECRET_HDR": "tok-header"}
    access = custom_llm_access(cfg, env)
    assert access is not None
    assert (access.url, access.model_id, access.api_version) == (URL, "m1", "2024-06-01")
    assert (access.api_key, access.api_key_source) == ("sk-from-secret", "APPLIANCE_SECRET_LLM_KEY_1")
    assert access.headers == {"X-Org": "acme", "X-Api-Token": "tok-header"}
    assert access.variable_headers == {"X-User": "secret__user_token"}
    assert access.notes == [
        f"{PROMPT}.custom_llm.request_headers.X-Missing: the platform secret 'nowhere' is not on the device "
        "(set APPLIANCE_SECRET_NOWHERE in the environment or as a systemd credential); the header is not sent"
    ]
    assert set(access.secrets) == {"sk-from-secret", "tok-header"}
    # APPLIANCE_LLM_API_KEY (the documented variable) comes first.
    first = custom_llm_access(cfg, {**env, "APPLIANCE_LLM_API_KEY": "sk-documented"})
    assert first is not None and (first.api_key, first.api_key_source) == (
        "sk-documented",
        "APPLIANCE_LLM_API_KEY",
    )
    # Nothing set: said with the names to set, and the requests go without a key.
    bare = custom_llm_access(cfg, {})
    assert bare is not None and bare.api_key is None and bare.api_key_source == "none"
    assert bare.notes[0] == (
        f"{PROMPT}.custom_llm.api_key: the platform secret 'llm-key.1' is not on the device (set "
        "APPLIANCE_LLM_API_KEY or APPLIANCE_SECRET_LLM_KEY_1 in the environment or as a systemd credential); "
        "requests are sent without a key"
    )


def test_a_systemd_credential_provides_a_platform_secret(tmp_path: Path) -> None:
    (tmp_path / "appliance_secret_hdr").write_text("tok-from-credential\n")
    custom = {"request_headers": {"X-Token": {"secret_id": "hdr"}}}
    cfg = load(document("custom-llm", url=URL, custom=custom))
    access = custom_llm_access(cfg, {"CREDENTIALS_DIRECTORY": str(tmp_path)})
    assert access is not None and access.headers == {"X-Token": "tok-from-credential"}


# --------------------------------------------------------------------------- what check-config says


def test_summary_names_the_llm_with_the_url_password_masked() -> None:
    password = unique("pw")
    url = f"https://bob:{password}@llm.example.test:8443/v1?api_key=qk{password}&team=kitchen"
    cfg = load(document("custom-llm", url=url, custom={"model_id": "x"}))
    assert llm_summary(cfg, {}) == [
        f"LLM: custom LLM at https://bob:{MASK}@llm.example.test:8443/v1?api_key={MASK}&team=kitchen "
        "(model x, no API key)"
    ]
    assert llm_summary(cfg, {"APPLIANCE_LLM_API_KEY": "sk-abc-123"})[0].endswith(
        "(model x, key from APPLIANCE_LLM_API_KEY)"
    )
    assert url_credentials(url) == [password, f"qk{password}"]
    assert display_url("http://tok123456@h/v1") == f"http://{MASK}@h/v1"
    assert llm_summary(load(document()), {}) == ["LLM: local llama.cpp smollm2-135m-instruct"]
    auto = load(document(mode="auto", remote={"agent_id": "agent_1"}))
    assert llm_summary(auto, {}) == ["LLM (local fallback): local llama.cpp smollm2-135m-instruct"]
    remote = load(document("custom-llm", url=URL, mode="remote", remote={"agent_id": "agent_1"}))
    assert llm_summary(remote, {}) == [
        "LLM: the remote agent's (appliance.mode is remote: no LLM runs on the device)"
    ]


def test_check_config_prints_which_llm_the_device_uses(tmp_path: Path) -> None:
    password = unique("pw")
    path = tmp_path / "config.yaml"
    custom = {"model_id": "x", "api_key": {"secret_id": "k9"}}
    path.write_text(
        yaml.safe_dump(document("custom-llm", url=f"https://u:{password}@h.test/v1", custom=custom))
    )
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    proc = subprocess.run(
        [sys.executable, "-m", "appliance", "check-config", str(path)],
        capture_output=True, text=True, timeout=60, env=env,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout.splitlines()
    assert f"LLM: custom LLM at https://u:{MASK}@h.test/v1 (model x, no API key)" in out
    assert any(
        line.startswith(f"warning: {PROMPT}.custom_llm.api_key: the platform secret 'k9'") for line in out
    )
    assert out[-1] == f"{path}: OK (mode local, 0 warning(s))"
    assert password not in proc.stdout + proc.stderr
    path.write_text(yaml.safe_dump(document("gemini-2.0-flash", url=URL)))
    proc = subprocess.run(
        [sys.executable, "-m", "appliance", "check-config", str(path)],
        capture_output=True, text=True, timeout=60, env=env,
    )  # fmt: skip
    assert "LLM: local llama.cpp smollm2-135m-instruct" in proc.stdout.splitlines()
    path.write_text(yaml.safe_dump(document("custom-llm", "llama_cpp", URL)))
    proc = subprocess.run(
        [sys.executable, "-m", "appliance", "check-config", str(path)],
        capture_output=True, text=True, timeout=60, env=env,
    )  # fmt: skip
    assert proc.returncode == 2 and f"  {CONTRADICTION}" in proc.stderr.splitlines()


# --------------------------------------------------------------------------- masking


def test_percent_encoded_and_decoded_forms_are_masked() -> None:
    secret = unique("p@ss/w rd:")
    register_secret(secret)
    encoded = quote(secret, safe="")
    lower_hex = re.sub(r"%[0-9A-F]{2}", lambda m: m.group(0).lower(), encoded)
    assert encoded != secret and lower_hex != encoded
    for form in (secret, encoded, lower_hex, quote(secret), quote_plus(secret, safe="")):
        assert redact(f"<{form}>") == f"<{MASK}>", form
    in_url = unique("x%40y")  # registered as written in a URL; its decoded form is x@y...
    register_secret(in_url)
    assert redact(f"user {unquote(in_url)} end") == f"user {MASK} end"


def test_config_load_registers_every_key_in_local_mode(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Local mode: the ElevenLabs key, the custom LLM key, header secrets and the URL password are
    masked in events and log lines from the moment the file is loaded (issue 9 point 13)."""
    from appliance.logs import RedactingFilter, _RedactingFormatter
    from appliance.runtime.event_log import EventLog

    eleven, llm_key, header, password, variable = (
        unique("sk_eleven_"), unique("sk-llm-"), unique("hdr-"), unique("p%40w"), unique("var-")
    )  # fmt: skip
    monkeypatch.setenv("ELEVENLABS_API_KEY", eleven)
    monkeypatch.setenv("APPLIANCE_LLM_API_KEY", llm_key)
    monkeypatch.setenv("APPLIANCE_SECRET_HDR", header)
    monkeypatch.setenv("APPLIANCE_SECRET_TOKEN", variable)  # the value of secret__token
    custom = {"request_headers": {"X-Token": {"secret_id": "hdr"}}}
    doc = document("custom-llm", url=f"http://bob:{password}@127.0.0.1:9/v1", custom=custom)
    doc["conversation_config"]["agent"]["dynamic_variables"] = {
        "dynamic_variable_placeholders": {"secret__token": ""}
    }
    cfg = load(doc)
    assert cfg.appliance.mode == "local"
    reply = f"the key is {eleven}, {llm_key}; header {header}; url http://bob:{password}@h; {variable}"
    decoded = f"and decoded {unquote(password)}"  # the password as the server may echo it
    clock = type("Clock", (), {"now": lambda self: 0.0})()
    events = EventLog(clock, tmp_path / "events.jsonl")
    events.emit("agent_response", agent_response=reply + " " + decoded)
    events.emit("error", code="llm_http_error", message=f"LLM answered HTTP 500; body: {reply}")
    events.close()
    text = (tmp_path / "events.jsonl").read_text()
    for secret in (eleven, llm_key, header, password, unquote(password), variable):
        assert secret not in text
    first = json.loads(text.splitlines()[0])
    assert first["agent_response"] == (
        f"the key is {MASK}, {MASK}; header {MASK}; url http://bob:{MASK}@h; {MASK} and decoded {MASK}"
    )
    # Log output: the formatter and filter `setup_logging` installs.
    record = logging.LogRecord("appliance.test", logging.WARNING, __file__, 1, "LLM said: %s", (reply,), None)
    handler_filter = RedactingFilter()
    assert handler_filter.filter(record)
    line = _RedactingFormatter("%(levelname)s %(message)s", journald=False).format(record)
    assert (
        line == f"WARNING LLM said: the key is {MASK}, {MASK}; header {MASK}; url http://bob:{MASK}@h; {MASK}"
    )


def test_the_secret_registry_is_bounded_and_keeps_the_first_secrets() -> None:
    """A signed URL per remote connection for months must not grow it without end (run in a
    fresh process: the registry is process-wide)."""
    script = """
import appliance.logs as logs
from appliance.logs import MASK, redact, register_secret
register_secret("config-key-0000")
for i in range(3000):
    register_secret(f"signed-{i:06d}")
assert len(logs._SECRETS) == logs._MAX_SECRETS, len(logs._SECRETS)
assert redact("config-key-0000") == MASK  # registered first: kept
assert redact("signed-002999") == MASK  # the newest: kept
assert redact("signed-001000") == "signed-001000"  # rotated out
print("ok")
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr
