"""Training a tiny wake word end to end: determinism, the adapter loads it, the CLI writes it,
evaluate's output shape. A small seeded data set keeps it to about a minute."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from appliance.adapters.openwakeword_detector import OpenWakeWordDetector, WakeWordModelFile
from appliance.cli import main
from appliance.wakeword_training.train import MICRO, train_word

pytestmark = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs espeak-ng")


@pytest.fixture(scope="module")
def trained(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The same word trained twice with the same seed: once here, once through the CLI (whose
    test compares the bytes)."""
    a = tmp_path_factory.mktemp("a")
    train_word("hello lamp", "hello_lamp", a, models_dir, seed=3, size=MICRO, show_progress=False)
    return a, tmp_path_factory.mktemp("b")


def test_the_metadata_says_how_the_word_was_trained(trained: tuple[Path, Path]) -> None:
    a, _ = trained
    meta = json.loads((a / "hello_lamp.wakeword.json").read_text())
    assert meta["phrase"] == "hello lamp"
    assert meta["seed"] == 3
    # the operating point chosen on the calibration split, in the config's field names
    assert 0 < meta["threshold"] < 1 and meta["patience_frames"] in (1, 2, 3)
    assert meta["calibration"]["takes"] == 3 and meta["calibration"]["negative_seconds"] > 50
    # 7 voices × 2 augmentations × 2 windows (the frame the phrase ends in and the next)
    assert meta["training"]["positive_windows"] == 28
    assert meta["training"]["positive_frames"] == 2
    assert any(v.startswith("espeak:") for v in meta["training"]["voices"])
    assert "hello ramp" in meta["training"]["near_misses"] or "lamp" in meta["training"]["near_misses"]


def test_positive_windows_are_the_frames_after_the_phrase(models_dir: Path) -> None:
    from appliance.testing.speech import espeak_say
    from appliance.wakeword_training.train import (
        FRAMES,
        WINDOW_SAMPLES,
        features_for,
        placed_positive,
        positive_windows,
    )

    extractor = features_for(models_dir)
    take = espeak_say("hello lamp", "en-us+m3")
    clip = placed_positive(take, np.random.default_rng(0), 4, 0.0)
    assert clip.shape[0] == WINDOW_SAMPLES + 3 * 1280
    windows = positive_windows(extractor, clip, 4)
    emb = extractor.embeddings(np.clip(np.round(clip), -32768, 32767).astype(np.int16))
    assert windows.shape == (4, FRAMES, 96)
    assert np.array_equal(windows[-1], emb[-FRAMES:])  # the last window ends with the clip
    assert np.array_equal(windows[0], emb[-FRAMES - 3 : -3])  # the first, 3 frames earlier
    faster = placed_positive(take, np.random.default_rng(1), 1, 0.15)
    assert faster.shape[0] == WINDOW_SAMPLES


def test_a_longer_context_reads_more_embeddings(models_dir: Path, tmp_path: Path) -> None:
    from appliance.testing.speech import espeak_say
    from appliance.wakeword_training.model import Mlp, to_onnx
    from appliance.wakeword_training.train import (
        features_for,
        model_frames,
        placed_positive,
        positive_windows,
        score_stream,
        sliding,
        window_samples,
    )

    extractor = features_for(models_dir)
    take = espeak_say("hello lamp", "en-us+m3")
    clip = placed_positive(take, np.random.default_rng(0), 3, 0.0, window=window_samples(28))
    assert clip.shape[0] == window_samples(28) + 2 * 1280
    pcm = np.clip(np.round(clip), -32768, 32767).astype(np.int16)
    emb = extractor.embeddings(pcm)
    assert extractor.embeddings(pcm[: window_samples(28)]).shape[0] == 28  # exactly the context
    windows = positive_windows(extractor, clip, 3, 28)
    assert windows.shape == (3, 28, 96) and np.array_equal(windows[-1], emb[-28:])
    rng = np.random.default_rng(0)
    mlp = Mlp(rng.normal(0, 0.01, (28 * 96, 4)), np.zeros(4), rng.normal(0, 0.1, (4, 1)), np.zeros(1))
    path = tmp_path / "w.onnx"
    path.write_bytes(to_onnx(mlp, "w"))
    assert model_frames(path) == 28
    scores = score_stream(path, emb)  # one score per frame once 28 embeddings are there
    assert scores.shape == (emb.shape[0] - 27,)
    assert np.allclose(scores, mlp.scores(sliding(emb, frames=28)), atol=1e-5)
    features = models_dir / "oww-features"
    detector = OpenWakeWordDetector(
        [WakeWordModelFile("w", path)], features / "melspectrogram.onnx", features / "embedding_model.onnx"
    )
    assert set(detector.scores(pcm[:1280])) == {"w"}


def test_speech_before_ends_shortly_before_the_phrase() -> None:
    from appliance.wakeword_training.train import WINDOW_SAMPLES, place

    take = np.full(12000, 1000, np.int16)
    lead = np.arange(1, 40001, dtype=np.int64).astype(np.int16)  # longer than the room left
    for seed in range(20):
        plain = place(take, np.random.default_rng(seed), 0.16)
        out = place(take, np.random.default_rng(seed), 0.16, lead)
        end = int(np.flatnonzero(plain)[-1]) + 1
        start = end - take.shape[0]
        assert np.array_equal(out[start:end], take) and out.shape == (WINDOW_SAMPLES,)
        assert np.array_equal(out[end:], plain[end:])  # nothing after the phrase
        stop = int(np.flatnonzero(out[:start])[-1]) + 1
        assert 0.05 * 16000 <= start - stop <= 0.3 * 16000  # a short pause before the phrase
        assert not out[stop:start].any()
        assert np.array_equal(out[:stop], lead[-stop:])  # the lead-in's end, up to the window's start
    short = place(take, np.random.default_rng(0), 0.16, lead[:100])
    assert np.count_nonzero(short[: WINDOW_SAMPLES - 12000 - 2560]) == 100  # all of a short one


def test_the_detector_loads_the_trained_model(trained: tuple[Path, Path], models_dir: Path) -> None:
    a, _ = trained
    features = models_dir / "oww-features"
    detector = OpenWakeWordDetector(
        [WakeWordModelFile("hello_lamp", a / "hello_lamp.onnx")],
        features / "melspectrogram.onnx",
        features / "embedding_model.onnx",
    )
    rng = np.random.default_rng(0)
    scores = [detector.scores(rng.normal(0, 200, 1280).astype(np.int16)) for _ in range(8)]
    assert all(set(s) == {"hello_lamp"} for s in scores)
    assert all(0.0 <= s["hello_lamp"] <= 1.0 for s in scores)
    assert scores[-1]["hello_lamp"] > 0.0  # past the warm-up: the classifier ran


def test_an_ensemble_trains_each_member_on_its_own_draw(
    trained: tuple[Path, Path], models_dir: Path, tmp_path: Path
) -> None:
    import dataclasses

    import onnx

    from appliance.wakeword_training.train import model_frames

    size = dataclasses.replace(MICRO, members=2)
    result = train_word("hello lamp", "hl", tmp_path, models_dir, seed=3, size=size, show_progress=False)
    meta = json.loads(result.metadata_path.read_text())["training"]
    graph = onnx.load(str(result.model_path)).graph
    w1 = next(t for t in graph.initializer if t.name == "w1")
    assert meta["members"] == 2 and list(w1.dims) == [16 * 96, 2 * MICRO.hidden]
    assert [n.op_type for n in graph.node][-1] == "ReduceMean" and model_frames(result.model_path) == 16
    # the second member has voices of its own (seed + 1000), the general speech is shared
    one = json.loads((trained[0] / "hello_lamp.wakeword.json").read_text())["training"]  # MICRO, seed 3
    assert meta["speech_windows"] == 2 * one["speech_windows"]
    assert set(one["voices"]) < set(meta["voices"])


def test_config_with_custom_dir_resolves_the_word(trained: tuple[Path, Path], tmp_path: Path) -> None:
    from appliance.config import load_config_text
    from appliance.models.manifest import load_manifest
    from appliance.runtime.wake_words import resolve_config_wake_words

    a, _ = trained
    cfg = load_config_text(
        f"appliance:\n  wake_words:\n    custom_dir: {a}\n    words: [{{name: hello_lamp}}]\n", "test.yaml"
    )
    [word] = resolve_config_wake_words(cfg, load_manifest())
    assert word.engine == "openwakeword" and word.path == a / "hello_lamp.onnx"


def test_cli_evaluate_prints_the_curve_as_json(
    trained: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from appliance.testing.speech import espeak_say, noise, write_wav

    a, _ = trained
    pos, neg = tmp_path / "pos", tmp_path / "neg"
    pos.mkdir()
    neg.mkdir()
    write_wav(pos / "1.wav", espeak_say("hello lamp", "en-gb-x-rp"))
    write_wav(pos / "2.wav", espeak_say("hello lamp", "en-029"))
    write_wav(neg / "n.wav", np.concatenate([espeak_say("the lamp is on the table"), noise(20.0, seed=1)]))
    code = main(["wakeword", "evaluate", "hello_lamp", "--dir", str(a), "--positive", str(pos),
                 "--negative", str(neg), "--json"])  # fmt: skip
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    assert out["name"] == "hello_lamp" and out["positives"] == 2
    assert 0.005 < out["negative_hours"] < 0.01
    assert [p["threshold"] for p in out["curve"]] == sorted(p["threshold"] for p in out["curve"])
    recalls = [p["recall"] for p in out["curve"]]
    assert recalls == sorted(recalls, reverse=True)  # a higher threshold never detects more
    assert out["suggested_threshold"] in [p["threshold"] for p in out["curve"]]


def test_cli_train_refuses_without_an_output_folder(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["wakeword", "train", "hey computer", "--no-progress"]) == 2
    assert "--out" in capsys.readouterr().err


def test_cli_train_refuses_a_folder_it_cannot_write_into_at_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Not minutes later, when the model is written."""
    a_file = tmp_path / "a file"
    a_file.write_bytes(b"the user's")
    assert main(["wakeword", "train", "hey computer", "--out", str(a_file), "--no-progress"]) == 2
    assert f"--out: {a_file} is a file, not a folder" in capsys.readouterr().err
    assert main(["wakeword", "train", "hey computer", "--out", str(a_file / "words")]) == 2
    assert f"--out: cannot write into {a_file / 'words'} (Not a directory)" in capsys.readouterr().err
    assert a_file.read_bytes() == b"the user's"
    created = tmp_path / "new" / "words"  # a missing folder is made (and left empty until the end)
    assert main(["wakeword", "train", "?!", "--out", str(created)]) == 2  # refused for its phrase
    assert not created.exists()


def test_cli_train_refuses_an_empty_phrase(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["wakeword", "train", "?!", "--out", str(tmp_path)]) == 2
    assert "PHRASE" in capsys.readouterr().err


def test_cli_train_refuses_a_word_that_is_already_there(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Before anything slow starts, and the word's files are left as they were."""
    for name in ("hey_computer.onnx", "hello_lamp.base.onnx"):
        (tmp_path / name).write_bytes(b"the user's")
    for phrase, name in (("hey computer", "hey_computer"), ("hello lamp", "hello_lamp")):
        assert main(["wakeword", "train", phrase, "--out", str(tmp_path), "--no-progress"]) == 2
        err = capsys.readouterr().err
        assert f"{name}." in err and "already exists" in err and "--replace" in err
    with pytest.raises(FileExistsError, match=r"hey_computer\.onnx already exists"):
        train_word("hey computer", "hey_computer", tmp_path, tmp_path / "no models", size=MICRO)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hello_lamp.base.onnx", "hey_computer.onnx"]
    assert {p.read_bytes() for p in tmp_path.iterdir()} == {b"the user's"}


def test_the_cli_writes_the_same_model_bytes_for_the_same_seed(
    trained: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The fixture's phrase, seed and size through the CLI, replacing an enrolled word of that name
    (--replace): its files stay as they were while it trains and calibrates, then the new ones take
    their place and its enrollment base goes."""
    import appliance.wakeword_training.calibrate as calibrate
    import appliance.wakeword_training.train as train

    monkeypatch.setattr(train, "TINY", MICRO)  # --quick, made smaller still for the test
    a, out = trained
    old = {
        "hello_lamp.onnx": b"old model",
        "hello_lamp.wakeword.json": b"{}",
        "hello_lamp.base.onnx": b"its enrollment base",
    }
    for name, data in old.items():
        (out / name).write_bytes(data)
    during: list[dict[str, bytes]] = []
    real = calibrate.calibrate

    def watched(*args: object, **kwargs: object) -> object:
        during.append({p.name: p.read_bytes() for p in out.iterdir()})
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(calibrate, "calibrate", watched)
    code = main(["wakeword", "train", "Hello  Lamp", "--quick", "--seed", "3", "--out", str(out),
                 "--no-progress", "--replace"])  # fmt: skip
    assert code == 0
    assert during == [old]
    assert sorted(p.name for p in out.iterdir()) == ["hello_lamp.onnx", "hello_lamp.wakeword.json"]
    # the same phrase, seed and size as the fixture's `train_word`: the same bytes
    assert (out / "hello_lamp.onnx").read_bytes() == (a / "hello_lamp.onnx").read_bytes()
    meta = json.loads((out / "hello_lamp.wakeword.json").read_text())
    assert meta["name"] == "hello_lamp" and meta["phrase"] == "hello lamp" and meta["seed"] == 3
    fixture = json.loads((a / "hello_lamp.wakeword.json").read_text())
    for key in ("model_sha256", "threshold", "patience_frames"):  # calibrated from the same bytes
        assert meta[key] == fixture[key]
    printed = capsys.readouterr().out
    assert "- name: hello_lamp" in printed
    assert f"threshold {meta['threshold']}, patience {meta['patience_frames']} frame(s)" in printed


def test_enroll_lifts_the_enrolled_voice_and_not_the_negatives(
    trained: tuple[Path, Path], models_dir: Path, tmp_path: Path
) -> None:
    from appliance.testing.speech import espeak_say, noise
    from appliance.wakeword_training.enroll import FLOOR, enroll, peak_windows
    from appliance.wakeword_training.train import features_for, score_windows, sliding

    a, _ = trained
    for f in ("hello_lamp.onnx", "hello_lamp.wakeword.json"):
        shutil.copy(a / f, tmp_path / f)
    extractor = features_for(models_dir)
    voice = "en-029+m5"
    takes = [espeak_say("hello lamp", voice) for voice in (voice, voice + "", voice)]
    takes[1] = (takes[1] * 0.5).astype(np.int16)
    takes[2] = np.concatenate([noise(0.2, 50, seed=2), takes[2]])
    negative = np.concatenate([espeak_say("the lamp on the table is bright", "en+m3"), noise(10.0, seed=4)])
    streams = [extractor.embeddings(negative)]
    result = enroll(tmp_path, "hello_lamp", extractor, takes, streams)
    assert result.base_path.read_bytes() == (a / "hello_lamp.onnx").read_bytes()
    assert result.s_low < result.s_high
    meta = json.loads((tmp_path / "hello_lamp.wakeword.json").read_text())
    assert meta["enrollment"]["takes"] == 3
    # the operating point stays what training chose (the verifier lifts no negative window)
    trained_meta = json.loads((a / "hello_lamp.wakeword.json").read_text())
    for key in ("threshold", "patience_frames", "calibration"):
        assert meta[key] == trained_meta[key]
    # each take's peak, plus its peak and neighbours in itself and 4 variations: 3 + 3 × 5 × 3
    assert meta["enrollment"]["templates"] == 48
    # no negative the classifier leans towards is lifted over 0.7 nor over the threshold − 0.2
    assert meta["enrollment"]["ceiling"] == round(max(FLOOR, min(0.7, meta["threshold"] - 0.2)), 4)
    # negatives: exactly the base scores (none leans towards the word, so none is lifted)
    windows = sliding(streams[0])
    base = score_windows(result.base_path, windows)
    assert np.allclose(score_windows(result.model_path, windows), base, atol=1e-6)
    # the enrolled takes: lifted wherever the classifier leans towards the word
    peaks = peak_windows(result.base_path, extractor, takes)
    before = score_windows(result.base_path, peaks)
    after = score_windows(result.model_path, peaks)
    assert np.all(after >= before - 1e-6)
    leaning = before >= FLOOR
    assert np.all(after[leaning] > 0.99)
    # the detector loads the enrolled model like any other word
    features = models_dir / "oww-features"
    OpenWakeWordDetector(
        [WakeWordModelFile("hello_lamp", result.model_path)],
        features / "melspectrogram.onnx",
        features / "embedding_model.onnx",
    )


def test_cli_enroll_records_takes_from_the_microphone_input(
    trained: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--record 3 --input WAV`: the file backend stands in for the microphone; a silent take is
    refused and asked again, the three spoken ones are enrolled."""
    from appliance.testing.speech import espeak_say, silence, write_wav

    a, _ = trained
    for f in ("hello_lamp.onnx", "hello_lamp.wakeword.json"):
        shutil.copy(a / f, tmp_path / f)

    def window(audio: np.ndarray) -> np.ndarray:
        out = np.concatenate([silence(0.5), audio, silence(3.0)]).astype(np.int16)
        return out[: 3 * 16000]

    spoken = [window(espeak_say("hello lamp", "en-029+m5")) for _ in range(3)]
    recording = np.concatenate([spoken[0], silence(3.0).astype(np.int16), spoken[1], spoken[2]])
    wav = write_wav(tmp_path / "mic.wav", recording)
    code = main(
        ["wakeword", "enroll", "hello_lamp", "--dir", str(tmp_path), "--record", "3", "--input", str(wav),
         "--negative-minutes", "0.2"]
    )  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0, out
    prompts = [line for line in out.splitlines() if line.startswith("say it now")]
    assert prompts == ["say it now (1/3)", "say it now (2/3)", "say it now (2/3)", "say it now (3/3)"]
    assert "take refused: heard nothing" in out
    assert json.loads((tmp_path / "hello_lamp.wakeword.json").read_text())["enrollment"]["takes"] == 3
    assert (tmp_path / "hello_lamp.base.onnx").is_file()
    assert main(["wakeword", "enroll", "hello_lamp", "--dir", str(tmp_path), "--record", "2"]) == 2
    assert "--record: give 3–10 takes, got 2" in capsys.readouterr().err
    # an input that ends before the third take: the audio device's exit code, the word untouched
    before = {f.name: f.read_bytes() for f in tmp_path.iterdir()}
    short = write_wav(tmp_path / "short.wav", np.concatenate([spoken[0], spoken[1]]))
    args = ["--dir", str(tmp_path), "--record", "3", "--input", str(short)]
    code = main(["wakeword", "enroll", "hello_lamp", *args])
    assert code == 4
    assert "ended after 2 of 3 takes" in capsys.readouterr().err
    assert {f.name: f.read_bytes() for f in tmp_path.iterdir() if f.name != "short.wav"} == before


def test_validation_test_and_training_negatives_speak_different_texts() -> None:
    from appliance.wakeword_training import train

    training = {*train.SENTENCES, *train.OTHER_PHRASES}
    validation = {*train.VALIDATION_SENTENCES, *train.VALIDATION_PHRASES}
    test = {*train.TEST_SENTENCES, *train.TEST_PHRASES}
    assert len(validation) == len(train.VALIDATION_SENTENCES) + len(train.VALIDATION_PHRASES)
    assert not training & validation and not training & test and not validation & test
