"""A kiosk end to end (real wake word, VAD, whisper, piper; SmolLM2 loaded but not needed): an
FAQ question is answered with the FAQ's answer, as written, and the turn reports it."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from appliance.config import load_config
from appliance.runtime.app import Preloaded, RunOptions, preload, run_async
from appliance.testing.speech import concat, silence, write_wav

KIOSK = Path(__file__).resolve().parents[2] / "benchmarks" / "data" / "kiosk"


@pytest.fixture(scope="module")
def preloaded(models_dir: Path) -> Preloaded:
    os.environ["APPLIANCE_MODELS_DIR"] = str(models_dir)
    return preload(load_config(None))


def test_an_faq_question_gets_the_exact_answer(
    preloaded: Preloaded,
    tmp_path: Path,
    say: Callable[[str], np.ndarray],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("STATE_DIRECTORY", str(tmp_path / "state"))  # the index cache
    shutil.copytree(KIOSK / "docs", tmp_path / "docs")
    shutil.copy(KIOSK / "kiosk.yaml", tmp_path / "kiosk.yaml")
    cfg = load_config(tmp_path / "kiosk.yaml", log_warnings=False)
    audio = concat(
        silence(1.0), say("Hey Jarvis!"), silence(0.5), say("Where are the restrooms?"), silence(4.0)
    )
    wav = write_wav(tmp_path / "in.wav", audio)
    events_path = tmp_path / "events.jsonl"
    options = RunOptions(
        input=str(wav), output=str(tmp_path / "out.wav"), events=str(events_path), realtime=False
    )
    asyncio.run(run_async(cfg, options, preloaded))
    events = [json.loads(line) for line in events_path.read_text().splitlines()]
    types = [e["type"] for e in events]
    transcript = next(e for e in events if e["type"] == "user_transcript")["user_transcript"]
    assert "restroom" in transcript.lower(), transcript
    retrieved = [e for e in events if e["type"] == "knowledge_retrieved"]
    assert len(retrieved) == 1, types
    assert (
        retrieved[0]["faq_used"] is True and retrieved[0]["faq_document_id"] == "harbourlight/kiosk.faq.yaml"
    )
    assert retrieved[0]["chunks"] == [] and retrieved[0]["ms"] >= 0
    responses = [e["agent_response"] for e in events if e["type"] == "agent_response"]
    assert responses == ["Toilets are on every floor, next to the stairs."]
    assert types.index("knowledge_retrieved") < types.index("agent_response")
    assert (tmp_path / "state" / "knowledge").is_dir()
