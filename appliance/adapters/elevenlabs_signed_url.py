"""Signed URLs for private ElevenLabs agents (httpx): `GET /v1/convai/conversation/get-signed-url`.

`SignedUrlProvider()` is awaited for every connection (each session and each reconnect): a
signed URL can open one conversation within 15 minutes, so it is never reused. The API key
goes only into the `xi-api-key` header; it and the signature in the returned URL are
registered as secrets, so neither ever reaches a log line, an event or an error message.
"""

from __future__ import annotations

import httpx

from appliance.core.elevenlabs_protocol import parse_signed_url_response, signed_url_endpoint, url_secrets
from appliance.errors import AgentError
from appliance.logs import register_secret


class SignedUrlProvider:
    def __init__(
        self,
        base_url: str,
        agent_id: str,
        api_key: str,
        *,
        timeout_s: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        register_secret(api_key)
        self.endpoint = signed_url_endpoint(base_url, agent_id)
        self._api_key = api_key
        self._timeout_s = timeout_s
        self._transport = transport
        self.requests = 0

    async def __call__(self) -> str:
        self.requests += 1
        try:
            async with httpx.AsyncClient(timeout=self._timeout_s, transport=self._transport) as client:
                response = await client.get(self.endpoint, headers={"xi-api-key": self._api_key})
        except httpx.HTTPError as err:
            raise AgentError(
                f"cannot get a signed URL from {self.endpoint} ({type(err).__name__})",
                code="remote_unreachable",
                retryable=True,
            ) from None
        status = response.status_code
        if status in (401, 403):
            raise AgentError(
                f"the ElevenLabs API key was refused (HTTP {status}) when asking for a signed URL; "
                "check ELEVENLABS_API_KEY",
                code="remote_auth_failed",
                retryable=False,
            )
        if status >= 400:
            raise AgentError(
                f"getting a signed URL failed with HTTP {status}",
                code="remote_signed_url_failed",
                retryable=status >= 500 or status == 429,
            )
        try:
            url = parse_signed_url_response(response.text)
        except ValueError as err:
            raise AgentError(str(err), code="remote_signed_url_failed", retryable=True) from None
        register_secret(url)
        for secret in url_secrets(url):
            register_secret(secret)
        return url
