"""A fake ElevenLabs Agents server (a test tool: the product never imports it): the documented
WebSocket protocol on 127.0.0.1, scripted.

For tests, benchmarks and trying the appliance without an account:

    appliance fake-server --port 8765 --scenario conversation
    # appliance.remote: {base_url: ws://127.0.0.1:8765, agent_id: agent_fake}

    with FakeElevenLabsServer(FakeOptions(scenario="tool")) as server:
        ... server.url (ws://127.0.0.1:PORT), server.http_url, server.records ...

One port serves both the conversation WebSocket (`/v1/convai/conversation?agent_id=…`) and the
HTTP `GET /v1/convai/conversation/get-signed-url?agent_id=…` (through websockets'
`process_request` hook). With `api_key` set, the signed-URL endpoint checks `xi-api-key` and
hands out single-use `ws://…&conversation_signature=…` URLs, which the WebSocket then requires.

Faults before the conversation: `signed_url_fault` (`trickle`: the answer one byte every
`trickle_interval_s`; `not_json`, `no_signed_url`, `http_404`, `http_500`...) and
`handshake_delay_s` (the WebSocket upgrade is answered that late). `metadata_fields` overrides
fields of `conversation_initiation_metadata` (e.g. `agent_output_audio_format: mp3_44100`).
`faulty_first=N` limits both to the first N requests or connections.

The fake has no speech recognition: it hears *that* the user spoke, from the energy and duration
of the received `user_audio_chunk`s, and answers with scripted transcripts and replies (spoken by
`voice`, piper or tones). Scenarios are in `scenarios.py`.
Everything a client sends is recorded (`ConnectionRecord`), with monotonic timestamps.

Modules: `voices` (text → audio), `hearing` (user turns from received audio),
`conversation` (options, records, one connection as scenarios script it), `scenarios` (the
scripted server behaviours, by name), `server` (the WebSocket and signed-URL endpoint, running
one scenario object), `__main__` (`python -m appliance.testing.fake_elevenlabs`, also
`appliance fake-server`).
"""

from appliance.testing.fake_elevenlabs.conversation import (
    ConnectionRecord,
    FakeConversation,
    FakeOptions,
    Scenario,
)
from appliance.testing.fake_elevenlabs.hearing import TurnDetector, UserTurn
from appliance.testing.fake_elevenlabs.scenarios import SCENARIOS, scenario
from appliance.testing.fake_elevenlabs.server import FakeElevenLabsServer
from appliance.testing.fake_elevenlabs.voices import RATE_HZ, Voice, piper_voice, tone, tone_voice

__all__ = [
    "RATE_HZ",
    "SCENARIOS",
    "ConnectionRecord",
    "FakeConversation",
    "FakeElevenLabsServer",
    "FakeOptions",
    "Scenario",
    "TurnDetector",
    "UserTurn",
    "Voice",
    "piper_voice",
    "scenario",
    "tone",
    "tone_voice",
]
