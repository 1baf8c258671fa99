"""`appliance fake-server`: the fake ElevenLabs server from the command line (no account needed)."""

from __future__ import annotations

import json
import os
import re
import select
import subprocess
import sys
import time
import urllib.error
import urllib.request

from websockets.sync.client import connect


def test_the_fake_server_runs_from_the_cli_with_a_private_agent() -> None:
    env = {**os.environ, "FAKE_KEY": "sk_cli_0123456789"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "appliance",
            "fake-server",
            "--port",
            "0",  # any free port: the first line says which (no other process can take it meanwhile)
            "--scenario",
            "conversation",
            "--voice",
            "tones",
            "--pace",
            "0",
            "--api-key-env",
            "FAKE_KEY",
            "--agent-id",
            "agent_cli",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], 30)
        assert ready, "the fake server did not say where it listens"
        first = proc.stdout.readline()
        found = re.search(r"on ws://127\.0\.0\.1:(\d+) ", first)
        assert found, first
        port = int(found.group(1))
        assert port > 0 and f"appliance.remote.base_url: ws://127.0.0.1:{port}" in first
        base = f"http://127.0.0.1:{port}/v1/convai/conversation/get-signed-url?agent_id=agent_cli"
        deadline = time.monotonic() + 20
        while True:
            try:
                request = urllib.request.Request(base, headers={"xi-api-key": "sk_cli_0123456789"})
                with urllib.request.urlopen(request, timeout=2) as response:
                    signed = json.loads(response.read())["signed_url"]
                break
            except (urllib.error.URLError, ConnectionError):
                assert time.monotonic() < deadline, "the fake server did not come up"
                time.sleep(0.1)
        # the client keeps reading while it closes (the server streams the whole conversation at
        # pace 0; a client that stops reading leaves the server's close frame stuck behind it)
        with connect(signed, max_queue=None) as ws:
            ws.send(json.dumps({"type": "conversation_initiation_client_data"}))
            meta = json.loads(ws.recv(timeout=5))
            assert meta["type"] == "conversation_initiation_metadata"
            assert meta["conversation_initiation_metadata_event"]["agent_output_audio_format"] == "pcm_16000"
            kinds = {json.loads(ws.recv(timeout=5))["type"] for _ in range(3)}
            assert kinds <= {"agent_response", "audio"} and "audio" in kinds
        wrong = urllib.request.Request(base, headers={"xi-api-key": "nope"})
        try:
            urllib.request.urlopen(wrong, timeout=2)
            raise AssertionError("a wrong key must be refused")
        except urllib.error.HTTPError as err:
            assert err.code == 401
    finally:
        proc.terminate()
        proc.communicate(timeout=10)


def test_the_fake_server_runs_the_scenario_object_it_is_given() -> None:
    """The server takes a scenario object (no lookup by name): a test can script its own."""
    from appliance.testing.fake_elevenlabs import FakeConversation, FakeElevenLabsServer, FakeOptions

    async def custom(conv: FakeConversation) -> None:
        await conv.metadata()
        await conv.send({"type": "agent_response", "agent_response_event": {"agent_response": "custom"}})

    options = FakeOptions(scenario="stall", ping_interval_s=None)  # by name it would stall
    with FakeElevenLabsServer(options, scenario=custom) as server:
        url = f"{server.url}/v1/convai/conversation?agent_id=agent_any"
        with connect(url) as ws:
            ws.send(json.dumps({"type": "conversation_initiation_client_data"}))
            frames = [json.loads(ws.recv(timeout=5)) for _ in range(2)]
    assert [f["type"] for f in frames] == ["conversation_initiation_metadata", "agent_response"]
    assert frames[1]["agent_response_event"]["agent_response"] == "custom"
