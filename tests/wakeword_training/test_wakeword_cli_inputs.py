"""The wake-word commands refuse bad input at once (exit 2, naming what is wrong), before any
synthesis, feature extraction or training; enrolling takes its WAVs in the README's order; a stop
ends a command with exit 130."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from appliance.cli import _parser, main, parse_args
from appliance.testing.speech import espeak_say, silence, write_wav
from appliance.wakeword_training.train import MICRO, train_word

pytestmark = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs espeak-ng")


@pytest.fixture(scope="module")
def word(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("words")
    train_word("hello lamp", "hello_lamp", folder, models_dir, seed=3, size=MICRO, show_progress=False)
    return folder


def test_enroll_takes_wavs_after_its_options_as_the_readme_writes_them() -> None:
    parser = _parser()
    readme = ["wakeword", "enroll", "hey_computer", "--dir", "w", "me1.wav", "me2.wav", "me3.wav"]
    args = parse_args(parser, readme)
    assert args.wavs == ["me1.wav", "me2.wav", "me3.wav"] and args.dir == "w"
    args = parse_args(parser, ["wakeword", "enroll", "n", "a.wav", "--dir", "w", "b.wav", "c.wav"])
    assert args.wavs == ["a.wav", "b.wav", "c.wav"]
    for wrong in (
        ["wakeword", "enroll", "n", "a.wav", "--bogus"],
        ["wakeword", "train", "hi", "x"],
        ["run", "x"],
    ):
        with pytest.raises(SystemExit) as exit_info:
            parse_args(parser, wrong)
        assert exit_info.value.code == 2


@pytest.mark.parametrize(
    ("argv", "config"),
    [
        (["wakeword", "--config", "a.yaml", "train", "hi"], "a.yaml"),
        (["wakeword", "train", "hi", "--config", "a.yaml"], "a.yaml"),
        (["wakeword", "train", "hi", "-c", "a.yaml", "--quick"], "a.yaml"),
        (["wakeword", "-c", "a.yaml", "train", "hi", "-c", "b.yaml"], "b.yaml"),  # the later one
        (["wakeword", "train", "hi"], None),
        (["wakeword", "enroll", "n", "--dir", "w", "-c", "a.yaml", "x.wav"], "a.yaml"),
        (["wakeword", "evaluate", "n", "--heldout", "3", "--config", "a.yaml"], "a.yaml"),
        (["kb", "search", "when do you open", "--config", "a.yaml"], "a.yaml"),
        (["kb", "--config", "a.yaml", "list"], "a.yaml"),
        (["kb", "list", "-c", "a.yaml"], "a.yaml"),
        (["kb", "list"], None),
    ],
)
def test_config_may_come_after_the_action(argv: list[str], config: str | None) -> None:
    assert parse_args(_parser(), argv).config == config


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (["--heldout", "0", "--negative-hours", "1"], "--heldout: give 1–1000 takes, got 0"),
        (["--heldout", "3", "--negative-hours", "0"], "--negative-hours: 0 is outside 0–24 hours"),
        (["--heldout", "3", "--negative-hours", "nan"], "--negative-hours: nan is outside 0–24 hours"),
        (["--heldout", "3", "--negative-hours", "100"], "--negative-hours: 100 is outside 0–24 hours"),
        (["--heldout", "3", "--negative-hours", "1", "--max-fa-per-hour", "-1"], "--max-fa-per-hour: give 0"),
        (
            ["--heldout", "3", "--negative-hours", "1", "--seed", "-1"],
            "--seed: give a whole number 0 or more",
        ),
        (["--heldout", "3", "--negative", "EMPTY"], "--negative: EMPTY has no .wav files"),
        (["--heldout", "3", "--negative", "JUNK"], "cannot read it as 16-bit PCM WAV"),
        (["--heldout", "3", "--negative", "MISSING"], "is not a folder"),
        (["--positive", "JUNK", "--negative-hours", "1"], "--positive JUNK/x.WAV: cannot read it"),
    ],
)
def test_evaluate_refuses_bad_input_before_anything_slow(
    word: Path,
    tmp_path: Path,
    argv: list[str],
    said: str,
    capsys: pytest.CaptureFixture[str],
    forbid_slow: Callable[..., None],
) -> None:
    import appliance.wakeword_training.evaluate as ev
    import appliance.wakeword_training.train as train

    forbid_slow((train, "features_for"), (ev, "heldout_takes"), (ev, "negative_embeddings"))
    (tmp_path / "EMPTY").mkdir()
    (tmp_path / "JUNK").mkdir()
    (tmp_path / "JUNK" / "x.WAV").write_bytes(b"not a wav")  # the suffix in any case is read
    argv = [a if a not in ("EMPTY", "JUNK", "MISSING") else str(tmp_path / a) for a in argv]
    assert main(["wakeword", "evaluate", "hello_lamp", "--dir", str(word), *argv]) == 2
    assert said.replace("EMPTY", str(tmp_path / "EMPTY")).replace("JUNK", str(tmp_path / "JUNK")) in (
        capsys.readouterr().err
    )


def test_names_and_metadata_are_checked_before_anything_slow(
    word: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for command in (["evaluate", "../hello_lamp", "--heldout", "3", "--negative-hours", "1"],
                    ["enroll", "../hello_lamp", "a.wav", "b.wav", "c.wav"]):  # fmt: skip
        assert main(["wakeword", *command, "--dir", str(word)]) == 2
        assert "NAME: '../hello_lamp' may only use letters, digits, _ and -" in capsys.readouterr().err
    shutil.copy(word / "hello_lamp.onnx", tmp_path / "hello_lamp.onnx")
    (tmp_path / "hello_lamp.wakeword.json").write_text("{bad", encoding="utf-8")
    assert main(["wakeword", "enroll", "hello_lamp", "--dir", str(tmp_path), "a.wav", "b.wav", "c.wav"]) == 2
    assert "hello_lamp.wakeword.json: not valid JSON" in capsys.readouterr().err
    (tmp_path / "hello_lamp.wakeword.json").write_text(json.dumps({"threshold": 0.9}), encoding="utf-8")
    evaluate = ["wakeword", "evaluate", "hello_lamp", "--dir", str(tmp_path), "--heldout", "3"]
    assert main([*evaluate, "--negative-hours", "1"]) == 2
    assert "--heldout: the phrase is not in hello_lamp.wakeword.json" in capsys.readouterr().err
    assert not (tmp_path / "hello_lamp.base.onnx").exists()  # nothing made on the way


def test_enroll_refuses_a_wav_take_that_is_not_a_take(
    word: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for f in ("hello_lamp.onnx", "hello_lamp.wakeword.json"):
        shutil.copy(word / f, tmp_path / f)
    takes = [write_wav(tmp_path / f"{k}.wav", espeak_say("hello lamp", "en-029+m5")) for k in range(2)]
    tiny = write_wav(tmp_path / "tiny.wav", silence(0.006).astype(np.int16))
    code = main(["wakeword", "enroll", "hello_lamp", "--dir", str(tmp_path), *map(str, takes), str(tiny)])
    assert code == 2
    assert f"WAV {tiny}: no audio arrived" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix == ".onnx") == ["hello_lamp.onnx"]
    code = main(["wakeword", "enroll", "hello_lamp", "--dir", str(tmp_path), *map(str, takes), str(takes[0]),
                 "--negative-minutes", "-1"])  # fmt: skip
    assert code == 2
    assert "--negative-minutes: -1 is outside 0–120 minutes" in capsys.readouterr().err


def test_train_refuses_the_name_of_a_microwakeword_model_in_the_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "okay_nabu.tflite").write_bytes(b"the user's")
    assert main(["wakeword", "train", "okay nabu", "--out", str(tmp_path)]) == 2
    assert "okay_nabu.tflite already exists" in capsys.readouterr().err
    assert main(["wakeword", "train", "okay nabu", "--out", str(tmp_path), "--seed", "-2"]) == 2
    assert "--seed: give a whole number 0 or more, got -2" in capsys.readouterr().err


def test_a_stale_enrollment_base_is_made_again_from_the_retrained_model(word: Path, tmp_path: Path) -> None:
    """A retrain stopped after writing the new model and metadata but before removing the old
    enrollment's base: enrolling builds on the new model, not the old one."""
    from appliance.wakeword_training.enroll import base_model

    for f in ("hello_lamp.onnx", "hello_lamp.wakeword.json"):
        shutil.copy(word / f, tmp_path / f)
    (tmp_path / "hello_lamp.base.onnx").write_bytes(b"the word this one replaced")
    base = base_model(tmp_path, "hello_lamp")
    assert base.read_bytes() == (word / "hello_lamp.onnx").read_bytes()
    assert base_model(tmp_path, "hello_lamp").read_bytes() == base.read_bytes()  # kept once right
    (tmp_path / "hello_lamp.base.onnx").write_bytes(b"stale")
    (tmp_path / "hello_lamp.onnx").write_bytes(b"not the trained one either")
    with pytest.raises(ValueError, match=r"neither hello_lamp\.base\.onnx nor hello_lamp\.onnx"):
        base_model(tmp_path, "hello_lamp")


def test_evaluate_scores_all_of_a_short_negative_clip(models_dir: Path) -> None:
    """The detector scores its first window after 2 s of audio: a 1 s clip alone gives none."""
    from appliance.wakeword_training.evaluate import clip_embeddings
    from appliance.wakeword_training.train import features_for

    extractor = features_for(models_dir)
    clip = espeak_say("hello lamp")[:16000]
    assert extractor.embeddings(clip).shape[0] < 16  # no 16-frame window: never scored
    [stream] = clip_embeddings(extractor, [clip])
    assert stream.shape[0] - 15 >= int(1.0 / 0.08)  # a window ending in each 80 ms of the clip


def test_ctrl_c_ends_a_wakeword_command_with_exit_130(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Not 0: a script must not take a training cut short for a finished one."""
    import appliance.wakeword_training.cli as cli

    def interrupted(args: object) -> int:
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "_train", interrupted)
    assert main(["wakeword", "train", "hey computer", "--out", "somewhere"]) == 130
    assert "appliance wakeword: interrupted before it finished" in capsys.readouterr().err


def test_without_espeak_ng_the_commands_that_speak_stop_at_once_with_exit_3(
    word: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    forbid_slow: Callable[..., None],
) -> None:
    import appliance.wakeword_training.train as train
    from appliance.wakeword_training import synth

    monkeypatch.setattr(synth, "espeak_available", lambda: False)
    forbid_slow((train, "train_word"), (train, "features_for"))
    takes = [str(write_wav(tmp_path / f"{k}.wav", espeak_say("hello lamp", "en-029+m5"))) for k in range(3)]
    for command in (
        ["train", "hey there", "--out", str(tmp_path / "new")],
        ["enroll", "hello_lamp", "--dir", str(word), *takes],
        ["evaluate", "hello_lamp", "--dir", str(word), "--heldout", "3", "--negative-hours", "1"],
    ):
        assert main(["wakeword", *command]) == 3
        err = capsys.readouterr().err
        assert f"appliance wakeword {command[0]}: espeak-ng is not installed" in err
        assert "apt-get install espeak-ng" in err
    assert not (tmp_path / "new").exists() and not (word / "hello_lamp.base.onnx").exists()
