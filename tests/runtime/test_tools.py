"""Device tools: client callables and webhooks, with timeouts, errors and assignments."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import pytest

from appliance.config import DeviceTool
from appliance.core.conversation import ToolCall
from appliance.logs import register_secret
from appliance.runtime.clock import StreamClock
from appliance.runtime.event_log import EventLog
from appliance.runtime.tools import DeviceToolRunner, ToolSetupError

HANDLERS = "appliance.testing.example_tools"


def tool(**kw: Any) -> DeviceTool:
    return DeviceTool.model_validate({"description": "a tool", **kw})


def runner(
    tools: list[DeviceTool], variables: dict[str, Any] | None = None
) -> tuple[DeviceToolRunner, EventLog]:
    events = EventLog(StreamClock())
    events.keep_history = True
    return DeviceToolRunner(
        tools, variables if variables is not None else {}, events=events, clock=StreamClock()
    ), events


def run(r: DeviceToolRunner, name: str, **args: Any) -> tuple[str, bool]:
    return asyncio.run(r.run(ToolCall("call_1", name, args)))


def test_client_tool_sync_and_async_and_assignments() -> None:
    variables: dict[str, Any] = {"battery": "unknown"}
    r, events = runner(
        [
            tool(type="client", name="get_battery", handler=f"{HANDLERS}:get_battery",
                 assignments=[{"dynamic_variable": "battery", "value_path": "response.level"},
                              {"dynamic_variable": "device", "value_path": "response.device.name"},
                              {"dynamic_variable": "nothing", "value_path": "response.missing.path"}]),
            tool(type="client", name="set_volume", handler=f"{HANDLERS}:set_volume"),
        ],
        variables,
    )  # fmt: skip
    result, is_error = run(r, "get_battery", unit="percent")
    assert not is_error and json.loads(result)["level"] == 87
    assert variables["battery"] == 87 and variables["device"] == "kiosk-1" and "nothing" not in variables
    updates = [e for e in events.history if e["type"] == "dynamic_variable_update"]
    assert [u["variable_name"] for u in updates] == ["battery", "device"]
    assert run(r, "set_volume", level=3) == ("volume set to 3", False)


def test_client_tool_errors_and_timeouts_go_back_as_error_results() -> None:
    r, _ = runner(
        [
            tool(type="client", name="broken", handler=f"{HANDLERS}:broken"),
            tool(type="client", name="slow", handler=f"{HANDLERS}:slow", response_timeout_secs=1),
        ]
    )
    result, is_error = run(r, "broken")
    assert is_error and "the lamp is unplugged" in result
    result, is_error = run(r, "slow")
    assert is_error and "did not answer within 1 seconds" in result
    assert run(r, "no_such_tool") == ("error: unknown tool 'no_such_tool'", True)


def test_unresolvable_handler_fails_at_setup() -> None:
    with pytest.raises(ToolSetupError, match="cannot load"):
        runner([tool(type="client", name="x", handler="no.such.module:func")])
    with pytest.raises(ToolSetupError, match="entry point"):
        runner([tool(type="client", name="not_registered_anywhere")])


class _Recorder(BaseHTTPRequestHandler):
    seen: ClassVar[list[dict[str, Any]]] = []

    def log_message(self, *args: Any) -> None:
        pass

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length).decode() if length else ""
        _Recorder.seen.append(
            {"method": self.command, "path": self.path, "headers": dict(self.headers), "body": body}
        )
        if "fail" in self.path:
            self.send_response(503)
            self.end_headers()
            self.wfile.write(b"maintenance")
            return
        payload = json.dumps({"response_ok": True, "temperature": 21.5}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = _answer
    do_POST = _answer


@pytest.fixture
def http_server() -> Iterator[str]:
    _Recorder.seen = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_webhook_path_query_body_headers_and_secret(
    http_server: str, caplog: pytest.LogCaptureFixture
) -> None:
    secret = "tok-3f9a7c1e5b"
    register_secret(secret)
    variables: dict[str, Any] = {"secret__token": secret, "city_id": "paris-01", "units": "metric"}
    webhook = tool(
        type="webhook",
        name="weather",
        api_schema={
            "url": http_server + "/weather/{city}",
            "method": "POST",
            "path_params_schema": {"city": {"type": "string", "dynamic_variable": "city_id"}},
            "query_params_schema": {"properties": {"days": {"type": "integer"}}, "required": ["days"]},
            "request_body_schema": {
                "type": "object",
                "properties": {
                    "units": {"type": "string", "dynamic_variable": "units"},
                    "note": {"type": "string"},
                },
            },
            "request_headers": {"Authorization": "Bearer {{secret__token}}", "X-Device": "kiosk"},
        },
        assignments=[{"dynamic_variable": "temp", "value_path": "response.temperature"}],
    )
    r, _ = runner([webhook], variables)
    result, is_error = run(r, "weather", query_params={"days": 2}, request_body={"note": "hi"})
    assert not is_error and json.loads(result)["temperature"] == 21.5
    (req,) = _Recorder.seen
    assert req["method"] == "POST" and req["path"] == "/weather/paris-01?days=2"
    assert req["headers"]["Authorization"] == f"Bearer {secret}"
    assert json.loads(req["body"]) == {"note": "hi", "units": "metric"}
    assert variables["temp"] == 21.5
    assert secret not in caplog.text


def test_webhook_http_error_is_an_error_result(http_server: str) -> None:
    r, _ = runner([tool(type="webhook", name="w", api_schema={"url": http_server + "/fail"})])
    result, is_error = run(r, "w")
    assert is_error and "HTTP 503" in result and "maintenance" in result


def test_webhook_unreachable_is_an_error_result() -> None:
    r, _ = runner(
        [tool(type="webhook", name="w", api_schema={"url": "http://127.0.0.1:9/x"}, response_timeout_secs=2)]
    )
    result, is_error = run(r, "w")
    assert is_error and "error:" in result


def test_webhook_secret_id_headers_come_from_the_environment(
    http_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("APPLIANCE_SECRET_WEATHER_KEY", "wk-5be1c0ffee")
    webhook = tool(
        type="webhook",
        name="weather",
        api_schema={
            "url": http_server + "/weather/x",
            "request_headers": {"X-Key": {"secret_id": "weather-key"}},
        },
    )
    r, _ = runner([webhook])
    result, is_error = run(r, "weather")
    assert not is_error, result
    (req,) = _Recorder.seen
    assert req["headers"]["X-Key"] == "wk-5be1c0ffee"


def test_system_variables_are_fresh_at_each_call(http_server: str) -> None:
    """`system__time` and `system__call_duration_secs` are "updated at execution": a webhook
    parameter filled from them carries the value of the moment of the call."""
    ticks = iter(range(1, 10))
    variables: dict[str, Any] = {"system__call_duration_secs": "0", "system__time": "start"}

    def refresh() -> dict[str, Any]:
        n = next(ticks)
        return {"system__call_duration_secs": str(n * 7), "system__time": f"2026-01-01T10:00:0{n}+00:00"}

    webhook = tool(
        type="webhook",
        name="log",
        api_schema={
            "url": http_server + "/log",
            "method": "POST",
            "request_body_schema": {
                "type": "object",
                "properties": {
                    "secs": {"type": "string", "dynamic_variable": "system__call_duration_secs"},
                    "at": {"type": "string", "dynamic_variable": "system__time"},
                },
            },
        },
    )
    events = EventLog(StreamClock())
    r = DeviceToolRunner([webhook], variables, events=events, clock=StreamClock(), refresh=refresh)
    for expected in (
        {"secs": "7", "at": "2026-01-01T10:00:01+00:00"},
        {"secs": "14", "at": "2026-01-01T10:00:02+00:00"},
    ):
        _Recorder.seen = []
        result, is_error = run(r, "log")
        assert not is_error, result
        (req,) = _Recorder.seen
        assert json.loads(req["body"]) == expected
