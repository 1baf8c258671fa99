"""Wake, done and error chimes: bundled WAVs, replaceable, can be turned off."""

from __future__ import annotations

import logging
import wave
from pathlib import Path

import numpy as np

from appliance.core.device import Chime
from appliance.errors import ConfigError
from appliance.ports import Pcm16, Speaker

_LOGGER = logging.getLogger(__name__)

BUNDLED_DIR = Path(__file__).resolve().parent.parent / "assets" / "chimes"


def read_wav_mono(path: Path) -> tuple[Pcm16, int]:
    """A 16-bit PCM WAV as mono int16 and its rate (channels are averaged)."""
    with wave.open(str(path), "rb") as w:
        if w.getsampwidth() != 2:
            raise ValueError(f"{path}: chimes must be 16-bit PCM WAV, got {8 * w.getsampwidth()}-bit")
        rate, channels = w.getframerate(), w.getnchannels()
        data = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    if channels > 1:
        data = data.reshape(-1, channels).mean(axis=1)
    return np.asarray(data, dtype=np.int16), rate


class ChimePlayer:
    def __init__(
        self,
        speaker: Speaker,
        *,
        enabled: bool = True,
        volume: float = 0.6,
        paths: dict[Chime, Path | None] | None = None,
    ) -> None:
        self._speaker = speaker
        self.enabled = enabled
        self._sounds: dict[Chime, tuple[Pcm16, int]] = {}
        if not enabled:
            return
        problems: list[str] = []
        for chime in Chime:
            path = (paths or {}).get(chime) or BUNDLED_DIR / f"{chime.value}.wav"
            try:
                audio, rate = read_wav_mono(Path(path))
            except (OSError, ValueError, wave.Error, EOFError) as err:
                problems.append(f"appliance.chimes.{chime.value}: cannot read {path}: {err}")
                continue
            scaled = np.clip(audio.astype(np.float32) * volume, -32768, 32767).astype(np.int16)
            self._sounds[chime] = (scaled, rate)
        if problems:
            raise ConfigError(problems)

    async def play(self, chime: Chime) -> None:
        sound = self._sounds.get(chime)
        if not self.enabled or sound is None:
            return
        await self._speaker.play(*sound)
