"""Wake-word decisions from per-frame scores: threshold, patience and refractory period.

The detector adapter turns audio into scores (one per model per 80 ms frame); this gate turns
scores into detections. Patience and refractory are measured in audio time, so a WAV run fast
and the same WAV run in real time detect at the same instants.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class WakeWordRule:
    """How one wake-word model fires."""

    name: str
    threshold: float = 0.5
    patience_frames: int = 1
    refractory_s: float = 2.0


@dataclass(frozen=True)
class Detection:
    name: str
    score: float
    t: float


@dataclass
class _ModelState:
    above: int = 0
    peak: float = 0.0
    blocked_until: float = float("-inf")


@dataclass
class WakeWordGate:
    """Feed it `scores` for each frame with the audio time at the end of the frame."""

    rules: dict[str, WakeWordRule]
    _state: dict[str, _ModelState] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._state = {name: _ModelState() for name in self.rules}

    def process(self, scores: dict[str, float], t: float) -> Detection | None:
        """Return the best detection this frame, if any model fires."""
        fired: list[Detection] = []
        for name, score in scores.items():
            rule = self.rules.get(name)
            if rule is None:
                continue
            st = self._state[name]
            if t < st.blocked_until:
                st.above = 0
                st.peak = 0.0
                continue
            if score >= rule.threshold:
                st.above += 1
                st.peak = max(st.peak, score)
                if st.above >= rule.patience_frames:
                    fired.append(Detection(name=name, score=st.peak, t=t))
            else:
                st.above = 0
                st.peak = 0.0
        if not fired:
            return None
        best = max(fired, key=lambda d: d.score)
        # One wake per utterance: every model goes quiet for its refractory period.
        for name, st in self._state.items():
            st.above = 0
            st.peak = 0.0
            st.blocked_until = t + self.rules[name].refractory_s
        return best

    def reset(self) -> None:
        """Forget partial patience counts (between sessions). Refractory periods are kept."""
        for st in self._state.values():
            st.above = 0
            st.peak = 0.0
