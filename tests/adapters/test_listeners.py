"""Wake word and VAD on real models with synthesized speech, through the real router."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from appliance.adapters.openwakeword_detector import OpenWakeWordDetector, WakeWordModelFile
from appliance.adapters.silero_vad import SileroVad
from appliance.core.device import DeviceEvent, WakeWordDetected
from appliance.core.endpointing import EndpointConfig, Endpointer, SpeechStarted, UtteranceEnded
from appliance.core.wakeword import WakeWordGate, WakeWordRule
from appliance.errors import ModelError
from appliance.runtime.router import AudioRouter
from appliance.testing.speech import concat, espeak_say, noise, silence

RATE = 16000


@pytest.fixture(scope="module")
def detector(models_dir: Path) -> OpenWakeWordDetector:
    feats = models_dir / "oww-features"
    return OpenWakeWordDetector(
        [
            WakeWordModelFile("hey_jarvis", models_dir / "hey_jarvis" / "hey_jarvis_v0.1.onnx"),
            WakeWordModelFile("alexa", models_dir / "alexa" / "alexa_v0.1.onnx"),
        ],
        feats / "melspectrogram.onnx",
        feats / "embedding_model.onnx",
    )


@pytest.fixture(scope="module")
def vad(models_dir: Path) -> SileroVad:
    return SileroVad(models_dir / "silero-vad" / "silero_vad.onnx")


def route(detector: OpenWakeWordDetector, vad: SileroVad, audio: np.ndarray) -> list[DeviceEvent]:
    """Feed 80 ms blocks through the real router (wake word, then VAD after a detection)."""
    import asyncio

    detector.reset()
    vad.reset()
    events: list[DeviceEvent] = []
    router = AudioRouter(
        detector=detector,
        gate=WakeWordGate({n: WakeWordRule(n) for n in detector.names}),
        vad=vad,
        endpointer=Endpointer(EndpointConfig()),
        executor=ThreadPoolExecutor(1),
        post=events.append,
    )

    async def feed() -> None:
        for i in range(0, audio.size, 1280):
            await router.process(audio[i : i + 1280])

    asyncio.run(feed())
    return events


def test_hey_jarvis_detected_right_after_the_phrase(
    detector: OpenWakeWordDetector, vad: SileroVad, say: Callable[[str], np.ndarray]
) -> None:
    phrase = say("Hey Jarvis!")
    audio = concat(silence(1.5), phrase, silence(2.0))
    phrase_end = (1.5 * RATE + phrase.size) / RATE
    wakes = [e for e in route(detector, vad, audio) if isinstance(e, WakeWordDetected)]
    assert len(wakes) == 1
    assert wakes[0].name == "hey_jarvis"
    assert wakes[0].score > 0.9
    # detected at most 0.5 s after the phrase ends (and not before its second half)
    assert phrase_end - 0.4 < wakes[0].audio_t <= phrase_end + 0.5


def test_espeak_voice_also_wakes(detector: OpenWakeWordDetector, vad: SileroVad) -> None:
    audio = concat(silence(1.0), espeak_say("Hey Jarvis"), silence(1.5))
    wakes = [e for e in route(detector, vad, audio) if isinstance(e, WakeWordDetected)]
    assert [w.name for w in wakes] == ["hey_jarvis"]


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(
            lambda say: concat(
                silence(1.0), say("The weather today is sunny with a light breeze."), silence(1.0)
            ),
            id="unrelated-speech",
        ),
        pytest.param(
            lambda say: concat(
                silence(0.5), say("Please turn on the kitchen lights and play music."), silence(1.0)
            ),
            id="command-without-wake",
        ),
        pytest.param(lambda say: noise(6.0, level=2000.0), id="loud-noise"),
        pytest.param(lambda say: silence(5.0), id="silence"),
    ],
)
def test_no_false_wake(
    detector: OpenWakeWordDetector,
    vad: SileroVad,
    say: Callable[[str], np.ndarray],
    make: Callable[[Callable[[str], np.ndarray]], np.ndarray],
) -> None:
    events = route(detector, vad, make(say))
    assert not [e for e in events if isinstance(e, WakeWordDetected)]


def test_utterance_boundaries_after_the_wake_word(
    detector: OpenWakeWordDetector, vad: SileroVad, say: Callable[[str], np.ndarray]
) -> None:
    wake = say("Hey Jarvis!")
    command = say("What is the capital of France?")
    gap = 0.6
    audio = concat(silence(1.0), wake, silence(gap), command, silence(2.0))
    cmd_start = (1.0 * RATE + wake.size) / RATE + gap
    cmd_end = cmd_start + command.size / RATE
    events = route(detector, vad, audio)
    kinds = [type(e).__name__ for e in events]
    assert kinds == ["WakeWordDetected", "SpeechStarted", "UtteranceEnded"], kinds
    started = events[1]
    ended = events[2]
    assert isinstance(started, SpeechStarted) and isinstance(ended, UtteranceEnded)
    # VAD boundaries within 0.25 s of the true ones (piper leaves a little silence at the edges)
    assert abs(started.t - cmd_start) < 0.25, (started.t, cmd_start)
    assert abs(ended.end_t - cmd_end) < 0.25, (ended.end_t, cmd_end)
    assert ended.reason == "silence"
    # the utterance audio holds the command (with preroll and 0.2 s of tail), not the wake word
    extra = EndpointConfig().preroll_s + 0.2
    assert abs(len(ended.audio) / 2 / RATE - (ended.end_t - ended.start_t)) < extra + 0.05


def test_vad_probabilities_separate_speech_from_noise(
    vad: SileroVad, say: Callable[[str], np.ndarray]
) -> None:
    def speech_fraction(audio: np.ndarray) -> float:
        vad.reset()
        probs = [vad.probability(audio[i : i + 512]) for i in range(0, audio.size - 511, 512)]
        return float(np.mean(np.array(probs) > 0.5))

    assert speech_fraction(say("Please turn on the kitchen lights and set a timer.")) > 0.6
    assert speech_fraction(noise(3.0, level=500.0)) < 0.05
    assert speech_fraction(silence(3.0)) == 0.0


def test_a_twin_vad_shares_the_model_but_not_the_state(
    vad: SileroVad, say: Callable[[str], np.ndarray]
) -> None:
    speech = say("Stop, stop please.")
    frames = [speech[i : i + 512] for i in range(0, speech.size - 511, 512)]
    vad.reset()
    alone = [vad.probability(f) for f in frames]
    vad.reset()
    twin = vad.twin()
    assert twin._session is vad._session
    interleaved = []
    for f in frames:  # the twin hears silence in between: the first VAD must not notice
        twin.probability(np.zeros(512, np.int16))
        interleaved.append(vad.probability(f))
    assert interleaved == alone and max(alone) > 0.5


def test_missing_model_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="does not exist"):
        OpenWakeWordDetector(
            [WakeWordModelFile("x", tmp_path / "x.onnx")], tmp_path / "m.onnx", tmp_path / "e.onnx"
        )
    with pytest.raises(ModelError, match="does not exist"):
        SileroVad(tmp_path / "nope.onnx")


def test_tflite_custom_model_explains_what_to_do(tmp_path: Path, models_dir: Path) -> None:
    custom = tmp_path / "hey_computer.tflite"
    custom.write_bytes(b"tflite")
    feats = models_dir / "oww-features"
    with pytest.raises(ModelError, match=r"convert it to \.onnx"):
        OpenWakeWordDetector(
            [WakeWordModelFile("hey_computer", custom)],
            feats / "melspectrogram.onnx",
            feats / "embedding_model.onnx",
        )


@pytest.mark.parametrize("voice", ["piper", "espeak"])
@pytest.mark.parametrize("gap", [0.2, 0.3, 0.4, 0.5, 0.6, 0.7])
def test_no_word_lost_after_the_wake_word(
    detector: OpenWakeWordDetector, vad: SileroVad, say: Callable[[str], np.ndarray], voice: str, gap: float
) -> None:
    """A command said 0.2-0.7 s after the wake word: the utterance audio handed to STT starts
    before the command's first word (its first sample above 2 % of the peak), so whisper never
    misses it ("What color is the sky?" heard as "color is the sky"). Sample positions, not
    whisper output: piper_say_exact and espeak-ng give the same samples on every run."""
    wake = say("Hey Jarvis!")
    command = say("What color is the sky?") if voice == "piper" else espeak_say("What color is the sky?")
    audio = concat(silence(1.0), wake, silence(gap), command, silence(2.0))
    loud = np.nonzero(np.abs(command.astype(np.float64)) > 0.02 * np.abs(command).max())[0]
    onset = RATE + wake.size + round(gap * RATE) + int(loud[0])
    ended = [e for e in route(detector, vad, audio) if isinstance(e, UtteranceEnded)]
    assert len(ended) == 1
    heard = np.frombuffer(ended[0].audio, dtype="<i2")
    # the audio ends 0.2 s after the last speech frame (the trimmed trailing silence)
    first = round(ended[0].end_t * RATE) + round(0.2 * RATE) - heard.size
    assert np.array_equal(audio[first : first + heard.size], heard)  # located exactly
    assert first < onset - round(0.05 * RATE), (first / RATE, onset / RATE)
