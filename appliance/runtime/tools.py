"""Device tools: Python callables (client tools) and HTTP webhooks (server tools).

Client tools run a function named by `handler: "package.module:function"`, or one registered
under the `appliance.tools` entry-point group with the tool's name. Webhook tools follow the
platform's `api_schema` (path, query and body parameters; headers with constant values,
`{variable_name}` references or `secret__` dynamic variables). Every call has the tool's
`response_timeout_secs` as one overall deadline (connection, request, the whole answer);
failures and timeouts go back to the LLM as error results, never crash the session. A call is
cancelled with its turn (a stop); a blocking client handler runs on a daemon thread, so one that
never returns holds neither the session nor the process's exit. Answers are read up to
`MAX_RESPONSE_BYTES`. `assignments` copy values from a result into the dynamic variables.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import inspect
import json
import logging
import threading
from collections.abc import Callable, Mapping, MutableMapping
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from appliance.config import DeviceTool, read_secret, secret_env_name
from appliance.core import variables as dv
from appliance.core.conversation import ToolCall
from appliance.logs import redact, redact_value
from appliance.ports import Clock, EventSink

if TYPE_CHECKING:  # httpx is imported when a webhook tool runs, not at idle
    import httpx

_LOGGER = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "appliance.tools"
MAX_RESPONSE_BYTES = 1 << 20


class ToolSetupError(Exception):
    pass


def resolve_handler(tool: DeviceTool) -> Callable[..., Any]:
    """The function behind a client tool, by module path or entry point."""
    if tool.handler:
        module_name, _, attr = tool.handler.partition(":")
        try:
            module = importlib.import_module(module_name)
            func = getattr(module, attr)
        except (ImportError, AttributeError) as err:
            raise ToolSetupError(
                f"appliance.tools[{tool.name}].handler: cannot load {tool.handler}: {err}"
            ) from err
    else:
        found = [ep for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.name == tool.name]
        if not found:
            raise ToolSetupError(
                f"appliance.tools[{tool.name}]: no handler given and no '{ENTRY_POINT_GROUP}' entry point "
                f"named '{tool.name}' is installed"
            )
        func = found[0].load()
    if not callable(func):
        raise ToolSetupError(f"appliance.tools[{tool.name}].handler: {tool.handler} is not callable")
    return func  # type: ignore[no-any-return]


def _result_text(result: Any) -> str:
    if result is None:
        return "ok"
    if isinstance(result, str):
        return result
    return json.dumps(result, ensure_ascii=False, default=str)


def _fill(
    schema: Mapping[str, Any] | None, given: Mapping[str, Any], variables: Mapping[str, Any]
) -> dict[str, Any]:
    """LLM-provided values plus the ones the device fills (constants, dynamic variables)."""
    out = dict(given)
    for name, prop in (schema or {}).items():
        if not isinstance(prop, Mapping):
            continue
        if prop.get("constant_value") not in (None, ""):
            out[name] = prop["constant_value"]
        elif prop.get("dynamic_variable"):
            var = str(prop["dynamic_variable"])
            if var not in variables:
                raise dv.MissingVariableError(var, f"the parameter '{name}'")
            out[name] = variables[var]
    return out


class DeviceToolRunner:
    def __init__(
        self,
        tools: list[DeviceTool],
        variables: MutableMapping[str, dv.VariableValue],
        *,
        events: EventSink,
        clock: Clock,
        http: httpx.AsyncClient | None = None,
        refresh: Callable[[], Mapping[str, dv.VariableValue]] | None = None,
    ) -> None:
        self._refresh = refresh
        """The variables updated at each call (`system__time`, `system__call_duration_secs`)."""
        self._tools = {t.name: t for t in tools}
        self._variables = variables
        self._events = events
        self._clock = clock
        self._http = http
        self._handlers: dict[str, Callable[..., Any]] = {}
        for tool in tools:
            if tool.type == "client":
                self._handlers[tool.name] = resolve_handler(tool)
        if any(tool.type != "client" for tool in tools):
            import httpx  # noqa: F401  (here, not at the first call: importing it blocks ~0.1-0.5 s)

    def expects_response(self, name: str) -> bool:
        """Webhook tools always answer; a client tool only with `expects_response: true`."""
        tool = self._tools.get(name)
        return tool is None or tool.type != "client" or tool.expects_response

    async def run(self, call: ToolCall) -> tuple[str, bool]:
        tool = self._tools.get(call.name)
        if tool is None:
            return f"error: unknown tool '{call.name}'", True
        timeout = float(tool.response_timeout_secs)
        if self._refresh is not None:  # "updated at execution" (seed digest §5.1)
            self._variables.update(self._refresh())
        try:
            if tool.type == "client":
                result = await asyncio.wait_for(self._client(tool, call.arguments), timeout)
            else:
                result = await asyncio.wait_for(self._webhook(tool, call.arguments), timeout)
        except TimeoutError:
            _LOGGER.warning("tool %s timed out after %.0f s", tool.name, timeout)
            return f"error: the tool '{tool.name}' did not answer within {timeout:g} seconds", True
        except asyncio.CancelledError:
            raise
        except Exception as err:
            message = redact(f"{type(err).__name__}: {err}")
            _LOGGER.warning("tool %s failed: %s", tool.name, message)
            return f"error: {message}", True
        self._assign(tool, call, result)
        return redact(_result_text(result)), False

    async def _client(self, tool: DeviceTool, arguments: Mapping[str, Any]) -> Any:
        func = self._handlers[tool.name]
        args = _fill((tool.parameters or {}).get("properties"), arguments, self._variables)
        if inspect.iscoroutinefunction(func):
            return await func(**args)
        return await _in_daemon_thread(tool.name, func, args)

    async def _webhook(self, tool: DeviceTool, arguments: Mapping[str, Any]) -> Any:
        api = tool.api_schema
        assert api is not None  # validated by the config
        path_args = _fill(api.path_params_schema, arguments.get("path_params") or {}, self._variables)
        query = api.query_params_schema or {}
        query_args = _fill(query.get("properties"), arguments.get("query_params") or {}, self._variables)
        body_schema = api.request_body_schema or {}
        body = arguments.get("request_body")
        if body_schema:
            body = _fill(body_schema.get("properties"), body or {}, self._variables)
        url = api.url
        for name, value in path_args.items():
            url = url.replace("{" + name + "}", quote(dv.format_value(value), safe=""))
        headers = self._headers(api.request_headers or {})
        # The call's deadline is the tool's `response_timeout_secs` (the caller's wait_for), not
        # httpx's default of 5 s per read.
        import httpx  # already imported by __init__ for webhook tools

        client = self._http or httpx.AsyncClient(timeout=float(tool.response_timeout_secs))
        try:
            request = client.build_request(
                api.method, url, params={k: dv.format_value(v) for k, v in query_args.items()} or None,
                json=body if api.method in ("POST", "PUT", "PATCH") else None, headers=headers,
            )  # fmt: skip
            response = await client.send(request, stream=True)
            try:
                raw = bytearray()
                async for piece in response.aiter_bytes():
                    raw += piece
                    if len(raw) > MAX_RESPONSE_BYTES:
                        raise RuntimeError(f"the answer is longer than {MAX_RESPONSE_BYTES} bytes")
            finally:
                await response.aclose()
        finally:
            if self._http is None:
                await client.aclose()
        text = bytes(raw).decode(response.encoding or "utf-8", "replace")
        if response.status_code >= 400:
            raise RuntimeError(f"HTTP {response.status_code}: {text[:200]}")
        try:
            return json.loads(text)
        except ValueError:
            return text

    def _headers(self, spec: Mapping[str, Any]) -> dict[str, str]:
        headers: dict[str, str] = {}
        for name, value in spec.items():
            if isinstance(value, Mapping) and value.get("variable_name"):
                var = str(value["variable_name"])
                if var not in self._variables:
                    raise dv.MissingVariableError(var, f"the header '{name}'")
                headers[name] = dv.format_value(self._variables[var])
            elif isinstance(value, Mapping) and value.get("secret_id"):
                env_name = secret_env_name(str(value["secret_id"]))
                secret = read_secret(env_name)
                if secret is None:  # refused by check-config and at the start; gone since?
                    raise ToolSetupError(
                        f"header '{name}': the platform secret is not on the device (set {env_name})"
                    )
                headers[name] = secret
            else:
                headers[name] = dv.render(
                    str(value), self._variables, allow_secrets=True, where=f"the header '{name}'"
                )
        return headers

    def _assign(self, tool: DeviceTool, call: ToolCall, result: Any) -> None:
        if not tool.assignments:
            return
        assignments = [a.model_dump() for a in tool.assignments]
        updated, audit = dv.apply_assignments(
            self._variables,
            assignments,
            result,
            tool_name=tool.name,
            now=self._clock.now(),
            tool_request_id=call.id,
        )
        self._variables.clear()
        self._variables.update(updated)
        for record in audit:
            self._events.emit("dynamic_variable_update", **redact_value(record))


async def _in_daemon_thread(name: str, func: Callable[..., Any], args: Mapping[str, Any]) -> Any:
    """`func(**args)` on a daemon thread: awaiting it is cancellable, and a handler that never
    returns is left behind without holding the process (the default executor would)."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[Any] = loop.create_future()

    def settle(result: Any, error: BaseException | None) -> None:
        if future.done():
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)

    def work() -> None:
        try:
            result, error = func(**args), None
        except Exception as err:
            result, error = None, err
        with contextlib.suppress(RuntimeError):  # the loop is gone: nobody waits any more
            loop.call_soon_threadsafe(settle, result, error)

    threading.Thread(target=work, name=f"tool-{name}", daemon=True).start()
    return await future
