"""`python -m appliance.testing.fake_elevenlabs` (and `appliance fake-server`): the fake server
in the foreground until interrupted."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import sys
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from appliance.testing.fake_elevenlabs.conversation import ConnectionRecord, FakeOptions
from appliance.testing.fake_elevenlabs.scenarios import SCENARIOS
from appliance.testing.fake_elevenlabs.server import FakeElevenLabsServer
from appliance.testing.fake_elevenlabs.voices import Voice, piper_voice, tone_voice


def main(argv: Sequence[str] | None = None) -> int:
    """Run the fake server in the foreground until interrupted."""
    p = argparse.ArgumentParser(prog="appliance fake-server", description=main.__doc__)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8765, help="0: any free port (the first line says which)")
    p.add_argument("--scenario", default="conversation", choices=sorted(SCENARIOS))
    p.add_argument("--agent-id", help="accept only this agent id (default: any)")
    p.add_argument(
        "--api-key-env",
        metavar="VAR",
        help="make the agent private: signed URLs require the key in this environment variable",
    )
    p.add_argument("--output-format", default="pcm_16000")
    p.add_argument("--input-format", default="pcm_16000")
    p.add_argument("--voice", choices=["piper", "tones"], default="piper")
    p.add_argument("--pace", type=float, default=1.0, help="audio speed: 0 = burst, 1 = real time (default)")
    p.add_argument("--ahead", type=float, default=0.5, help="seconds of audio sent ahead of real time")
    p.add_argument("--chunk-ms", type=int, default=100)
    p.add_argument("--ping-interval", type=float, default=2.0)
    p.add_argument("--stream-seconds", type=float, default=10.0)
    p.add_argument("--interrupt-after", type=float, default=1.0)
    p.add_argument("--record", metavar="JSONL", help="append each finished connection's record to this file")
    args = p.parse_args(argv)
    voice: Voice = tone_voice
    if args.voice == "piper":
        from appliance.testing.speech import joe_voice_paths

        try:
            joe_voice_paths()
            voice = piper_voice
        except RuntimeError as err:
            print(f"speaking in tones: {err}", file=sys.stderr)
    api_key = None
    if args.api_key_env:
        api_key = os.environ.get(args.api_key_env)
        if not api_key:
            p.error(f"--api-key-env: {args.api_key_env} is not set")
    options = FakeOptions(
        scenario=args.scenario,
        agent_id=args.agent_id,
        api_key=api_key,
        output_format=args.output_format,
        input_format=args.input_format,
        voice=voice,
        pace=args.pace,
        ahead_s=args.ahead,
        chunk_ms=args.chunk_ms,
        ping_interval_s=args.ping_interval or None,
        stream_s=args.stream_seconds,
        interrupt_after_s=args.interrupt_after,
    )
    server = FakeElevenLabsServer(options, host=args.host, port=args.port)
    if args.record:
        path = Path(args.record)

        def write(record: ConnectionRecord) -> None:
            with path.open("a", encoding="utf-8") as f:
                f.write(json.dumps(asdict(record)) + "\n")

        server.on_connection_end = write
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s %(message)s")

    def listening(port: int) -> None:
        print(
            f"fake ElevenLabs server on ws://{args.host}:{port} (scenario {args.scenario}); "
            f"appliance.remote.base_url: ws://{args.host}:{port}",
            flush=True,
        )

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(server.serve(on_listening=listening))
    return 0


if __name__ == "__main__":
    sys.exit(main())
