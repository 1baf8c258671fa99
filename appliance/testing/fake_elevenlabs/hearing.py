"""What the fake server hears: no speech recognition, only *that* the user spoke (the energy and
duration of the received audio), as user turns."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from appliance.ports import Pcm16


@dataclass
class UserTurn:
    speech_s: float
    text: str | None = None
    """Set for a typed `user_message` (the fake knows what it says)."""


class TurnDetector:
    """User speech from received audio: on after `min_speech_ms` loud, off after `end_silence_ms`."""

    def __init__(self, rate_hz: int, rms: float, min_speech_ms: int, end_silence_ms: int) -> None:
        self.frame = max(1, rate_hz // 50)  # 20 ms
        self.rate_hz = rate_hz
        self.rms = rms
        self.min_frames = max(1, min_speech_ms // 20)
        self.end_frames = max(1, end_silence_ms // 20)
        self._rest = np.zeros(0, dtype=np.float32)
        self._voiced = 0
        self._silent = 0
        self._speech_frames = 0
        self.speaking = False

    def feed(self, pcm: Pcm16) -> list[tuple[str, float]]:
        """('start', 0) / ('end', speech seconds) transitions found in this audio."""
        data = np.concatenate([self._rest, pcm.astype(np.float32)])
        n = data.size // self.frame
        self._rest = data[n * self.frame :]
        out: list[tuple[str, float]] = []
        for i in range(n):
            frame = data[i * self.frame : (i + 1) * self.frame]
            loud = float(np.sqrt(np.mean(frame * frame))) > self.rms
            if not self.speaking:
                self._voiced = self._voiced + 1 if loud else 0
                if self._voiced >= self.min_frames:
                    self.speaking, self._speech_frames, self._silent = True, self._voiced, 0
                    out.append(("start", 0.0))
            else:
                self._speech_frames += 1
                self._silent = 0 if loud else self._silent + 1
                if self._silent >= self.end_frames:
                    self.speaking, self._voiced = False, 0
                    out.append(("end", (self._speech_frames - self._silent) * 0.02))
        return out
