"""`appliance wakeword train | evaluate`: the command-line side (argument parsing is in appliance.cli)."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from appliance.core import wakeword_training as core
from appliance.errors import ConfigError, ModelError


def add_parser(sub: Any) -> None:
    from appliance.cli import config_after_action

    ww = sub.add_parser("wakeword", help="train a custom wake word from text, or measure one")
    ww.add_argument("--config", "-c", metavar="FILE", help="YAML configuration (custom_dir, models_dir)")
    wsub = ww.add_subparsers(dest="wakeword_command", metavar="ACTION")
    train = wsub.add_parser(
        "train",
        help="synthesize takes of a phrase and train a classifier for it (6-8 minutes on 2 x86 cores)",
        description="Train a wake word from text alone: synthesized takes (Piper, espeak-ng), room "
        "augmentation, near misses and general speech as negatives, a small classifier on "
        "openWakeWord's features, then a threshold and patience chosen on calibration audio and takes "
        "in voices and texts training does not use. Writes NAME.onnx and NAME.wakeword.json (the "
        "threshold and patience_frames the word runs at unless the config sets them) into the custom "
        "wake-word folder (--out, else appliance.wake_words.custom_dir).",
    )
    train.add_argument("phrase", metavar="PHRASE")
    train.add_argument("--name", metavar="NAME", help="model name (default: the phrase, e.g. hey_computer)")
    train.add_argument("--seed", type=int, default=0, metavar="N", help="same seed, same model (default 0)")
    train.add_argument("--out", metavar="DIR", help="output folder (default: the configured custom_dir)")
    train.add_argument("--quick", action="store_true", help="a tiny data set: checks the setup in ~1 minute")
    train.add_argument(
        "--replace",
        action="store_true",
        help="train anew a word of that name already in the folder (its enrollment is dropped; the "
        "old files stay until the new ones are ready)",
    )
    train.add_argument(
        "--negative-features",
        metavar="FILE",
        help="more negatives: a .npy of openWakeWord features of real speech, windows (N, 16, 96) or "
        "one stream (T, 96), e.g. its ACAV100M or validation_set_features.npy download",
    )
    train.add_argument(
        "--negative-feature-windows",
        type=int,
        default=None,
        metavar="N",
        help="how many windows of --negative-features to train on (default 5000; each adds about 42 KB "
        "to the peak memory and a little training time)",
    )
    train.add_argument("--no-progress", action="store_true", help="no progress bar")
    config_after_action(train)
    en = wsub.add_parser(
        "enroll",
        help="adapt a trained word to 3-10 takes of your own voice (a verifier in the model)",
        description="Adapt NAME to your voice: the takes become templates of a verifier folded into "
        "NAME.onnx (the trained model is kept as NAME.base.onnx; enrolling again starts from it). "
        "Generated negative speech calibrates the verifier so that it lifts no negative window.",
    )
    en.add_argument("name", metavar="NAME")
    config_after_action(en)
    en.add_argument("wavs", nargs="*", metavar="WAV", help="takes of you saying the phrase")
    en.add_argument(
        "--record",
        type=int,
        metavar="N",
        help="record N takes from the microphone instead (prompted; silent or clipped takes are asked again)",
    )
    en.add_argument(
        "--take-seconds", type=float, default=3.0, metavar="S", help="--record: seconds per take (default 3)"
    )
    en.add_argument(
        "--input",
        metavar="WAV|-",
        help="--record: read the 'microphone' from a WAV file or raw 16 kHz s16le on stdin (-)",
    )
    en.add_argument("--dir", metavar="DIR", help="folder with NAME.onnx (default: the configured custom_dir)")
    en.add_argument(
        "--negative-minutes",
        type=float,
        default=10.0,
        metavar="M",
        help="calibration audio, at most 120 (default 10, cached)",
    )
    ev = wsub.add_parser(
        "evaluate",
        help="recall, false accepts per hour and the threshold curve of a wake word",
        description="Score positive takes (--positive DIR of WAVs, or --heldout N synthesized takes in "
        "voices training never uses) and negative audio (--negative DIR of WAVs, or --negative-hours N "
        "of generated speech and noise, cached), print the threshold curve and suggest a threshold.",
    )
    ev.add_argument("name", metavar="NAME")
    config_after_action(ev)
    ev.add_argument("--dir", metavar="DIR", help="folder with NAME.onnx (default: the configured custom_dir)")
    ev.add_argument("--positive", metavar="DIR", help="WAV takes of the phrase")
    ev.add_argument(
        "--heldout", type=int, metavar="N", help="N synthesized held-out takes (needs the phrase metadata)"
    )
    ev.add_argument("--negative", metavar="DIR", help="WAVs that must not fire the word")
    ev.add_argument(
        "--negative-hours",
        type=float,
        metavar="H",
        help="generated negative speech and noise, at most 24 (cached under the state folder, which "
        "keeps to 512 MB beyond one run, the least recently used dropped first)",
    )
    ev.add_argument(
        "--max-fa-per-hour", type=float, default=0.5, metavar="R", help="budget for the suggestion"
    )
    ev.add_argument("--seed", type=int, default=0, metavar="N")
    ev.add_argument("--json", action="store_true", help="print the result as JSON")


MAX_NEGATIVE_MINUTES = 120.0  # enroll's calibration audio (default 10; each minute ~285 KB cached)
MAX_NEGATIVE_HOURS = 24.0  # evaluate's generated negative audio (~17 MB cached an hour)
MAX_HELDOUT_TAKES = 1000


def _dirs(config_path: str | None) -> tuple[Path | None, Path]:
    from appliance.config import load_config, resolve_models_dir

    config = load_config(config_path, log_warnings=False)
    wake = config.appliance.wake_words
    custom = config.resolve_path(wake.custom_dir) if wake.custom_dir else None
    return custom, resolve_models_dir(config, os.environ)


def run(args: argparse.Namespace) -> int:
    if args.wakeword_command == "train":
        return _train(args)
    if args.wakeword_command == "evaluate":
        return _evaluate(args)
    if args.wakeword_command == "enroll":
        return _enroll(args)
    print("appliance wakeword: choose train, enroll or evaluate (see --help)", file=sys.stderr)
    return 2


def _train(args: argparse.Namespace) -> int:
    from appliance.wakeword_training.calibrate import RECALL_FLOOR
    from appliance.wakeword_training.memory import TRAIN_PEAK_BYTES, WINDOW_BYTES, room_for_training
    from appliance.wakeword_training.train import TINY, TrainSize, train_word, word_files

    try:
        phrase = core.normalize_phrase(args.phrase)
    except ValueError as err:
        raise ConfigError([f"PHRASE: {err}"], source="appliance wakeword train") from None
    name = args.name or core.phrase_name(phrase)
    _check_name(name, "--name", "appliance wakeword train")
    _check_seed(args.seed, "appliance wakeword train")
    custom, models_dir = _dirs(args.config)
    _need_espeak("appliance wakeword train")
    out = Path(args.out).expanduser() if args.out else custom
    if out is None:
        raise ConfigError(
            ["--out: give an output folder, or set appliance.wake_words.custom_dir in --config"],
            source="appliance wakeword train",
        )
    features, windows = _negative_features(args)
    _writable_folder(out, "--out" if args.out else "custom_dir", "appliance wakeword train")
    taken = word_files(out, name)
    if taken and not args.replace:
        raise ConfigError(
            [f"{taken[0]} already exists: choose another --name, or give --replace to train {name} "
             "anew (its enrollment, if any, is dropped)"],
            source="appliance wakeword train",
        )  # fmt: skip
    room = None if args.quick else room_for_training()
    peak = TRAIN_PEAK_BYTES + (0 if features is None else windows * WINDOW_BYTES)
    if room is not None and room < peak:
        print(
            f"warning: about {room / 2**20:,.0f} MB of memory is free here; training needs about "
            f"{peak / 2**20:,.0f} MB at its peak and may be killed for memory. Close other "
            f"programs or add swap, or train on a bigger machine and copy {name}.onnx and "
            f"{name}.wakeword.json into the custom folder",
            file=sys.stderr,
        )
    started = time.monotonic()
    result = train_word(
        phrase, name, out, models_dir, seed=args.seed, size=TINY if args.quick else TrainSize(),
        show_progress=not args.no_progress, replace=args.replace, negative_features=features,
        negative_feature_windows=windows,
    )  # fmt: skip
    print(f"wrote {result.model_path} and {result.metadata_path} in {time.monotonic() - started:.0f} s")
    cal = result.metadata.get("calibration", {})
    print(
        f"threshold {result.threshold}, patience {result.patience_frames} frame(s): chosen on "
        f"{cal.get('negative_seconds', 0) / 60:.0f} min of calibration audio ({cal.get('false_accepts', 0)} "
        f"false accepts) and {cal.get('takes', 0)} takes in other voices (recall {cal.get('recall', 0):.0%})"
    )
    if "no_false_accept_recall" in cal:
        print(
            f"  (with no false accept there it would hear only {cal['no_false_accept_recall']:.0%} of "
            "the takes: a sound-alike in the calibration audio scores near 1)"
        )
    elif cal.get("recall", 1) < RECALL_FLOOR and args.quick:
        print(
            f"(--quick: a tiny data set to check the setup; it hears {cal.get('recall', 0):.0%} of the takes)"
        )
    elif cal.get("recall", 1) < RECALL_FLOOR:
        print(
            f"warning: it hears only {cal.get('recall', 0):.0%} of the calibration takes; try another "
            "--seed, a longer phrase, or `appliance wakeword enroll` with your own voice"
        )
    print("use it with (the word runs at the metadata's threshold and patience unless you set them):")
    print("  appliance:\n    wake_words:")
    print(f"      custom_dir: {out.resolve()}")
    print(f"      words:\n        - name: {name}")
    return 0


def _negative_features(args: argparse.Namespace) -> tuple[Path | None, int]:
    """--negative-features and --negative-feature-windows, checked (the file's shape read, not
    its windows) before anything slow."""
    from appliance.wakeword_training import negative_features as nf
    from appliance.wakeword_training.model import FRAMES

    source = "appliance wakeword train"
    windows = nf.DEFAULT_WINDOWS if args.negative_feature_windows is None else args.negative_feature_windows
    if args.negative_features is None:
        if args.negative_feature_windows is not None:
            raise ConfigError(
                ["--negative-feature-windows: only with --negative-features FILE"], source=source
            )
        return None, windows
    if not 1 <= windows <= nf.MAX_WINDOWS:
        raise ConfigError(
            [f"--negative-feature-windows: give 1–{nf.MAX_WINDOWS:,} windows, got {windows}"], source=source
        )
    path = Path(args.negative_features).expanduser()
    try:
        nf.check(path, FRAMES)
    except ValueError as err:
        raise ConfigError([f"--negative-features: {err}"], source=source) from None
    return path, windows


def _need_espeak(source: str) -> None:
    """espeak-ng speaks the generated takes and negative audio: without it, a clear error at
    once (exit 3) rather than a crash after the feature models load or the takes are recorded."""
    from appliance.wakeword_training import synth

    if not synth.espeak_available():
        raise ModelError(
            f"{source}: espeak-ng is not installed; the generated takes and negative audio are "
            "spoken with it (sudo apt-get install espeak-ng, or run systemd/bootstrap.sh)",
            code="speech_synthesizer_missing",
        )


def _check_name(name: str, flag: str, source: str) -> None:
    """A word's name: letters, digits, _ and - only (a file name in its folder, nothing else)."""
    if not name or not name.replace("_", "").replace("-", "").isalnum():
        raise ConfigError([f"{flag}: {name!r} may only use letters, digits, _ and -"], source=source)


def _check_seed(seed: int, source: str) -> None:
    if seed < 0:
        raise ConfigError([f"--seed: give a whole number 0 or more, got {seed}"], source=source)


def _check_range(value: float, low: float, high: float, flag: str, unit: str, source: str) -> None:
    """`low` < `value` <= `high` (so also not NaN)."""
    if not low < value <= high:
        raise ConfigError([f"{flag}: {value:g} is outside {low:g}–{high:g} {unit}"], source=source)


def _read_metadata(folder: Path, name: str, source: str) -> dict[str, Any]:
    """NAME.wakeword.json as a JSON object ({} when there is none); a clear error before anything
    slow when it is not one."""
    from appliance.wake_word_points import read_operating_point
    from appliance.wakeword_training.train import METADATA_SUFFIX

    path = folder / f"{name}{METADATA_SUFFIX}"
    if not path.is_file():
        return {}
    try:
        read_operating_point(path)
    except ValueError as err:
        raise ConfigError([str(err)], source=source) from None
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def _read_wavs(items: list[Path], flag: str, source: str) -> list[Any]:
    """The WAV files as 16 kHz mono; a file that is not 16-bit PCM WAV or holds no audio is an error
    naming it."""
    from appliance.adapters.resample import resample
    from appliance.audio_files import read_wav
    from appliance.wakeword_training.evaluate import RATE_HZ

    out = []
    for item in items:
        try:
            audio, rate = read_wav(item)
        except (OSError, ValueError, EOFError) as err:
            raise ConfigError(
                [f"{flag} {item}: cannot read it as 16-bit PCM WAV ({err})"], source=source
            ) from None
        if audio.size == 0:
            raise ConfigError([f"{flag} {item}: holds no audio"], source=source)
        out.append(resample(audio, rate, RATE_HZ) if rate != RATE_HZ else audio)
    return out


def _wav_dir(folder: str, flag: str, source: str) -> list[Any]:
    """Every .wav (any case) in `folder`, read (see `_read_wavs`)."""
    path = Path(folder).expanduser()
    if not path.is_dir():
        raise ConfigError([f"{flag}: {path} is not a folder"], source=source)
    files = sorted(f for f in path.iterdir() if f.suffix.lower() == ".wav" and f.is_file())
    if not files:
        raise ConfigError([f"{flag}: {path} has no .wav files"], source=source)
    return _read_wavs(files, flag, source)


def _writable_folder(folder: Path, flag: str, source: str) -> None:
    """`folder` exists (made if missing) and takes a new file: checked before anything slow starts,
    not when the result is written minutes later."""
    import tempfile

    if folder.exists() and not folder.is_dir():
        raise ConfigError([f"{flag}: {folder} is a file, not a folder"], source=source)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-check-"):
            pass
    except OSError as err:
        raise ConfigError(
            [f"{flag}: cannot write into {folder} ({err.strerror or err})"], source=source
        ) from None


def _enroll(args: argparse.Namespace) -> int:
    import numpy as np

    from appliance.paths import state_dir
    from appliance.wakeword_training import evaluate as ev
    from appliance.wakeword_training.enroll import MAX_TAKES, MIN_TAKES, base_model, enroll
    from appliance.wakeword_training.recording import check_take
    from appliance.wakeword_training.train import features_for

    source = "appliance wakeword enroll"
    _check_name(args.name, "NAME", source)
    custom, models_dir = _dirs(args.config)
    folder = Path(args.dir).expanduser() if args.dir else custom
    if folder is None:
        raise ConfigError(
            ["--dir: give the model folder, or set appliance.wake_words.custom_dir"], source=source
        )
    if not (folder / f"{args.name}.onnx").is_file():
        raise ConfigError([f"NAME: {folder / args.name}.onnx does not exist (train it first)"], source=source)
    _writable_folder(folder, "--dir" if args.dir else "custom_dir", source)
    _read_metadata(folder, args.name, source)
    _check_range(args.negative_minutes, 0, MAX_NEGATIVE_MINUTES, "--negative-minutes", "minutes", source)
    _need_espeak(source)  # the generated negatives the verifier is calibrated on
    if args.record is not None:
        if args.wavs:
            raise ConfigError(["--record: record takes or give WAV files, not both"], source=source)
        if not MIN_TAKES <= args.record <= MAX_TAKES:
            raise ConfigError(
                [f"--record: give {MIN_TAKES}–{MAX_TAKES} takes, got {args.record}"], source=source
            )
        if not 1.0 <= args.take_seconds <= 10.0:
            raise ConfigError(
                [f"--take-seconds: {args.take_seconds:g} is outside 1–10 seconds"], source=source
            )
    elif args.input is not None:
        raise ConfigError(["--input: only with --record N"], source=source)
    elif not MIN_TAKES <= len(args.wavs) <= MAX_TAKES:
        raise ConfigError([f"WAV: give {MIN_TAKES}–{MAX_TAKES} takes, got {len(args.wavs)}"], source=source)
    takes = []
    for item, audio in zip(args.wavs, _read_wavs([Path(w) for w in args.wavs], "WAV", source), strict=True):
        check = check_take(audio)
        if check.audio is None:  # a file trimmed tight to the phrase: not "cut off", with quiet around
            quiet = np.zeros(int(0.3 * ev.RATE_HZ), np.int16)
            padded = check_take(np.concatenate([quiet, audio, quiet]))
            check = padded if padded.audio is not None else check
        if check.audio is None:
            raise ConfigError([f"WAV {item}: {check.problem}"], source=source)
        takes.append(check.audio)
    try:
        base_model(folder, args.name)
    except ValueError as err:
        raise ConfigError([f"NAME: {err}; train it again with --replace"], source=source) from None
    extractor = features_for(models_dir)  # a missing feature model, before the takes are recorded
    if args.record is not None:
        takes = _record(args)
    streams = ev.negative_embeddings(
        extractor, args.negative_minutes / 60, 1, state_dir() / "wakeword-eval", split="validation"
    )
    result = enroll(folder, args.name, extractor, takes, streams)
    print(
        f"enrolled {result.takes} takes into {result.model_path} (base kept as {result.base_path.name}; "
        f"verifier similarity {result.s_low:.3f}–{result.s_high:.3f})"
    )
    return 0


def _record(args: argparse.Namespace) -> list[Any]:
    """`--record N`: the takes from the microphone (or `--input`), through the audio input code."""
    import asyncio

    from appliance.ports import Microphone
    from appliance.wakeword_training.recording import record_takes

    mic: Microphone
    if args.input == "-":
        from appliance.adapters.wav_audio import RawPipeMicrophone

        mic = RawPipeMicrophone(open(sys.stdin.fileno(), "rb", buffering=0, closefd=False), realtime=False)  # noqa: SIM115
    elif args.input is not None:
        from appliance.adapters.wav_audio import WavFileMicrophone

        try:
            mic = WavFileMicrophone(Path(args.input), realtime=False)
        except (OSError, ValueError, EOFError) as err:
            raise ConfigError(
                [f"--input {args.input}: cannot read it ({err})"], source="appliance wakeword enroll"
            ) from None
    else:
        from appliance.adapters.sounddevice import SounddeviceMicrophone
        from appliance.config import load_config

        audio = load_config(args.config, log_warnings=False).appliance.audio
        mic = SounddeviceMicrophone(
            device=audio.input_device,
            input_block_ms=audio.input_block_ms,
            input_queue_blocks=audio.input_queue_blocks,
        )

    def say(line: str) -> None:
        print(line, flush=True)

    return asyncio.run(record_takes(mic, args.record, say, take_s=args.take_seconds))


def _evaluate(args: argparse.Namespace) -> int:
    import math

    from appliance.wakeword_training import evaluate as ev
    from appliance.wakeword_training.train import features_for

    source = "appliance wakeword evaluate"
    _check_name(args.name, "NAME", source)
    _check_seed(args.seed, source)
    custom, models_dir = _dirs(args.config)
    folder = Path(args.dir).expanduser() if args.dir else custom
    if folder is None:
        raise ConfigError(
            ["--dir: give the model folder, or set appliance.wake_words.custom_dir"], source=source
        )
    model = folder / f"{args.name}.onnx"
    if not model.is_file():
        raise ConfigError(
            [f"NAME: {model} does not exist (train it first with 'appliance wakeword train')"], source=source
        )
    if (args.positive is None) == (args.heldout is None):
        raise ConfigError(["give exactly one of --positive DIR and --heldout N"], source=source)
    if (args.negative is None) == (args.negative_hours is None):
        raise ConfigError(["give exactly one of --negative DIR and --negative-hours H"], source=source)
    if not 0 <= args.max_fa_per_hour < math.inf:
        raise ConfigError([f"--max-fa-per-hour: give 0 or more, got {args.max_fa_per_hour:g}"], source=source)
    if args.heldout is not None and not 1 <= args.heldout <= MAX_HELDOUT_TAKES:
        raise ConfigError([f"--heldout: give 1–{MAX_HELDOUT_TAKES} takes, got {args.heldout}"], source=source)
    if args.negative_hours is not None:
        _check_range(args.negative_hours, 0, MAX_NEGATIVE_HOURS, "--negative-hours", "hours", source)
    phrase = ""
    if args.heldout is not None:
        phrase = str(_read_metadata(folder, args.name, source).get("phrase") or "")
        if not phrase.strip():
            raise ConfigError(
                [f"--heldout: the phrase is not in {args.name}.wakeword.json (a word trained here has it); "
                 "give --positive DIR instead"],
                source=source,
            )  # fmt: skip
    # the folders are read before anything slow: an unreadable file is an error at once
    positives = _wav_dir(args.positive, "--positive", source) if args.positive is not None else []
    negatives = _wav_dir(args.negative, "--negative", source) if args.negative is not None else []
    if args.heldout is not None or args.negative_hours is not None:
        _need_espeak(source)
    extractor = features_for(models_dir)
    if args.heldout is not None:
        positives = ev.heldout_takes(phrase, args.heldout, args.seed + 1000)
    if args.negative is not None:
        streams = ev.clip_embeddings(extractor, negatives, args.seed)
        seconds = sum(a.shape[0] for a in negatives) / ev.RATE_HZ
    else:
        from appliance.paths import state_dir

        def tick(done: int, total: int) -> None:
            print(f"\rnegative audio: {done}/{total} min", end="", file=sys.stderr, flush=True)

        streams = ev.negative_embeddings(
            extractor, args.negative_hours, args.seed, state_dir() / "wakeword-eval", on_chunk=tick
        )
        print(file=sys.stderr)
        seconds = sum(max(0, s.shape[0]) for s in streams) * 0.08
    result = ev.evaluate(args.name, model, extractor, positives, streams, seconds, args.max_fa_per_hour)
    if args.json:
        print(json.dumps(evaluation_json(result), indent=2))
        return 0
    print(f"{result.name}: {result.positives} positive takes, {result.negative_hours:.2f} h negative audio")
    print(f"{'threshold':>9} {'recall':>7} {'FA':>5} {'FA/h':>7}")
    for p in result.curve:
        print(f"{p.threshold:>9.3f} {p.recall:>7.1%} {p.false_accepts:>5d} {p.false_accepts_per_hour:>7.2f}")
    s = result.suggested
    print(
        f"suggested threshold: {s.threshold} (recall {s.recall:.1%}, {s.false_accepts_per_hour:.2f} "
        f"false accepts per hour; budget {args.max_fa_per_hour}/h)"
    )
    return 0


def evaluation_json(result: Any) -> dict[str, Any]:
    return {
        "name": result.name,
        "positives": result.positives,
        "negative_hours": round(result.negative_hours, 4),
        "curve": [
            {
                "threshold": p.threshold,
                "recall": round(p.recall, 4),
                "false_accepts": p.false_accepts,
                "false_accepts_per_hour": round(p.false_accepts_per_hour, 3),
            }
            for p in result.curve
        ],
        "suggested_threshold": result.suggested.threshold,
    }
