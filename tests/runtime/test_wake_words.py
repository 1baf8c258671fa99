"""Which engine and which model file each configured wake word gets (no models loaded)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from appliance.config import Config, load_config_text
from appliance.core.wakeword import WakeWordRule
from appliance.errors import ConfigError, ModelError
from appliance.runtime.wake_words import ResolvedWakeWord, operating_point_lines, resolve_wake_word

BUNDLED = {
    "oww-features": "wakeword-features",
    "hey_jarvis": "wakeword",
    "alexa": "wakeword",
    "mww-hey_jarvis": "microwakeword",
    "mww-okay_nabu": "microwakeword",
    "silero-vad": "vad",
}


def resolve(name: str, engine: str | None = None, **kw: object) -> ResolvedWakeWord:
    return resolve_wake_word(
        0,
        name,
        engine,  # type: ignore[arg-type]
        kw.get("path"),  # type: ignore[arg-type]
        kw.get("custom", {}),  # type: ignore[arg-type]
        kw.get("custom_dir"),  # type: ignore[arg-type]
        BUNDLED,
    )


@pytest.mark.parametrize(
    ("name", "engine", "expected_engine", "bundled"),
    [
        ("hey_jarvis", None, "openwakeword", "hey_jarvis"),  # the default engine
        ("hey_jarvis", "openwakeword", "openwakeword", "hey_jarvis"),
        ("hey_jarvis", "microwakeword", "microwakeword", "mww-hey_jarvis"),
        ("okay_nabu", None, "microwakeword", "mww-okay_nabu"),  # only microWakeWord has it
        ("alexa", None, "openwakeword", "alexa"),
    ],
)
def test_bundled_words(name: str, engine: str | None, expected_engine: str, bundled: str) -> None:
    word = resolve(name, engine)
    assert (word.engine, word.bundled, word.path) == (expected_engine, bundled, None)


@pytest.mark.parametrize(
    ("name", "engine", "message"),
    [
        (
            "okay_nabu",
            "openwakeword",
            r"unknown wake word 'okay_nabu' for engine openwakeword: .*\(hey_jarvis, alexa\)",
        ),
        ("alexa", "microwakeword", r"for engine microwakeword: .*\(hey_jarvis, okay_nabu\)"),
        ("hey_computer", None, r"not a bundled model \(hey_jarvis, alexa, okay_nabu\) and not in the custom"),
    ],
)
def test_unknown_words_list_what_exists(name: str, engine: str | None, message: str) -> None:
    with pytest.raises(ModelError, match=message):
        resolve(name, engine)


def test_paths_choose_the_engine_by_file(tmp_path: Path) -> None:
    onnx = tmp_path / "a.onnx"
    tflite = tmp_path / "b.tflite"
    described = tmp_path / "c.tflite"
    (tmp_path / "c.json").write_text("{}", encoding="utf-8")
    assert resolve("a", path=onnx).engine == "openwakeword"
    assert resolve("b", path=tflite).engine == "openwakeword"  # an openWakeWord .tflite: refused when loaded
    word = resolve("c", path=described)
    assert (word.engine, word.path) == ("microwakeword", tmp_path / "c.json")
    assert resolve("c", path=tmp_path / "c.json").engine == "microwakeword"
    assert resolve("c", "openwakeword", path=described).engine == "openwakeword"
    with pytest.raises(ModelError, match=r"words\[0\]\.path: .*a\.onnx is not a microWakeWord model"):
        resolve("a", "microwakeword", path=onnx)


def test_custom_folder_words(tmp_path: Path) -> None:
    (tmp_path / "both.onnx").write_bytes(b"x")
    (tmp_path / "both.json").write_text("{}", encoding="utf-8")
    (tmp_path / "micro.json").write_text("{}", encoding="utf-8")
    custom = {"both": tmp_path / "both.onnx", "oww": tmp_path / "oww.onnx"}
    kw = {"custom": custom, "custom_dir": tmp_path}
    assert resolve("both", **kw).engine == "openwakeword"  # the .onnx wins unless asked
    assert resolve("both", "microwakeword", **kw).path == tmp_path / "both.json"
    assert resolve("micro", **kw) == ResolvedWakeWord("micro", "microwakeword", tmp_path / "micro.json", None)
    assert resolve("oww", **kw).path == tmp_path / "oww.onnx"
    with pytest.raises(ModelError, match=r"needs micro\.onnx .* use engine microwakeword"):
        resolve("micro", "openwakeword", **kw)
    with pytest.raises(ModelError, match=r"microwakeword needs oww\.json"):
        resolve("oww", "microwakeword", **kw)
    # a custom model shadows a bundled one of the same name
    (tmp_path / "hey_jarvis.json").write_text("{}", encoding="utf-8")
    assert resolve("hey_jarvis", **kw).path == tmp_path / "hey_jarvis.json"


# --- a trained word's operating point: NAME.wakeword.json where the config does not set it ----


def trained(folder: Path, name: str, meta: object) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.onnx").write_bytes(b"onnx")
    path = folder / f"{name}.wakeword.json"
    path.write_text(meta if isinstance(meta, str) else json.dumps(meta), encoding="utf-8")
    return path


def load_words(tmp_path: Path, *words: dict[str, object], custom_dir: str | None = "custom") -> Config:
    doc: dict[str, object] = {"words": list(words)}
    if custom_dir is not None:
        doc["custom_dir"] = custom_dir
    text = yaml.safe_dump({"appliance": {"wake_words": doc}})
    return load_config_text(text, "test.yaml", base_dir=tmp_path, log_warnings=False)


def test_a_trained_word_runs_at_its_metadata_unless_the_config_sets_it(tmp_path: Path) -> None:
    meta = trained(tmp_path / "custom", "hey_computer", {"threshold": 0.97, "patience_frames": 2})
    cfg = load_words(tmp_path, {"name": "hey_computer"}, {"name": "hey_jarvis"})
    rules = cfg.wake_word_rules()
    assert rules["hey_computer"] == WakeWordRule("hey_computer", 0.97, 2, 2.0)
    assert rules["hey_jarvis"] == WakeWordRule("hey_jarvis", 0.5, 1, 2.0)  # bundled: no metadata
    assert operating_point_lines(cfg.wake_word_points) == [
        f"wake word hey_computer: threshold 0.97, patience 2 frame(s) (from {meta})",
        "wake word hey_jarvis: threshold 0.5, patience 1 frame(s) (the config's default)",
    ]
    # an explicit value wins, field by field (even one equal to the default)
    cfg = load_words(tmp_path, {"name": "hey_computer", "threshold": 0.5})
    assert cfg.wake_word_rules()["hey_computer"] == WakeWordRule("hey_computer", 0.5, 2, 2.0)
    assert operating_point_lines(cfg.wake_word_points) == [
        "wake word hey_computer: threshold 0.5, patience 2 frame(s) "
        f"(threshold set in the config, patience from {meta})"
    ]
    cfg = load_words(tmp_path, {"name": "hey_computer", "threshold": 0.8, "patience_frames": 1})
    assert cfg.wake_word_rules()["hey_computer"] == WakeWordRule("hey_computer", 0.8, 1, 2.0)
    assert operating_point_lines(cfg.wake_word_points) == [
        "wake word hey_computer: threshold 0.8, patience 1 frame(s) (set in the config)"
    ]


def test_metadata_beside_a_model_path_and_older_metadata_without_patience(tmp_path: Path) -> None:
    trained(tmp_path / "models", "hey_kitchen", {"threshold": 0.9, "phrase": "hey kitchen"})
    cfg = load_words(tmp_path, {"path": "models/hey_kitchen.onnx"}, custom_dir=None)
    assert cfg.wake_word_rules()["hey_kitchen"] == WakeWordRule("hey_kitchen", 0.9, 1, 2.0)
    # a microWakeWord word does not read openWakeWord training metadata
    cfg = load_words(tmp_path / "models", {"name": "hey_kitchen", "engine": "microwakeword"}, custom_dir=".")
    assert cfg.wake_word_rules()["hey_kitchen"] == WakeWordRule("hey_kitchen", 0.5, 1, 2.0)


def test_the_model_files_a_word_is_read_from_are_stamped_when_the_config_loads(tmp_path: Path) -> None:
    trained(tmp_path / "custom", "hey_computer", {"threshold": 0.9})
    (tmp_path / "models").mkdir()
    for name in ("mine.tflite", "mine.json", "other.onnx"):
        (tmp_path / "models" / name).write_bytes(b"12345")
    cfg = load_words(
        tmp_path,
        {"name": "hey_computer"},
        {"name": "hey_jarvis"},
        {"name": "mine", "path": "models/mine.json"},
    )
    stamps = {
        name: [(Path(f).name, size) for f, size, _ in p.files] for name, p in cfg.wake_word_points.items()
    }
    assert stamps == {
        "hey_computer": [("hey_computer.onnx", 4), ("hey_computer.wakeword.json", 18)],
        "hey_jarvis": [],  # bundled (none in the custom folder to shadow it)
        "mine": [("mine.json", 5), ("mine.tflite", 5)],  # and not the folder's other models
    }
    mtime = (tmp_path / "custom" / "hey_computer.onnx").stat().st_mtime_ns
    assert cfg.wake_word_points["hey_computer"].files[0][2] == mtime


def test_metadata_without_its_model_is_not_used(tmp_path: Path) -> None:
    meta = trained(tmp_path / "custom", "alexa", {"threshold": 0.9})
    (tmp_path / "custom" / "alexa.onnx").unlink()  # the bundled alexa runs: its own defaults
    assert load_words(tmp_path, {"name": "alexa"}).wake_word_rules()["alexa"].threshold == 0.5
    assert meta.is_file()


@pytest.mark.parametrize(
    ("meta", "problem"),
    [
        (
            "{not json",
            "not valid JSON (Expecting property name enclosed in double quotes: line 1 column 2 (char 1))",
        ),
        ("[0.9]", "expected a JSON object, got list"),
        ({"phrase": "hey computer"}, "threshold must be a number between 0 and 1 (exclusive), got None"),
        ({"threshold": 1.0}, "threshold must be a number between 0 and 1 (exclusive), got 1.0"),
        ({"threshold": "0.9"}, "threshold must be a number between 0 and 1 (exclusive), got '0.9'"),
        ({"threshold": 0.9, "patience_frames": 0}, "patience_frames must be a whole number 1–25, got 0"),
        ({"threshold": 0.9, "patience_frames": 2.5}, "patience_frames must be a whole number 1–25, got 2.5"),
        (
            {"threshold": 0.9, "patience_frames": True},
            "patience_frames must be a whole number 1–25, got True",
        ),
    ],
)
def test_malformed_metadata_is_a_config_error_naming_the_file(
    tmp_path: Path, meta: object, problem: str
) -> None:
    path = trained(tmp_path / "custom", "hey_computer", meta)
    with pytest.raises(ConfigError) as exc:
        load_words(tmp_path, {"name": "hey_jarvis"}, {"name": "hey_computer"})
    assert exc.value.problems == [f"appliance.wake_words.words[1] (hey_computer): {path}: {problem}"]
    # both values set in the config: the file is not needed, so not read
    cfg = load_words(tmp_path, {"name": "hey_computer", "threshold": 0.7, "patience_frames": 3})
    assert cfg.wake_word_rules()["hey_computer"] == WakeWordRule("hey_computer", 0.7, 3, 2.0)


def test_check_config_says_where_each_threshold_comes_from(tmp_path: Path) -> None:
    meta = trained(tmp_path / "custom", "hey_computer", {"threshold": 0.95, "patience_frames": 3})
    path = tmp_path / "config.yaml"
    words = {"custom_dir": "custom", "words": [{"name": "hey_computer"}]}
    path.write_text(yaml.safe_dump({"appliance": {"wake_words": words}}), encoding="utf-8")
    out = subprocess.run(
        [sys.executable, "-m", "appliance", "check-config", str(path)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert f"wake word hey_computer: threshold 0.95, patience 3 frame(s) (from {meta})\n" in out.stdout
    meta.write_text('{"threshold": 2}', encoding="utf-8")
    out = subprocess.run(
        [sys.executable, "-m", "appliance", "check-config", str(path)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 2
    assert f"{meta}: threshold must be a number between 0 and 1 (exclusive), got 2" in out.stderr
