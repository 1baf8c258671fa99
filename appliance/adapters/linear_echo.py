"""Our own linear echo estimate: a partitioned-block frequency-domain adaptive filter (PBFDAF,
the MDF structure of Speex and AEC3's linear stage) on the raw microphone, with the playback
as its reference. Barge-in evidence only: what the session hears is still the AEC3 path
(`adapters/echo_canceller.py`), whose nonlinear suppressor removes a user who starts over loud
agent speech; this filter's linear residual keeps that user's onset while removing the echo
that a linear filter can model (the direct sound and the first `tail_s` of the room).

Structure (overlap-save, blocks of `block` samples, FFTs of twice that): the filter is
`partitions` blocks long (`tail_s` = 16 × 16 ms = 0.256 s by default: the router's reference is
the playback on the appliance clock, so the tail covers the output latency, the acoustic delay
and the early reverberation). Adaptation is NLMS per frequency bin, normalized by the smoothed
reference power over all partitions, with the gradient constraint (a linear, not circular,
convolution) on the newest partition every block and on one other in turn, as Speex's MDF does
it (the full constraint on every block at step 1.0 converged faster, 1 more barge-in in time of
108 in `agent.echo`, for 0.2 % more of a core: the Pi's budget decided). Measured in the `agent.echo`
rooms: 11-21 dB of echo removed in the hall at 50 cm, 15-45 dB in the small room, after 1-2 s of
speech; about 0.7 % of a core here.

Double-talk safe (two paths, as Speex and AEC3 do it): a background filter adapts on every block
with a large step; the foreground filter, whose residual and echo estimate are the output, only
ever changes by copying the background, when the background's error has been clearly smaller
(`copy_ratio`) over the last blocks. A user talking makes the background's error larger, not
smaller (it adapts toward a signal the reference cannot explain), so the foreground keeps its
echo path through double talk; a background that diverged (error `reset_ratio` × the
foreground's) is reset to the foreground.

`pause` (the agent's turn is over) forgets the reference history and the pending samples but
keeps both filters: the room did not change, and the next turn starts converged.

Blocks of any size: samples past the last whole block wait for the next call (the output lags
the input by those samples, padded once with zeros; with 80 ms blocks and 16 ms filter blocks
there is no lag).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

F64 = npt.NDArray[np.float64]
C128 = npt.NDArray[np.complex128]

RATE_HZ = 16000


class LinearEchoFilter:
    def __init__(
        self,
        *,
        block: int = 256,
        tail_s: float = 0.256,
        step: float = 0.5,
        power_smoothing: float = 0.7,
        copy_ratio: float = 0.5,
        reset_ratio: float = 4.0,
        error_smoothing: float = 0.6,
        regularization: float = 1e-6,
    ) -> None:
        if block < 16 or tail_s <= 0:
            raise ValueError(f"linear echo filter: block {block} samples, tail {tail_s} s")
        self.block = block
        self.partitions = max(1, round(tail_s * RATE_HZ / block))
        self._step = step
        self._alpha = power_smoothing
        self._copy_ratio = copy_ratio
        self._reset_ratio = reset_ratio
        self._beta = error_smoothing
        self._delta = regularization * block
        bins = block + 1
        self._bg: C128 = np.zeros((self.partitions, bins), dtype=np.complex128)
        self._fg: C128 = np.zeros((self.partitions, bins), dtype=np.complex128)
        self._delays = np.arange(self.partitions)
        self.copies = 0
        self.resets = 0
        self.pause()

    def pause(self) -> None:
        """The next sample does not follow the last one: forget the reference history."""
        bins = self.block + 1
        self._spectra: C128 = np.zeros((self.partitions, bins), dtype=np.complex128)
        self._power: F64 = np.zeros(bins, dtype=np.float64)
        self._power_sum: F64 = np.zeros(bins, dtype=np.float64)
        self._head = 0
        self._turn = 0
        self._last_ref: F64 = np.zeros(self.block, dtype=np.float64)
        self._mic_in: F64 = np.zeros(0, dtype=np.float64)
        self._ref_in: F64 = np.zeros(0, dtype=np.float64)
        self._res_out: F64 = np.zeros(0, dtype=np.float64)
        self._est_out: F64 = np.zeros(0, dtype=np.float64)
        self._primed = False
        self._blocks = 0
        self._err_fg = 0.0
        self._err_bg = 0.0

    def process(self, mic: F64, reference: F64) -> tuple[F64, F64]:
        """`mic`: microphone samples (full scale 1.0); `reference`: the playback over the same
        samples. Returns (the foreground's residual, its echo estimate), `mic.size` samples each."""
        if mic.size != reference.size:
            raise ValueError(
                f"linear echo filter: {mic.size} microphone but {reference.size} reference samples"
            )
        self._mic_in = np.concatenate([self._mic_in, mic])
        self._ref_in = np.concatenate([self._ref_in, reference])
        n = self.block
        whole = self._mic_in.size // n
        res: list[F64] = [self._res_out]
        est: list[F64] = [self._est_out]
        for i in range(whole):
            r, e = self._block(self._mic_in[i * n : (i + 1) * n], self._ref_in[i * n : (i + 1) * n])
            res.append(r)
            est.append(e)
        self._mic_in = self._mic_in[whole * n :]
        self._ref_in = self._ref_in[whole * n :]
        residual, estimate = np.concatenate(res), np.concatenate(est)
        if not self._primed and residual.size < mic.size:  # the first call: pad the lag once
            pad = np.zeros(mic.size - residual.size, dtype=np.float64)
            residual, estimate = np.concatenate([pad, residual]), np.concatenate([pad, estimate])
        self._primed = True
        out = mic.size
        self._res_out, self._est_out = residual[out:], estimate[out:]
        return residual[:out], estimate[:out]

    def _block(self, mic: F64, ref: F64) -> tuple[F64, F64]:
        n = self.block
        spectrum = np.fft.rfft(np.concatenate([self._last_ref, ref]))
        self._last_ref = ref.copy()
        # the partitions' spectra, newest first, in a ring: partition p is row (head + p) % K
        k = self.partitions
        self._head = (self._head - 1) % k
        dropped = self._spectra[self._head]
        self._power_sum += (spectrum.real**2 + spectrum.imag**2) - (dropped.real**2 + dropped.imag**2)
        self._spectra[self._head] = spectrum
        x = self._spectra[(self._head + self._delays) % k]  # by delay: the newest first
        y_fg = np.fft.irfft(np.einsum("pb,pb->b", self._fg, x), 2 * n)[n:]
        y_bg = np.fft.irfft(np.einsum("pb,pb->b", self._bg, x), 2 * n)[n:]
        e_fg, e_bg = mic - y_fg, mic - y_bg
        # the background adapts: NLMS per bin, normalized by the smoothed reference power
        power = np.maximum(self._power_sum, 0.0)
        fresh = self._blocks == 0  # the first block after a pause: no smoothing from zero
        self._power = power if fresh else self._alpha * self._power + (1.0 - self._alpha) * power
        self._blocks += 1
        err = np.fft.rfft(np.concatenate([np.zeros(n), e_bg])) * (self._step / (self._power + self._delta))
        self._bg += np.conj(x) * err
        # the gradient constraint (a linear convolution, no wrap-around), as Speex's MDF does it:
        # on the newest partition every block, on one other in turn (each every K - 1 blocks)
        self._turn = self._turn % max(1, k - 1) + 1
        rows = [0] if k == 1 else [0, self._turn]
        w = np.fft.irfft(self._bg[rows], 2 * n, axis=1)
        w[:, n:] = 0.0
        self._bg[rows] = np.fft.rfft(w, axis=1)
        # the foreground follows the background only where it is clearly better
        b = self._beta
        self._err_fg = b * self._err_fg + (1.0 - b) * float(np.dot(e_fg, e_fg))
        self._err_bg = b * self._err_bg + (1.0 - b) * float(np.dot(e_bg, e_bg))
        if self._err_bg < self._copy_ratio * self._err_fg:
            self._fg = self._bg.copy()
            self._err_fg = self._err_bg
            self.copies += 1
        elif self._err_bg > self._reset_ratio * self._err_fg and self._err_fg > 0.0:
            self._bg = self._fg.copy()
            self._err_bg = self._err_fg
            self.resets += 1
        return e_fg, y_fg
