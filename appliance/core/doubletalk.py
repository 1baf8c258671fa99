"""Double talk on the raw microphone: is someone speaking over the agent's own voice?

While the echo canceller has not converged (the first seconds of an agent turn) its output
carries residual echo that the VAD can score as speech, so the endpointer's fast barge-in rule
waits for it (`EndpointConfig.barge_in_after_s`). This detector lets the rule act earlier when
the microphone itself says a second talker is there, in the manner of a Geigel detector but on
energies: the microphone's energy over 10 ms frames is compared with an envelope of the
playback's energy (the loudest playback frame of the last `delay_s`, decaying no faster than
`decay_db_per_s` after it: the echo path's delay and the room's reverberation tail). Their
ratio in dB (`level_db`) is what the echo path makes of the playback; while only echo comes
back it stays near its usual level, so the detector learns that level (the loudest ratio of the
frames with playback, decaying `forget_db_per_s`) from frames `learn_after_s` old: the user's
first words cannot raise the bar they are measured against. A frame is double talk when its
ratio exceeds the learned level by `margin_db`.

Measured on the `agent.echo` rooms (RT60 0.2–0.8 s, 4–50 cm, gains 0.5–2): echo alone stays
within 3–5 dB of its running maximum; a user speaking into a pause of the agent's speech lifts
the ratio 10–20 dB within 0.15 s; a user speaking over loud agent speech lifts it only 2–7 dB,
which this detector does not claim (the fixed wait then applies).

Pure: energies and audio times in, decisions out.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

FRAME_S = 0.01
"""The detector's frame: 10 ms of audio (the caller sums energies over it)."""


@dataclass(frozen=True)
class DoubleTalkConfig:
    margin_db: float = 6.0
    """A frame is double talk when its microphone-to-playback ratio exceeds the learned echo
    level by this much."""
    delay_s: float = 0.1
    """The echo path's delay the envelope covers (device latency + the direct sound)."""
    decay_db_per_s: float = 60.0
    """The envelope decays no faster than this (a reverberation time of 1 s)."""
    forget_db_per_s: float = 0.5
    """The learned echo level decays this fast (the room or the volume changed)."""
    learn_after_s: float = 0.5
    """Frames teach the echo level only this long after they were heard."""
    min_learned_s: float = 0.5
    """No decision before this much playback was learned from (nothing is known yet)."""
    playback_floor: float = 1e-5
    """Mean-square playback energy (full scale 1.0) below which a frame has no playback: it
    teaches nothing and is not judged (about -50 dBFS)."""
    hold_s: float = 0.0
    """A double-talk frame counts this long after it (`during`)."""
    settle_s: float = 0.0
    """Once the playback envelope rises over `playback_floor` (the start of an agent turn, or
    of speech after a silence in it), no frame is double talk for this long."""
    pause_floor: float | None = None
    """A frame whose own playback energy is under this (mean square, full scale 1.0) is a pause
    in the playback even while the envelope, decaying from the speech before it, is still over
    `playback_floor`: for `settle_s` after it the margin is `pause_margin_db` higher (not in the
    pause itself: a user speaking into it is judged as before; None: only the envelope counts)."""
    pause_margin_db: float = 10.0
    """The margin's rise for `settle_s` after a pause in the playback (`pause_floor`)."""
    max_explained: float | None = None
    """A frame whose microphone signal the playback explains (`update`'s `explained`: the
    share of its energy that a short filter on the playback reproduces) at this share or more
    is not double talk (None: not asked). For the linear residual (`linear_residual_config`):
    a filter the echo path moved under (by a sample, or a gain) lets through a linear copy of
    its own estimate, not a second talker."""
    pause_max_explained: float | None = None
    """After a pause in the playback (`pause_floor`, for `settle_s`): instead of the margin's
    rise, a frame counts only when `explained` is under this (None: the margin rises)."""
    leak_hold_s: float = 0.0
    """For this long after a frame judged such leakage (over the margin, explained), the margin
    is `pause_margin_db` higher: while the filter re-converges after the echo path moved, a
    partly adapted copy of it leaks what a short filter on its estimate no longer explains."""


@dataclass
class DoubleTalkDetector:
    """Fed one 10 ms frame at a time (`update`), in audio order; keeps its state across the
    agent's turns (the room does not change between them)."""

    config: DoubleTalkConfig = field(default_factory=DoubleTalkConfig)
    learned_db: float | None = None
    """The echo level learned so far (None: not enough playback yet)."""
    learned_s: float = 0.0
    _recent_playback: deque[float] = field(default_factory=deque)
    _envelope: float = 0.0
    _pending: deque[tuple[float, float]] = field(default_factory=deque)
    """(audio time, level dB) of frames with playback, waiting `learn_after_s` to teach."""
    _decisions: deque[tuple[float, bool]] = field(default_factory=deque)
    _turn_start: float | None = None
    _pause_end: float | None = None
    _leak_end: float | None = None

    def update(
        self,
        mic_energy: float,
        playback_energy: float,
        t_end: float,
        explained: float | Callable[[], float] | None = None,
    ) -> bool:
        """One 10 ms frame ending at audio time `t_end`: the mean-square energies of the raw
        microphone and of the playback over it (full scale 1.0); `explained`: the share (0-1)
        of the microphone frame's energy that a short filter on the playback frame reproduces
        (None: not measured; a callable is asked only for a frame over the margin, the one
        place it decides). True: double talk."""
        cfg = self.config
        self._recent_playback.append(playback_energy)
        while len(self._recent_playback) > max(1, round(cfg.delay_s / FRAME_S) + 1):
            self._recent_playback.popleft()
        decay = 10.0 ** (-cfg.decay_db_per_s * FRAME_S / 10.0)
        self._envelope = max(max(self._recent_playback), self._envelope * decay)
        self._learn(t_end)
        if self._envelope < cfg.playback_floor:
            self._turn_start = None
        elif self._turn_start is None:
            self._turn_start = t_end - FRAME_S
        if cfg.pause_floor is not None and playback_energy < cfg.pause_floor:
            self._pause_end = t_end  # a pause: the playback starts over after this frame
        double_talk = False
        if self._envelope >= cfg.playback_floor and self._turn_start is not None:
            level = 10.0 * math.log10(max(mic_energy, 1e-12) / self._envelope)
            margin = cfg.margin_db
            limit = cfg.max_explained
            if (
                self._pause_end is not None
                and self._pause_end < t_end
                and t_end - self._pause_end < cfg.settle_s - 1e-9
            ):  # the playback came back after a pause
                if cfg.pause_max_explained is None:
                    margin += cfg.pause_margin_db
                else:
                    limit = cfg.pause_max_explained
            if playback_energy >= cfg.playback_floor:
                self._pending.append((t_end, level))
            over = (
                self.learned_db is not None
                and self.learned_s >= cfg.min_learned_s - 1e-9
                and t_end - self._turn_start >= cfg.settle_s - 1e-9
                and level > self.learned_db + margin
            )
            leak = False
            if over and limit is not None and explained is not None:
                share = explained() if callable(explained) else explained
                leak = share >= limit
            if over and leak:
                self._leak_end = t_end
            elif over and self._leak_end is not None and t_end - self._leak_end < cfg.leak_hold_s - 1e-9:
                # the filter is re-converging after a leak: the margin is higher
                over = self.learned_db is not None and level > self.learned_db + margin + cfg.pause_margin_db
            double_talk = over and not leak
        self._decisions.append((t_end, double_talk))
        while self._decisions and self._decisions[0][0] < t_end - 1.0:
            self._decisions.popleft()
        return double_talk

    def _learn(self, t_end: float) -> None:
        cfg = self.config
        while self._pending and self._pending[0][0] <= t_end - cfg.learn_after_s + 1e-9:
            _, level = self._pending.popleft()
            if self.learned_db is None:
                self.learned_db = level
            else:
                forgotten = self.learned_db - cfg.forget_db_per_s * FRAME_S
                self.learned_db = max(level, forgotten)
            self.learned_s += FRAME_S

    def pause(self) -> None:
        """The agent's turn is over (the frames in between are not fed): forget the playback
        and the decisions; the learned echo level stays (the room did not change)."""
        self._recent_playback.clear()
        self._envelope = 0.0
        self._pending.clear()
        self._decisions.clear()
        self._turn_start = None
        self._pause_end = None
        self._leak_end = None

    def during(self, t_start: float, t_end: float) -> bool:
        """Was any frame ending in (t_start - `hold_s`, t_end] double talk? (The last second is
        kept.)"""
        since = t_start - self.config.hold_s
        return any(since + 1e-9 < t <= t_end + 1e-9 and dt for t, dt in self._decisions)


MAX_EXPLAINED = 0.8
"""`DoubleTalkConfig.max_explained` on the linear residual (`linear_residual_config`). Measured
(the router's `explained_share`, lags of +-4 samples): the frames a user's onset marked in the
108 talk-over trials of `agent.echo`, 0.00-0.66 (95 % under 0.4); the frames that made the
real-time appliance interrupt itself (captured, replayed), 0.98-1.00."""


PAUSE_MAX_EXPLAINED = 0.3
"""`DoubleTalkConfig.pause_max_explained` on the linear residual: in the 0.2 s after a pause in
the playback (where a new playback chunk starts and its placement against the echo is least
certain) a frame counts only when the estimate explains less than this of it. Measured: the
users who start just after the agent resumed, 0.03-0.13 in the deciding frames; the onset that
made the real-time appliance interrupt itself under stalls (captured, replayed), 0.73."""


def linear_residual_config(margin_db: float) -> DoubleTalkConfig:
    """The detector on our own linear echo estimate (`adapters/linear_echo.py`): fed the
    10 ms energies of the filter's residual (the raw microphone minus its echo estimate) and of
    its echo estimate, in place of the microphone's and the playback's. The estimate already
    carries the echo path's delay, and while only echo comes back the residual stays 10-20 dB
    under it; a user's voice is not in the estimate, so their onset lifts the residual over it
    even over loud agent speech (the case the broadband detector cannot claim).

    Measured on the `agent.echo` rooms (benchmarks/README.md): in the quiet sessions the ratio
    stays at most 6.3 dB over its learned level (small room, gain 2; 0.2-4.2 dB elsewhere); a
    user's onset lifts it 10 dB over that level within 0-50 ms in most talk-overs (130-210 ms when
    the user starts softly under the agent's loudest words). The learned level forgets faster
    than the raw microphone's (3 dB/s): it starts high while the filter converges (the residual
    is the echo itself) and falls 10-20 dB in 1-2 s (6 dB/s came within 11 dB in quiet sessions).
    The floor and the settling: at the start of a turn, or of speech after a silence, the
    estimate is tiny or just rising and the residual as loud as it (up to 12 dB over the learned
    level in quiet sessions without them).
    Leakage (`max_explained`, `leak_hold_s`): when the echo path moves under the converged
    filter (in the real-time appliance: the microphone's timeline moved the reference by 5-40
    samples, since held by `core.micclock`; a new playback chunk placed one sample off) the
    residual rises 10-22 dB over the learned level, to 4 dB over its own estimate, for 3-10
    frames, and the residual VAD reads 0.9-1.0: captured and replayed, every such frame was
    0.98-1.00 explained by a short filter on the estimate; a user's onset 0.00-0.66. Such frames
    are not double talk, and for 0.5 s after one the margin is 10 dB higher (the filter
    re-converging leaks less linearly). The rule after a pause in the playback that this
    replaces (`pause_floor`, the margin 10 dB higher for 0.2 s after one) met the same leakage
    and cost 2 of 108 talk-overs in `agent.echo`; without it, 103 of 108 in time."""
    return DoubleTalkConfig(
        margin_db=margin_db,
        delay_s=0.1,
        decay_db_per_s=60.0,
        forget_db_per_s=3.0,
        learn_after_s=0.5,
        min_learned_s=0.5,
        playback_floor=1e-5,
        hold_s=0.1,
        settle_s=0.2,
        pause_floor=1e-5,
        pause_max_explained=PAUSE_MAX_EXPLAINED,
        max_explained=MAX_EXPLAINED,
        leak_hold_s=0.5,
    )


@dataclass(frozen=True)
class BandDoubleTalkConfig:
    """The same test per frequency band (`BandDoubleTalkDetector`): the user who starts over
    loud agent speech is only 0-7 dB above the echo broadband, but 10 dB or more above it in
    the bands their voice fills (measured on the `agent.echo` rooms: 3-5 of 16 bands within
    60-150 ms of such an onset; 0-1 band while only echo comes back, once warmed up)."""

    margin_db: float = 10.0
    """A band is marked when its microphone-to-playback ratio exceeds its learned echo level
    by this much."""
    min_bands: int = 3
    """A frame is double talk when at least this many bands are marked."""
    delay_s: float = 0.1
    decay_db_per_s: float = 60.0
    forget_db_per_s: float = 0.5
    learn_after_s: float = 0.5
    min_learned_s: float = 0.5
    """No decision before this much playback was learned from (every band's first frames
    were its only false marks: up to 15 bands in the first 0.1 s)."""
    hold_s: float = 0.1
    """A double-talk frame counts this long after it (`during`): a voice marks bands in bursts
    of 10-40 ms, the VAD judges 32 ms frames (measured: without the hold, 2 fewer barge-ins in
    time over 72 talk-overs, and no frame marked in the quiet sessions either way)."""
    playback_floor: float = 1e-7
    """A band's mean-square playback energy below which it has no playback (about -70 dBFS
    per band): it teaches nothing and is not judged."""


@dataclass
class BandDoubleTalkDetector:
    """`DoubleTalkDetector` per band: fed each 10 ms frame's band energies of the raw
    microphone and of the playback (the same bands, in the same order), in audio order."""

    config: BandDoubleTalkConfig = field(default_factory=BandDoubleTalkConfig)
    learned_db: list[float | None] = field(default_factory=list)
    learned_s: float = 0.0
    """Playback learned from (frames with playback in any band)."""
    _recent_playback: deque[list[float]] = field(default_factory=deque)
    _envelope: list[float] = field(default_factory=list)
    _pending: deque[tuple[float, list[float | None]]] = field(default_factory=deque)
    _decisions: deque[tuple[float, int]] = field(default_factory=deque)

    def update(self, mic_bands: list[float], playback_bands: list[float], t_end: float) -> int:
        """One 10 ms frame ending at audio time `t_end`: the mean-square energies per band of
        the raw microphone and of the playback over it. Returns how many bands are marked."""
        cfg = self.config
        n = len(mic_bands)
        if len(playback_bands) != n:
            raise ValueError(f"{n} microphone bands but {len(playback_bands)} playback bands")
        if len(self.learned_db) != n:
            self.learned_db = [None] * n
            self._envelope = [0.0] * n
            self._recent_playback.clear()
            self._pending.clear()
        self._recent_playback.append(playback_bands)
        while len(self._recent_playback) > max(1, round(cfg.delay_s / FRAME_S) + 1):
            self._recent_playback.popleft()
        decay = 10.0 ** (-cfg.decay_db_per_s * FRAME_S / 10.0)
        held = [max(col) for col in zip(*self._recent_playback, strict=True)]
        self._envelope = [max(h, e * decay) for h, e in zip(held, self._envelope, strict=True)]
        self._learn(t_end)
        floor = cfg.playback_floor
        levels: list[float | None] = [
            10.0 * math.log10(max(m, 1e-14) / e) if e >= floor else None
            for m, e in zip(mic_bands, self._envelope, strict=True)
        ]
        if any(p >= floor for p in playback_bands):
            self._pending.append(
                (t_end, [lv if p >= floor else None for lv, p in zip(levels, playback_bands, strict=True)])
            )
        marked = 0
        if self.learned_s >= cfg.min_learned_s - 1e-9:
            for level, learned in zip(levels, self.learned_db, strict=True):
                if level is not None and learned is not None and level > learned + cfg.margin_db:
                    marked += 1
        self._decisions.append((t_end, marked))
        while self._decisions and self._decisions[0][0] < t_end - 1.0:
            self._decisions.popleft()
        return marked

    def _learn(self, t_end: float) -> None:
        cfg = self.config
        forget = cfg.forget_db_per_s * FRAME_S
        while self._pending and self._pending[0][0] <= t_end - cfg.learn_after_s + 1e-9:
            _, levels = self._pending.popleft()
            self.learned_db = [
                old if level is None else level if old is None else max(level, old - forget)
                for level, old in zip(levels, self.learned_db, strict=True)
            ]
            self.learned_s += FRAME_S

    def pause(self) -> None:
        """The agent's turn is over: forget the playback and the decisions; the learned echo
        levels stay."""
        self._recent_playback.clear()
        self._envelope = [0.0] * len(self._envelope)
        self._pending.clear()
        self._decisions.clear()

    def during(self, t_start: float, t_end: float) -> bool:
        """Was any frame ending in (t_start - `hold_s`, t_end] double talk (`min_bands` or more
        bands marked)?"""
        least, since = self.config.min_bands, t_start - self.config.hold_s
        return any(since + 1e-9 < t <= t_end + 1e-9 and n >= least for t, n in self._decisions)
