"""Which engine and which model file each configured wake word gets (no models loaded)."""

from __future__ import annotations

from pathlib import Path

import pytest

from appliance.errors import ModelError
from appliance.runtime.wake_words import ResolvedWakeWord, resolve_wake_word

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
