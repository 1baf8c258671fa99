"""Back from a session, the wake word starts from fresh features (it must not fire again at once).

The loop sets `SetListening(False)` and `ResetWakeWord` as two effects; a block processed on the
model thread between the two (the event listeners run in between) used to resume the wake word
on the features of the wake word that started the session, which fired again immediately.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import ClassVar

import numpy as np

from appliance.core.device import DeviceEvent, WakeWordDetected
from appliance.core.endpointing import EndpointConfig, Endpointer
from appliance.core.wakeword import WakeWordGate, WakeWordRule
from appliance.ports import Pcm16
from appliance.runtime.router import AudioRouter


class StaleDetector:
    """Scores high while its (pretend) feature buffer holds the wake word; a reset clears it."""

    frame_samples = 1280
    names: ClassVar[list[str]] = ["hey_jarvis"]

    def __init__(self) -> None:
        self.holds_wake_word = False
        self.resets = 0

    def scores(self, frame: Pcm16) -> dict[str, float]:
        if frame.max() > 0:
            self.holds_wake_word = True  # the wake word is spoken
        return {"hey_jarvis": 0.99 if self.holds_wake_word else 0.0}

    def reset(self) -> None:
        self.resets += 1
        self.holds_wake_word = False


class QuietVad:
    frame_samples = 512

    def probability(self, frame: Pcm16) -> float:
        return 0.0

    def reset(self) -> None:
        return None


def test_leaving_the_session_resets_the_wake_word_even_before_reset_wake_word_arrives() -> None:
    detector = StaleDetector()
    posted: list[DeviceEvent] = []
    router = AudioRouter(
        detector=detector,
        gate=WakeWordGate({"hey_jarvis": WakeWordRule("hey_jarvis", refractory_s=0.0)}),
        vad=QuietVad(),
        endpointer=Endpointer(EndpointConfig()),
        executor=ThreadPoolExecutor(1),
        post=posted.append,
        wake_vad_gate=None,
    )
    loud = np.full(1280, 1000, np.int16)
    silence = np.zeros(1280, np.int16)

    async def main() -> None:
        await router.process(loud)
        assert [type(e) for e in posted] == [WakeWordDetected]
        for _ in range(5):
            await router.process(silence)  # the session: VAD only
        router.set_listening(False)  # the session is over; ResetWakeWord has not come yet
        for _ in range(5):
            await router.process(silence)

    asyncio.run(main())
    assert [type(e) for e in posted] == [WakeWordDetected], "the wake word fired again on stale features"
    assert detector.resets == 1
