"""The audio router: the hot path from microphone frames to outcomes.

Frames never enter the event queue. The router cuts the 16 kHz stream into 80 ms wake-word
frames and 32 ms VAD frames, runs the models on the single model thread (ONNX sessions are
never used concurrently) and posts only outcomes (`WakeWordDetected`, `SpeechStarted`,
`UtteranceEnded`) to the loop. While a session runs, every frame is also handed to it.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import numpy.typing as npt

from appliance.core.device import DeviceEvent, WakeWordDetected
from appliance.core.doubletalk import (
    FRAME_S,
    BandDoubleTalkConfig,
    BandDoubleTalkDetector,
    DoubleTalkConfig,
    DoubleTalkDetector,
)
from appliance.core.endpointing import Endpointer, EndpointEvent, SpeechStarted
from appliance.core.micclock import MicClock, waited_for
from appliance.core.wakeword import WakeWordGate
from appliance.ports import MIC_RATE_HZ, EchoCanceller, Pcm16, VoiceActivityDetector, WakeWordDetector

_LOGGER = logging.getLogger(__name__)


@dataclass
class RouterStats:
    frames_in: int = 0
    wake_frames: int = 0
    vad_frames: int = 0
    peak_scores: dict[str, float] = field(default_factory=dict)


ECHO_TAIL_S = 1.0
"""The echo canceller keeps running this long after the speaker falls silent: a room's
reverberation (RT60 up to about 0.8 s) and the output device's latency come back after it."""
TRACE_FRAMES = 12
"""VAD frames of evidence a debug log of a speech start during the agent's turn shows."""
BANDS = 16
"""The band double-talk detector's bands: 500 Hz wide over 0-8 kHz (the 10 ms frame's FFT bins
1-80, 100 Hz apart, five to a band)."""


_BAND_FRAME = round(FRAME_S * MIC_RATE_HZ)
_BAND_WINDOW = np.hanning(_BAND_FRAME + 2)[1:-1]
_BAND_SCALE = 2.0 / (_BAND_FRAME * float(np.sum(_BAND_WINDOW**2)))


def band_energies(x: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Mean-square energy per band (`BANDS`, Hann-windowed FFT) of each whole 10 ms frame of `x`
    (full scale 1.0): [frame, band]."""
    frames = x[: x.size // _BAND_FRAME * _BAND_FRAME].reshape(-1, _BAND_FRAME) * _BAND_WINDOW
    power = np.abs(np.fft.rfft(frames, axis=1)) ** 2 * _BAND_SCALE
    per = (_BAND_FRAME // 2) // BANDS
    bands: npt.NDArray[np.float64] = power[:, 1 : 1 + per * BANDS].reshape(-1, BANDS, per).sum(axis=2)
    return bands


class PlaybackReference(Protocol):
    @property
    def playing(self) -> bool: ...

    def reference(self, t_start: float, n_samples: int) -> npt.NDArray[np.float32]: ...


class LinearEcho(Protocol):
    """Our own linear echo estimate (`adapters/linear_echo.LinearEchoFilter`): barge-in
    evidence only, the session hears the canceller's output."""

    def process(
        self, mic: npt.NDArray[np.float64], reference: npt.NDArray[np.float64]
    ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]: ...

    def pause(self) -> None: ...


class _Chunker:
    """Re-blocks an int16 stream into frames of exactly `size` samples."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._buf = np.zeros(0, dtype=np.int16)

    def push(self, block: Pcm16) -> list[Pcm16]:
        self._buf = np.concatenate([self._buf, block]) if self._buf.size else np.asarray(block, np.int16)
        n = self._buf.size // self.size
        frames = [self._buf[i * self.size : (i + 1) * self.size] for i in range(n)]
        self._buf = self._buf[n * self.size :]
        return frames

    @property
    def pending(self) -> int:
        return int(self._buf.size)

    def take(self) -> Pcm16:
        rest, self._buf = self._buf, np.zeros(0, dtype=np.int16)
        return rest

    def clear(self) -> None:
        self._buf = np.zeros(0, dtype=np.int16)


class _PairedFrames:
    """Two aligned float signals (a microphone and what it is compared with) re-blocked into
    whole frames of `size` samples; the samples short of a frame wait for the next block."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._a: npt.NDArray[np.float64] = np.zeros(0, dtype=np.float64)
        self._b: npt.NDArray[np.float64] = np.zeros(0, dtype=np.float64)

    def push(
        self, a: npt.NDArray[np.float64], b: npt.NDArray[np.float64], start: int
    ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], list[float]]:
        """The whole frames of `a` and `b` (shape (frames, size) each) and each frame's end on
        the audio clock (s); `start`: the blocks' first sample, counted like `samples_in`."""
        first_end = start - self._a.size + self.size
        a, b = np.concatenate([self._a, a]), np.concatenate([self._b, b])
        whole = a.size // self.size
        self._a, self._b = a[whole * self.size :], b[whole * self.size :]
        ends = [(first_end + i * self.size) / MIC_RATE_HZ for i in range(whole)]
        cut = whole * self.size
        return a[:cut].reshape(whole, self.size), b[:cut].reshape(whole, self.size), ends

    def clear(self) -> None:
        self._a = np.zeros(0, dtype=np.float64)
        self._b = np.zeros(0, dtype=np.float64)


EXPLAIN_LAGS = 4
"""`explained_share`: the filter on the estimate has taps at -4..+4 samples."""


def explained_share(
    residual: npt.NDArray[np.float64], estimate: npt.NDArray[np.float64], lags: int = EXPLAIN_LAGS
) -> list[float]:
    """Per frame (rows of the two [frame, sample] arrays): the share of the residual's energy
    that a least-squares filter on the estimate (taps at -lags..+lags samples, within the
    frame) reproduces. A misadjusted linear echo filter leaks a linear copy of its estimate
    (near 1); a user's voice is not one (near 0)."""
    frames, n = residual.shape
    cols = np.zeros((frames, n, 2 * lags + 1), dtype=np.float64)
    for j, k in enumerate(range(-lags, lags + 1)):
        if k >= 0:
            cols[:, k:, j] = estimate[:, : n - k]
        else:
            cols[:, : n + k, j] = estimate[:, -k:]
    gram = np.einsum("fnj,fnk->fjk", cols, cols)
    ridge = 1e-9 * np.trace(gram, axis1=1, axis2=2) + 1e-15
    gram += ridge[:, None, None] * np.eye(2 * lags + 1)
    cross = np.einsum("fnj,fn->fj", cols, residual)
    coef = np.linalg.solve(gram, cross[:, :, None])[:, :, 0]
    energy = np.einsum("fn,fn->f", residual, residual)
    share = np.einsum("fj,fj->f", cross, coef) / np.maximum(energy, 1e-15)
    return [float(x) for x in np.clip(share, 0.0, 1.0)]


def _explained_one(residual: npt.NDArray[np.float64], estimate: npt.NDArray[np.float64]) -> float:
    return explained_share(residual[None, :], estimate[None, :])[0]


def _energies(frames: npt.NDArray[np.float64]) -> list[float]:
    """Each frame's mean square (full scale 1.0)."""
    return [float(e) for e in np.mean(frames**2, axis=1)]


class AudioRouter:
    def __init__(
        self,
        *,
        detector: WakeWordDetector,
        gate: WakeWordGate,
        vad: VoiceActivityDetector,
        endpointer: Endpointer,
        executor: Executor,
        post: Callable[[DeviceEvent], None],
        wake_vad_gate: float | None = 0.5,
        wake_vad_window_s: float = 1.0,
        playback: PlaybackReference | None = None,
        echo: EchoCanceller | None = None,
        now: Callable[[], float] | None = None,
        echo_tail_s: float = ECHO_TAIL_S,
        double_talk: DoubleTalkConfig | None = None,
        band_double_talk: BandDoubleTalkConfig | None = None,
        raw_vad: VoiceActivityDetector | None = None,
        raw_vad_always: bool = True,
        linear_echo: DoubleTalkConfig | None = None,
        linear_filter: LinearEcho | None = None,
        residual_vad: VoiceActivityDetector | None = None,
    ) -> None:
        self._detector = detector
        self._gate = gate
        self._vad = vad
        self._endpointer = endpointer
        self._executor = executor
        self._post = post
        self._wake_chunks = _Chunker(detector.frame_samples)
        self._vad_chunks = _Chunker(vad.frame_samples)
        self._listening = False
        self._playback = playback
        self._echo = echo
        self._now = now
        self._echo_tail_s = echo_tail_s
        self._last_playing_t: float | None = None
        self._echo_engaged = False
        self._echo_since: float | None = None
        """Audio time the canceller started on the current agent turn (None: not running); the
        endpointer's barge-in rule reads how long it has run."""
        self._audible = False
        """The agent's voice is in this block's echo reference (not only its echo tail)."""
        self._barge_in_rule = echo is not None and echo.name != "gate"
        """Gating leaves too much echo for the faster rule: with a pure 30 ms echo at gain 2
        (the case it handles) the rule made it interrupt itself; it keeps the normal rule."""
        self._double_talk = (
            DoubleTalkDetector(double_talk) if double_talk is not None and self._barge_in_rule else None
        )
        """The raw microphone against the playback, while the canceller runs: frames it marks
        count for the barge-in rule before the canceller has settled (`core.doubletalk`)."""
        self._bands = (
            BandDoubleTalkDetector(band_double_talk)
            if band_double_talk is not None and raw_vad is not None and self._barge_in_rule
            else None
        )
        """The same per frequency band, while the canceller runs: in frames it marks, a second VAD
        on the raw microphone (`raw_vad`) gives the endpointer evidence the canceller may have
        suppressed (a user starting over loud agent speech)."""
        self._raw_vad = raw_vad if self._bands is not None else None
        self._raw_vad_always = raw_vad_always
        """True: the raw VAD runs on every frame while the canceller runs (its state follows the
        audio); False: only on frames with marked bands (cheaper)."""
        self._raw_chunks = _Chunker(vad.frame_samples)
        on = linear_echo is not None and linear_filter is not None and residual_vad is not None
        self._linear = linear_filter if on and self._barge_in_rule else None
        """Our own linear echo filter on the raw microphone, while the canceller runs: in frames
        where its residual rises over its echo estimate (`_residual_dt`, a `DoubleTalkDetector`
        on those two), a second VAD on the residual (`residual_vad`) gives the endpointer
        evidence the canceller's suppressor may remove (a user starting over loud agent speech)."""
        self._residual_dt = (
            DoubleTalkDetector(linear_echo) if self._linear is not None and linear_echo is not None else None
        )
        self._residual_vad = residual_vad if self._linear is not None else None
        self._residual_chunks = _Chunker(vad.frame_samples)
        self._residual: Pcm16 | None = None  # the last block's residual (None: the raw block)
        self._residual_frames = _PairedFrames(round(FRAME_S * MIC_RATE_HZ))  # residual, estimate
        self.residual_vad_frames = 0
        self.linear_restarts = 0
        self.raw_vad_frames = 0
        self._dt_frames = _PairedFrames(round(FRAME_S * MIC_RATE_HZ))  # raw microphone, playback
        self._mic = MicClock(MIC_RATE_HZ)
        self._done: float | None = None  # clock time the last block was done (`process`)
        self._mic_late = 0.0  # the last block's arrival minus its sample-counted end (s)
        self.mic_realigned = 0
        self._trace: deque[str] = deque(maxlen=TRACE_FRAMES)
        """The evidence of the last VAD frames while the canceller runs, logged (debug) with
        each speech start in that time: bounded, and built only when debug logging is on."""
        self.echo_blocks = 0
        """Blocks the echo canceller processed (it runs only while the agent speaks + the tail)."""
        # Wake words fire only if the VAD hears speech in the last second: noise that fools a
        # wake-word model (loud broadband noise does) is not speech to Silero. The VAD runs only
        # when a wake-word score crosses its threshold, so the idle loop pays nothing for it.
        self._wake_vad_gate = wake_vad_gate
        self._recent_samples = int(wake_vad_window_s * MIC_RATE_HZ)
        self._recent = np.zeros(0, dtype=np.int16)
        self.gate_checks = 0
        self.gate_rejections = 0
        self._pending_listen: bool | None = None
        self._pending_wake_reset = False
        self.samples_in = 0
        self.stats = RouterStats()

    @property
    def audio_t(self) -> float:
        """Seconds of microphone audio processed so far."""
        return self.samples_in / MIC_RATE_HZ

    def set_listening(self, on: bool) -> None:
        """Applied on the model thread before the next block, so state never races."""
        self._pending_listen = on

    def reset_wake_word(self) -> None:
        self._pending_wake_reset = True

    async def process(self, block: Pcm16) -> None:
        loop = asyncio.get_running_loop()
        arrived = self._now() if self._now is not None else None  # before the hop to the model thread
        waited = waited_for(arrived, self._done)
        events = await loop.run_in_executor(self._executor, self._process_sync, block, arrived, waited)
        for event in events:
            self._post(event)
        self._done = self._now() if self._now is not None else None

    def _set_listening(self, on: bool) -> None:
        if on != self._listening:
            self._listening = on
            self._endpointer.reset()
            self._vad.reset()
            self._vad_chunks.clear()
            self._raw_chunks.clear()
            self._residual_chunks.clear()
            self._wake_chunks.clear()
            if self._echo_engaged and self._echo is not None:
                self._echo_engaged = False  # the blocks in between bypass it: not contiguous
                self._echo.pause()
                self._pause_double_talk()
            self._echo_since = None
            if not on:
                # Back to the wake word: its features still hold the audio from before the
                # session (the wake word itself) and would fire again at once. Reset here, not
                # only on ResetWakeWord: that flag may land a block later than this one.
                self._pending_wake_reset = True

    def _apply_pending(self) -> None:
        if self._pending_listen is not None:
            on, self._pending_listen = self._pending_listen, None
            self._set_listening(on)
        if self._pending_wake_reset:
            self._pending_wake_reset = False
            self._detector.reset()
            self._gate.reset()
            self._wake_chunks.clear()
            self._recent = np.zeros(0, dtype=np.int16)

    def _process_sync(
        self, block: Pcm16, arrived: float | None = None, waited: bool = True
    ) -> list[DeviceEvent]:
        """Runs on the model thread; `arrived`: when the block came in (clock time, its end);
        `waited`: not at once after the last block was done (then it was queued: a backlog)."""
        self._apply_pending()
        realigned = self.mic_realigned
        end_t = self._mic_clock(block.size, arrived, waited)
        if self.mic_realigned != realigned and self._echo_engaged:
            self._restart_linear()
        events: list[DeviceEvent] = []
        self.stats.frames_in += 1
        start = self.samples_in
        self.samples_in += int(block.size)
        if not self._listening:
            rest = self._wake_path(block, start, events)
            if rest is None:
                return events
            # The wake word fired: the rest of this block already belongs to the session.
            self._set_listening(True)
            block, start = rest
        was_engaged = self._echo_engaged
        raw = block
        self._audible = False
        self._residual = None
        block = self._cancel_echo(block, end_t, start)
        if not self._echo_engaged:
            self._echo_since = None
        elif not was_engaged or self._echo_since is None:
            self._echo_since = start / MIC_RATE_HZ
        offset = start - self._vad_chunks.pending
        raw_frames = self._raw_chunks.push(raw) if self._raw_vad is not None else []
        residual = raw if self._residual is None else self._residual
        residual_frames = self._residual_chunks.push(residual) if self._residual_vad is not None else []
        for i, frame in enumerate(self._vad_chunks.push(block)):
            offset += frame.size
            prob = self._vad.probability(frame)
            self.stats.vad_frames += 1
            t = offset / MIC_RATE_HZ
            talk_over_s = (
                None
                if self._echo_since is None or not self._barge_in_rule
                else max(0.0, t - self._echo_since)
            )
            double_talk = (
                talk_over_s is not None
                and self._double_talk is not None
                and self._double_talk.during(t - frame.size / MIC_RATE_HZ, t)
            )
            raw_prob = None
            if talk_over_s is not None and self._raw_vad is not None and i < len(raw_frames):
                raw_prob = self._raw_probability(raw_frames[i], t - frame.size / MIC_RATE_HZ, t)
            if talk_over_s is not None and self._residual_vad is not None and i < len(residual_frames):
                residual_prob = self._residual_probability(
                    residual_frames[i], t - frame.size / MIC_RATE_HZ, t
                )
                if residual_prob is not None:
                    raw_prob = residual_prob if raw_prob is None else max(raw_prob, residual_prob)
            decided = self._endpointer.process(
                prob, frame.tobytes(), t, talk_over_s, double_talk, raw_prob, playing=self._audible
            )
            if talk_over_s is not None and _LOGGER.isEnabledFor(logging.DEBUG):
                self._trace_frame(t, prob, talk_over_s, double_talk, raw_prob, decided)
            events.extend(decided)
        return events

    def _trace_frame(
        self,
        t: float,
        prob: float,
        talk_over_s: float,
        double_talk: bool,
        raw_prob: float | None,
        decided: list[EndpointEvent],
    ) -> None:
        dt = self._residual_dt
        learned = None if dt is None else dt.learned_db
        self._trace.append(
            f"t={t:.3f} over={talk_over_s:.2f} vad={prob:.2f} dt={int(double_talk)}"
            f" res={'-' if raw_prob is None else f'{raw_prob:.2f}'}"
            f" learned={'-' if learned is None else f'{learned:.1f}'} late={self._mic_late * 1e3:.0f}ms"
            f" realigned={self.mic_realigned} restarts={self.linear_restarts}"
        )
        if any(isinstance(e, SpeechStarted) for e in decided):
            _LOGGER.debug("speech start while the agent speaks:\n  %s", "\n  ".join(self._trace))

    def _raw_probability(self, frame: Pcm16, t_start: float, t_end: float) -> float | None:
        """The raw VAD's probability for a frame the band detector marks (None: not marked)."""
        assert self._raw_vad is not None and self._bands is not None
        marked = self._bands.during(t_start, t_end)
        if not (marked or self._raw_vad_always):
            return None
        prob = self._raw_vad.probability(frame)
        self.raw_vad_frames += 1
        return prob if marked else None

    def _residual_probability(self, frame: Pcm16, t_start: float, t_end: float) -> float | None:
        """The residual VAD's probability for a frame our linear filter marks (None: not marked).
        The VAD runs on every frame while the canceller runs: its state follows the audio."""
        assert self._residual_vad is not None and self._residual_dt is not None
        prob = self._residual_vad.probability(frame)
        self.residual_vad_frames += 1
        return prob if self._residual_dt.during(t_start, t_end) else None

    def _mic_clock(self, n: int, arrived: float | None, waited: bool = True) -> float | None:
        """When the block ends on the appliance clock, counted in samples (`core.micclock`): the
        echo canceller's reference must advance with the microphone's samples, not jitter with
        the event loop's scheduling nor jump with a stall's late blocks; only a shift that lasts
        (dropped microphone blocks) moves it."""
        if arrived is None:
            return None
        before = self._mic.offset
        end = self._mic.block_end(n, arrived, waited)
        self._mic_late = 0.0 if before is None else arrived - (before + self._mic.samples / MIC_RATE_HZ)
        self.mic_realigned = self._mic.jumps
        return end

    def _cancel_echo(self, block: Pcm16, end_t: float | None, start: int = 0) -> Pcm16:
        """While the agent speaks and for `echo_tail_s` after, the block minus its echo."""
        echo, playback = self._echo, self._playback
        if echo is None or playback is None or self._now is None:
            return block
        now = self._now() if end_t is None else end_t  # the block ends then on the appliance clock
        lookback = echo.lookback_samples
        t0 = now - (block.size + lookback) / MIC_RATE_HZ
        reference = playback.reference(t0, block.size + lookback)
        self._audible = bool(playback.playing or np.any(reference))
        if self._audible:
            self._last_playing_t = now
        if self._last_playing_t is None or now - self._last_playing_t > self._echo_tail_s:
            if self._echo_engaged:
                self._echo_engaged = False
                echo.pause()
                self._pause_double_talk()
            return block
        self._echo_engaged = True
        self.echo_blocks += 1
        if self._double_talk is not None or self._bands is not None:
            self._detect_double_talk(block, reference[lookback:], start)
        if self._linear is not None:
            self._linear_residual(block, reference[lookback:], start)
        return echo.process(block, reference)

    def _linear_residual(self, block: Pcm16, played: npt.NDArray[np.float32], start: int) -> None:
        """Our linear filter on the raw block: its residual for the residual VAD, and the 10 ms
        energies of the residual and of its echo estimate for `_residual_dt`."""
        assert self._linear is not None and self._residual_dt is not None
        res, est = self._linear.process(block.astype(np.float64) / 32768.0, played.astype(np.float64))
        self._residual = np.clip(np.rint(res * 32768.0), -32768, 32767).astype(np.int16)
        res_f, est_f, ends = self._residual_frames.push(res, est, start)
        if not ends:
            return
        asked = self._residual_dt.config.max_explained is not None
        for k, (res_e, est_e, t) in enumerate(zip(_energies(res_f), _energies(est_f), ends, strict=True)):
            share = functools.partial(_explained_one, res_f[k], est_f[k]) if asked else None
            self._residual_dt.update(res_e, est_e, t, share)

    def _detect_double_talk(self, block: Pcm16, played: npt.NDArray[np.float32], start: int) -> None:
        """Feed the detector the 10 ms energies of the raw block and of the playback over it
        (`start`: the block's first sample, counted like `samples_in`)."""
        mic_f, ref_f, ends = self._dt_frames.push(
            block.astype(np.float64) / 32768.0, played.astype(np.float64), start
        )
        if not ends:
            return
        if self._double_talk is not None:
            for mic_e, ref_e, t in zip(_energies(mic_f), _energies(ref_f), ends, strict=True):
                self._double_talk.update(mic_e, ref_e, t)
        if self._bands is not None:
            mic_b, ref_b = band_energies(mic_f.reshape(-1)), band_energies(ref_f.reshape(-1))
            for i, t in enumerate(ends):
                self._bands.update(mic_b[i].tolist(), ref_b[i].tolist(), t)

    def _pause_double_talk(self) -> None:
        if self._raw_vad is not None:
            self._raw_vad.reset()
        self._restart_linear()
        if self._bands is not None:
            self._bands.pause()
        if self._double_talk is not None:
            self._double_talk.pause()
        self._dt_frames.clear()

    def _restart_linear(self) -> None:
        """The next block does not follow the last one (the turn ended, or the microphone clock
        was re-read after a stall: the reference jumped against the microphone, and the filter's
        residual would be the whole echo): the filter forgets its reference history (not its
        echo path), its detector settles again."""
        if self._linear is not None and self._residual_dt is not None and self._residual_vad is not None:
            self.linear_restarts += 1
            self._linear.pause()
            self._residual_dt.pause()
            self._residual_vad.reset()
            self._residual_frames.clear()

    def _would_fire(self, scores: dict[str, float]) -> bool:
        rules = self._gate.rules
        return any(name in rules and score >= rules[name].threshold for name, score in scores.items())

    def _recent_speech(self) -> bool:
        """Silero over the last second, from a fresh state (runs only on wake candidates)."""
        self.gate_checks += 1
        self._vad.reset()
        n = self._vad.frame_samples
        gate = self._wake_vad_gate or 0.0
        starts = range(0, self._recent.size - n + 1, n)
        speech = any(self._vad.probability(self._recent[i : i + n]) >= gate for i in starts)
        self._vad.reset()
        if not speech:
            self.gate_rejections += 1
            _LOGGER.info("wake word candidate rejected: no speech in the last second")
        return speech

    def _wake_path(self, block: Pcm16, start: int, events: list[DeviceEvent]) -> tuple[Pcm16, int] | None:
        """Run the wake word; on a detection return the samples after it and their offset."""
        if self._wake_vad_gate is not None:
            self._recent = np.concatenate([self._recent, block])[-self._recent_samples :]
        offset = start - self._wake_chunks.pending
        frames = self._wake_chunks.push(block)
        for i, frame in enumerate(frames):
            offset += frame.size
            scores = self._detector.scores(frame)
            self.stats.wake_frames += 1
            peaks = self.stats.peak_scores
            for name, score in scores.items():
                peaks[name] = max(peaks.get(name, 0.0), score)
            if self._wake_vad_gate is not None and self._would_fire(scores) and not self._recent_speech():
                scores = {name: 0.0 for name in scores}
            detection = self._gate.process(scores, offset / MIC_RATE_HZ)
            if detection is not None:
                _LOGGER.info("wake word %s (score %.3f)", detection.name, detection.score)
                events.append(WakeWordDetected(detection.name, detection.score, detection.t))
                rest = [*frames[i + 1 :], self._wake_chunks.take()]
                return np.concatenate(rest).astype(np.int16), offset
        return None
