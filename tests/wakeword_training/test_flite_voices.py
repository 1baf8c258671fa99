"""The Flite speaker the benchmark measures a word on: never among training's, calibration's or
the held-out splits' voices; spoken at 16 kHz, deterministically, longer when stretched."""

from __future__ import annotations

import numpy as np
import pytest

from appliance.wakeword_training import synth

needs_flite = pytest.mark.skipif(not synth.flite_available(), reason="flite is not installed")


def test_no_split_draws_a_flite_voice() -> None:
    for voices in (
        synth.voices(False, 400, 3, piper=False),
        synth.voices(True, 400, 3, piper=False),
        synth.calibration_voices(400, 3, piper=False),
    ):
        assert all(v.engine == "espeak" for v in voices)


@needs_flite
def test_flite_speaks_at_16khz_deterministically_and_stretches() -> None:
    for speaker in (synth.HELDOUT_FLITE_SPEAKER, "slt"):
        audio = synth.say("hello lamp", synth.Voice("flite", speaker, pitch=120, length_scale=1.0))
        assert audio.dtype == np.int16 and 0.4 * synth.RATE_HZ < audio.size < 3 * synth.RATE_HZ
        assert int(np.abs(audio.astype(np.int32)).max()) > 1000
    voice = synth.Voice("flite", synth.HELDOUT_FLITE_SPEAKER, pitch=100, length_scale=0.8)
    short = synth.say("hello lamp", voice)
    long = synth.say("hello lamp", synth.Voice("flite", synth.HELDOUT_FLITE_SPEAKER, 100, length_scale=1.25))
    assert long.size > 1.3 * short.size
    assert np.array_equal(short, synth.say("hello lamp", voice))
    assert voice.label == "flite:rms/f100/x0.8"


def test_a_missing_flite_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(synth.shutil, "which", lambda name: None)
    with pytest.raises(RuntimeError, match="flite is not installed"):
        synth.say("hello", synth.Voice("flite", "rms", pitch=100))
