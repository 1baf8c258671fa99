"""The remote ElevenLabs Agents adapter: the session shell (`session`), its audio plumbing
(`audio`) and the signed-URL provider (`signed_url`). Decisions live in `core.remote_session`."""

from appliance.adapters.elevenlabs.session import ElevenLabsAgentSession, RemoteSettings
from appliance.adapters.elevenlabs.signed_url import SignedUrlProvider

__all__ = ["ElevenLabsAgentSession", "RemoteSettings", "SignedUrlProvider"]
