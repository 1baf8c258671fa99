"""Signed URLs for private ElevenLabs agents (httpx): `GET /v1/convai/conversation/get-signed-url`.

`SignedUrlProvider()` is awaited for every connection (each session and each reconnect): a
signed URL can open one conversation within 15 minutes, so it is never reused. The API key
goes only into the `xi-api-key` header; it and the signature in the returned URL are
registered as secrets, so neither ever reaches a log line, an event or an error message.

One overall deadline covers the whole request (connect, headers, body): httpx's own timeouts
are per operation, so an endpoint trickling a byte every few seconds would never trip them.
The answer is read up to `MAX_ANSWER_BYTES`. Failures carry a code per cause:

| code | cause | retried |
|---|---|---|
| `remote_signed_url_timeout` | no complete answer within `timeout_s` | yes |
| `remote_unreachable` | connection refused, reset, DNS | yes |
| `remote_tls_failed` | the TLS handshake failed (certificate, clock, proxy) | no |
| `remote_auth_failed` | HTTP 401/403: the API key was refused | no |
| `remote_signed_url_rejected` | any other HTTP 4xx (404: unknown agent) | no |
| `remote_signed_url_server_error` | HTTP 5xx or 429 | yes |
| `remote_signed_url_not_json` | the answer is not JSON (a captive portal, a proxy page) | no |
| `remote_signed_url_missing` | JSON without a ws:// or wss:// `signed_url` | no |
"""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit

import httpx

from appliance.core.elevenlabs_protocol import (
    SignedUrlAnswerError,
    parse_signed_url_response,
    signed_url_endpoint,
    tls_detail,
    tls_failure,
    url_secrets,
)
from appliance.errors import AgentError
from appliance.logs import register_secret

MAX_ANSWER_BYTES = 64 * 1024
TIMEOUT_S = 10.0
"""How long a signed URL may take when the caller gives no `timeout_s`: from the request to
the whole answer (a server that trickles its answer byte by byte is cut off, too)."""


class SignedUrlProvider:
    def __init__(
        self,
        base_url: str,
        agent_id: str,
        api_key: str,
        *,
        timeout_s: float | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        register_secret(api_key)
        self.endpoint = signed_url_endpoint(base_url, agent_id)
        self._api_key = api_key
        self._timeout_s = TIMEOUT_S if timeout_s is None else timeout_s
        self._transport = transport
        self.requests = 0

    async def __call__(self) -> str:
        self.requests += 1
        host = urlsplit(self.endpoint).hostname or "the server"
        try:
            async with asyncio.timeout(self._timeout_s):
                status, body = await self._get()
        except (TimeoutError, httpx.TimeoutException):
            raise AgentError(
                f"no signed URL from {self.endpoint} within {self._timeout_s:g} s",
                code="remote_signed_url_timeout",
                retryable=True,
            ) from None
        except httpx.HTTPError as err:
            tls = tls_failure(err)
            if tls is not None:
                raise AgentError(
                    f"the TLS handshake with {host} failed when asking for a signed URL "
                    f"({tls_detail(tls)}); check the system clock, the CA certificates and any proxy",
                    code="remote_tls_failed",
                    retryable=False,
                ) from None
            raise AgentError(
                f"cannot get a signed URL from {self.endpoint} ({type(err).__name__})",
                code="remote_unreachable",
                retryable=True,
            ) from None
        if status in (401, 403):
            raise AgentError(
                f"the ElevenLabs API key was refused (HTTP {status}) when asking for a signed URL; "
                "check ELEVENLABS_API_KEY",
                code="remote_auth_failed",
                retryable=False,
            )
        if status >= 500 or status == 429:
            raise AgentError(
                f"getting a signed URL failed with HTTP {status} (the server's side; retrying)",
                code="remote_signed_url_server_error",
                retryable=True,
            )
        if status >= 400:
            hint = "; check appliance.remote.agent_id" if status == 404 else ""
            raise AgentError(
                f"getting a signed URL was refused with HTTP {status}{hint}",
                code="remote_signed_url_rejected",
                retryable=False,
            )
        try:
            url = parse_signed_url_response(body)
        except SignedUrlAnswerError as err:
            code = "remote_signed_url_not_json" if err.cause == "not_json" else "remote_signed_url_missing"
            message = f"{err} (HTTP {status} from {self.endpoint})"
            raise AgentError(message, code=code, retryable=False) from None
        register_secret(url)
        for secret in url_secrets(url):
            register_secret(secret)
        return url

    async def _get(self) -> tuple[int, bytes]:
        async with (
            httpx.AsyncClient(timeout=self._timeout_s, transport=self._transport) as client,
            client.stream("GET", self.endpoint, headers={"xi-api-key": self._api_key}) as response,
        ):
            body = bytearray()
            async for part in response.aiter_bytes():
                body += part
                if len(body) > MAX_ANSWER_BYTES:
                    raise AgentError(
                        f"the signed URL answer from {self.endpoint} is larger than {MAX_ANSWER_BYTES} bytes",
                        code="remote_signed_url_missing",
                        retryable=False,
                    )
            return response.status_code, bytes(body)
