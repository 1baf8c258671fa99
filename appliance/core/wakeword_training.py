"""Pure parts of training and measuring a custom wake word: near misses, metrics, thresholds.

No audio and no numpy here: phrases are text, scores are lists of floats, time is in frames
(80 ms each, openWakeWord's step). The training package (`appliance.wakeword_training`) and
the `appliance wakeword` commands call these.
"""

from __future__ import annotations

from dataclasses import dataclass

FRAME_S = 0.08
MAX_PHRASE_CHARS = 60
MAX_NEAR_MISSES = 40

# Small sound-alike edits for near misses: a letter group and what it may be heard as.
_SWAPS: tuple[tuple[str, str], ...] = (
    ("put", "mut"),
    ("com", "con"),
    ("ey", "ay"),
    ("o", "a"),
    ("a", "e"),
    ("e", "i"),
    ("i", "e"),
    ("k", "t"),
    ("l", "r"),
    ("m", "n"),
    ("p", "b"),
    ("t", "d"),
    ("c", "g"),
    ("er", "a"),
)

# Fixed carrier words used to build near misses that share one word with the phrase.
_FILLERS: tuple[str, ...] = ("okay", "hey", "hello", "the", "my", "please", "there")


def normalize_phrase(phrase: str) -> str:
    """Lower case, single spaces, letters/digits/apostrophes only; raises ValueError if empty."""
    kept = "".join(ch if ch.isalnum() or ch == "'" else " " for ch in phrase.lower())
    words = kept.split()
    text = " ".join(words)
    if not text:
        raise ValueError("the wake phrase has no letters")
    if len(text) > MAX_PHRASE_CHARS:
        raise ValueError(f"the wake phrase is longer than {MAX_PHRASE_CHARS} characters")
    return text


def phrase_name(phrase: str) -> str:
    """A model name for a phrase: 'hey computer' → 'hey_computer'."""
    return normalize_phrase(phrase).replace("'", "").replace(" ", "_")


def sound_key(word: str) -> str:
    """A rough key of how an English word sounds: spellings of one sound become one letter, so
    two words with the same key are homophones ('hey' / 'hay', 'computer' / 'computa' in the
    non-rhotic voices training uses, 'cat' / 'kat', 'lamp' / 'lammp'). Conservative: words with
    different keys may still sound alike, but equal keys almost always do."""
    w = word.lower()
    for end, sound in (("ey", "A"), ("ay", "A"), ("er", "a")):  # word-final spellings of one sound
        if w.endswith(end) and len(w) > len(end):
            w = w[: -len(end)] + sound
    for start, sound in (("kn", "n"), ("wr", "r"), ("ps", "s")):  # silent first letters
        if w.startswith(start):
            w = sound + w[len(start) :]
    for spelling, sound in (("ph", "f"), ("ck", "k"), ("qu", "kw"), ("q", "k"), ("x", "ks")):
        w = w.replace(spelling, sound)
    out: list[str] = []
    for i, ch in enumerate(w):
        if ch == "c":  # soft before e, i, y; hard elsewhere
            ch = "s" if i + 1 < len(w) and w[i + 1] in "eiy" else "k"
        if not out or out[-1] != ch:  # doubled letters sound once
            out.append(ch)
    return "".join(out)


def sounds_same(a: str, b: str) -> bool:
    """Two phrases whose words are homophones one by one (`sound_key`)."""
    wa, wb = a.split(), b.split()
    return len(wa) == len(wb) and all(sound_key(x) == sound_key(y) for x, y in zip(wa, wb, strict=True))


def near_misses(phrase: str, limit: int = MAX_NEAR_MISSES) -> list[str]:
    """Phrases a listener could confuse with `phrase` that must NOT fire it, in a fixed order.

    Single words of the phrase alone, the words reordered, the phrase with its last or first
    word cut or replaced, and one-edit sound-alikes of each word ('computer' → 'commuter').
    An edit that sounds the same as the phrase ('hay computer') is left out: as a negative it
    would teach the model to reject the phrase itself."""
    text = normalize_phrase(phrase)
    words = text.split()
    out: list[str] = []

    def add(candidate: str) -> None:
        candidate = " ".join(candidate.split())
        if candidate and not sounds_same(candidate, text) and candidate not in out:
            out.append(candidate)

    for word in words:
        add(word)
    if len(words) > 1:
        add(" ".join(reversed(words)))
        add(" ".join(words[:-1]))
        add(" ".join(words[1:]))
    for i, word in enumerate(words):
        for src, dst in _SWAPS:
            pos = word.find(src)
            if pos < 0:
                continue
            edited = word[:pos] + dst + word[pos + len(src) :]
            add(" ".join([*words[:i], edited, *words[i + 1 :]]))
            if len(words) > 1:
                add(edited)
    for filler in _FILLERS:
        if filler in words:
            continue
        add(f"{filler} {words[-1]}")
        if len(words) > 1:
            add(f"{words[0]} {filler}")
    return out[:limit]


@dataclass(frozen=True)
class CurvePoint:
    threshold: float
    recall: float  # fraction of positive takes detected (0–1)
    false_accepts: int
    false_accepts_per_hour: float


def activation_frames(
    scores: list[float], threshold: float, refractory_frames: int, patience_frames: int = 1
) -> list[int]:
    """The frames a score stream fires on, as `core.wakeword.WakeWordGate` fires: a run of
    `patience_frames` consecutive frames at or above `threshold` fires on its last frame, then
    the word is deaf for `refractory_frames` frames (a run broken by them starts again)."""
    if refractory_frames < 0:
        raise ValueError("refractory_frames must be >= 0")
    if patience_frames < 1:
        raise ValueError("patience_frames must be >= 1")
    fired: list[int] = []
    above = 0
    blocked_until = -1
    for i, score in enumerate(scores):
        if i < blocked_until:
            above = 0
            continue
        above = above + 1 if score >= threshold else 0
        if above >= patience_frames:
            fired.append(i)
            above = 0
            blocked_until = i + refractory_frames + 1
    return fired


def count_activations(
    scores: list[float], threshold: float, refractory_frames: int, patience_frames: int = 1
) -> int:
    """How many detections a score stream makes (`activation_frames`)."""
    return len(activation_frames(scores, threshold, refractory_frames, patience_frames))


def sustained_peak(scores: list[float], patience_frames: int = 1) -> float:
    """The highest threshold a take still fires at with `patience_frames`: the best over every
    run of that many consecutive frames of the run's lowest score (0.0 if the take is shorter)."""
    if patience_frames < 1:
        raise ValueError("patience_frames must be >= 1")
    best = 0.0
    for i in range(len(scores) - patience_frames + 1):
        best = max(best, min(scores[i : i + patience_frames]))
    return best


def threshold_curve(
    positive_peaks: list[float],
    negative_streams: list[list[float]],
    negative_hours: float,
    thresholds: list[float],
    refractory_frames: int = 25,
    patience_frames: int = 1,
) -> list[CurvePoint]:
    """Recall and false accepts per hour at each threshold.

    `positive_peaks`: the `sustained_peak` of each positive take (with the same patience);
    `negative_streams`: frame scores of negative audio totalling `negative_hours` hours."""
    if negative_hours <= 0:
        raise ValueError("negative_hours must be > 0")
    points = []
    for t in thresholds:
        hits = sum(1 for p in positive_peaks if p >= t)
        recall = hits / len(positive_peaks) if positive_peaks else 0.0
        fa = sum(count_activations(s, t, refractory_frames, patience_frames) for s in negative_streams)
        points.append(CurvePoint(t, recall, fa, fa / negative_hours))
    return points


def default_thresholds() -> list[float]:
    """0.05, 0.10, ... 0.95 and a finer tail up to 0.995."""
    coarse = [round(0.05 * i, 3) for i in range(1, 20)]
    return [*coarse, 0.97, 0.98, 0.99, 0.995]


def suggest_threshold(curve: list[CurvePoint], max_false_accepts_per_hour: float = 0.5) -> CurvePoint:
    """The point with the best recall among those within the false-accept budget; ties go to the
    higher threshold (fewer false accepts in unseen rooms). If none is within budget, the point
    with the fewest false accepts (then best recall)."""
    if not curve:
        raise ValueError("empty threshold curve")
    within = [p for p in curve if p.false_accepts_per_hour <= max_false_accepts_per_hour]
    if within:
        return max(within, key=lambda p: (p.recall, p.threshold))
    return min(curve, key=lambda p: (p.false_accepts_per_hour, -p.recall, -p.threshold))


def choose_operating_point(
    curves: dict[int, list[CurvePoint]], max_false_accepts_per_hour: float = 0.0
) -> tuple[int, CurvePoint]:
    """The patience and point to run a word at, from its validation curve at each patience: the
    `suggest_threshold` of each, then of those within budget the best recall (then fewer false
    accepts, then the shorter patience); if none is, the fewest false accepts (then recall).
    The default budget, none at all, keeps a margin: a threshold at the edge of 0.5 an hour on
    validation audio lands above it on other speech."""
    if not curves:
        raise ValueError("no threshold curves")
    suggested = [(p, suggest_threshold(c, max_false_accepts_per_hour)) for p, c in sorted(curves.items())]
    within = [ps for ps in suggested if ps[1].false_accepts_per_hour <= max_false_accepts_per_hour]
    if within:
        return max(within, key=lambda ps: (ps[1].recall, -ps[1].false_accepts, -ps[0]))
    return min(suggested, key=lambda ps: (ps[1].false_accepts, -ps[1].recall, ps[0]))


def keep_recall(
    curves: dict[int, list[CurvePoint]],
    chosen: tuple[int, CurvePoint],
    recall_floor: float,
    max_false_accepts: int,
) -> tuple[int, CurvePoint]:
    """`chosen` (a patience and point of `curves`), unless its recall is under `recall_floor`: then,
    of the points that reach the floor with at most `max_false_accepts`, the one with the fewest
    false accepts (then the higher threshold, then the shorter patience). A word is for hearing its
    phrase: no false accept at all can cost most of it when one sound-alike in the audio scores
    near 1 ("hey cortana" for "hey computer"). If no point reaches the floor within that many,
    `chosen` stays."""
    point = chosen[1]
    if point.recall >= recall_floor:
        return chosen
    reaching = [
        (p, q)
        for p, curve in sorted(curves.items())
        for q in curve
        if q.recall >= recall_floor and q.false_accepts <= max_false_accepts
    ]
    if not reaching:
        return chosen
    return min(reaching, key=lambda pq: (pq[1].false_accepts, -pq[1].threshold, pq[0]))


def verifier_low(
    negatives: list[tuple[float, float]],
    s_high: float,
    ceiling: float = 0.5,
    margin: float = 0.02,
) -> float:
    """The similarity `s_low` an enrolled word's verifier starts lifting at, from the negative
    windows the classifier leans towards: (similarity to the templates, classifier score p).

    The verifier returns p + (1 − p) · clip((s − s_low) / (s_high − s_low), 0, 1): the lowest
    `s_low` (plus `margin`) with which no negative is lifted above `ceiling` (a negative already
    at or above it is not lifted at all). When that leaves no span below `s_high`, no negative
    may be lifted: `s_low` is then just above the most similar one."""
    if not 0.0 < ceiling < 1.0:
        raise ValueError("ceiling must be in (0, 1)")
    plain = max((s for s, _ in negatives), default=0.0) + margin  # no negative lifted at all
    low = 0.0
    for s, p in negatives:
        if p >= ceiling:
            low = max(low, s)
            continue
        room = (ceiling - p) / (1.0 - p)  # the largest lift fraction that keeps it under the ceiling
        low = max(low, (s - room * s_high) / (1.0 - room))  # (s − low) / (s_high − low) ≤ room
    low = max(low + margin, 0.0)
    return low if low + margin < s_high else max(plain, 0.0)
