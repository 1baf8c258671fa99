"""Near misses, activation counting, the threshold curve and the threshold suggestion."""

from __future__ import annotations

import pytest

from appliance.core.wakeword_training import (
    CurvePoint,
    activation_frames,
    choose_operating_point,
    count_activations,
    default_thresholds,
    keep_recall,
    near_misses,
    normalize_phrase,
    phrase_name,
    sound_key,
    sounds_same,
    suggest_threshold,
    sustained_peak,
    threshold_curve,
    verifier_low,
)


@pytest.mark.parametrize(
    ("phrase", "expected"),
    [
        ("Hey  Computer!", "hey computer"),
        ("okay, kiosk", "okay kiosk"),
        ("  hello-lamp ", "hello lamp"),
        ("what's up", "what's up"),
    ],
)
def test_normalize_phrase(phrase: str, expected: str) -> None:
    assert normalize_phrase(phrase) == expected


@pytest.mark.parametrize("phrase", ["", "  !? ", "x" * 61])
def test_normalize_phrase_refuses(phrase: str) -> None:
    with pytest.raises(ValueError, match="wake phrase"):
        normalize_phrase(phrase)


@pytest.mark.parametrize(
    ("phrase", "name"), [("Hey Computer", "hey_computer"), ("what's up", "whats_up"), ("alexa", "alexa")]
)
def test_phrase_name(phrase: str, name: str) -> None:
    assert phrase_name(phrase) == name


@pytest.mark.parametrize(
    ("phrase", "must_have"),
    [
        ("hey computer", ["hey", "computer", "computer hey", "hey commuter", "commuter", "okay computer"]),
        ("okay kiosk", ["okay", "kiosk", "kiosk okay", "hey kiosk", "okay tiosk"]),
        ("hello lamp", ["hello", "lamp", "lamp hello", "hello ramp", "hello lemp", "hey lamp"]),
        ("alexa", ["elexa", "arexa", "okay alexa"]),
    ],
)
def test_near_misses(phrase: str, must_have: list[str]) -> None:
    got = near_misses(phrase)
    for item in must_have:
        assert item in got
    assert phrase not in got
    assert len(got) == len(set(got))
    assert near_misses(phrase) == got  # a fixed order


def test_near_misses_are_bounded() -> None:
    assert len(near_misses("hey wonderful magnificent computer")) == 40
    assert len(near_misses("hey computer", limit=5)) == 5


@pytest.mark.parametrize(
    ("scores", "threshold", "refractory", "expected"),
    [
        ([], 0.5, 25, 0),
        ([0.1, 0.4, 0.49], 0.5, 25, 0),
        ([0.1, 0.6, 0.7, 0.8, 0.2], 0.5, 25, 1),  # one burst, one activation
        ([0.6, 0.1, 0.6], 0.5, 2, 1),  # the second is inside the refractory window
        ([0.6, 0.7, 0.6], 0.5, 1, 2),  # deaf for one frame only
        ([0.6, 0.1, 0.6], 0.5, 0, 2),
        ([0.6, 0.1, 0.1, 0.6], 0.5, 2, 2),  # deaf for frames 1 and 2, frame 3 fires
        ([0.5], 0.5, 0, 1),  # at the threshold fires (as the gate)
    ],
)
def test_count_activations(scores: list[float], threshold: float, refractory: int, expected: int) -> None:
    assert count_activations(scores, threshold, refractory) == expected


@pytest.mark.parametrize(
    ("scores", "patience", "refractory", "expected"),
    [
        ([0.6, 0.1, 0.6, 0.1], 2, 0, 0),  # never two frames in a row
        ([0.6, 0.7, 0.1], 2, 0, 1),
        ([0.6, 0.7, 0.8, 0.9], 2, 0, 2),  # a run restarts after it fired
        ([0.6, 0.7, 0.8, 0.9], 2, 1, 1),  # frame 2 is deaf, frame 3 alone is too short
        ([0.6, 0.7, 0.1, 0.1, 0.6, 0.6, 0.6], 3, 0, 1),
        ([0.6, 0.6, 0.6], 3, 25, 1),
    ],
)
def test_count_activations_with_patience(
    scores: list[float], patience: int, refractory: int, expected: int
) -> None:
    assert count_activations(scores, 0.5, refractory, patience) == expected


@pytest.mark.parametrize(
    ("scores", "patience", "refractory", "expected"),
    [
        ([], 1, 25, []),
        ([0.1, 0.6, 0.7, 0.1, 0.6], 1, 2, [1, 4]),  # frame 2 and 3 are deaf, 4 fires
        ([0.1, 0.6, 0.7, 0.1, 0.6], 2, 0, [2]),  # a run of 2 fires on its last frame
        ([0.6, 0.7, 0.8, 0.9], 2, 0, [1, 3]),
    ],
)
def test_activation_frames(scores: list[float], patience: int, refractory: int, expected: list[int]) -> None:
    assert activation_frames(scores, 0.5, refractory, patience) == expected
    assert count_activations(scores, 0.5, refractory, patience) == len(expected)


def test_count_activations_agrees_with_the_gate() -> None:
    from appliance.core.wakeword import WakeWordGate, WakeWordRule

    scores = [0.1, 0.6, 0.7, 0.2, 0.9, 0.9, 0.9, 0.1, 0.8, 0.8, 0.3, 0.95, 0.96, 0.97, 0.2] * 3
    for patience in (1, 2, 3):
        for refractory in (0, 1, 3):
            gate = WakeWordGate({"w": WakeWordRule("w", 0.5, patience, refractory * 0.08 + 0.04)})
            fired = sum(1 for i, s in enumerate(scores) if gate.process({"w": s}, i * 0.08) is not None)
            assert count_activations(scores, 0.5, refractory, patience) == fired, (patience, refractory)


@pytest.mark.parametrize(
    ("scores", "patience", "expected"),
    [
        ([], 1, 0.0),
        ([0.2, 0.9, 0.4], 1, 0.9),
        ([0.2, 0.9, 0.4], 2, 0.4),
        ([0.2, 0.9, 0.4, 0.8, 0.85], 2, 0.8),
        ([0.9], 2, 0.0),  # shorter than the patience: never fires
    ],
)
def test_sustained_peak(scores: list[float], patience: int, expected: float) -> None:
    assert sustained_peak(scores, patience) == expected


def test_patience_must_be_positive() -> None:
    with pytest.raises(ValueError, match="patience"):
        count_activations([0.9], 0.5, 0, 0)
    with pytest.raises(ValueError, match="patience"):
        sustained_peak([0.9], 0)


def test_threshold_curve_with_patience() -> None:
    curve = threshold_curve([0.9], [[0.6, 0.1, 0.6], [0.6, 0.6]], 1.0, [0.5], 0, patience_frames=2)
    assert curve == [CurvePoint(0.5, 1.0, 1, 1.0)]


def test_threshold_curve() -> None:
    curve = threshold_curve([0.9, 0.7, 0.3, 0.95], [[0.0, 0.6, 0.0], [0.2, 0.8]], 2.0, [0.5, 0.75, 0.85], 0)
    assert curve == [
        CurvePoint(0.5, 0.75, 2, 1.0),
        CurvePoint(0.75, 0.5, 1, 0.5),
        CurvePoint(0.85, 0.5, 0, 0.0),
    ]
    with pytest.raises(ValueError, match="negative_hours"):
        threshold_curve([0.5], [], 0, [0.5])


@pytest.mark.parametrize(
    ("curve", "budget", "expected"),
    [
        # the best recall within budget, then the higher threshold
        ([(0.5, 0.9, 1.0), (0.7, 0.9, 0.5), (0.8, 0.9, 0.0), (0.9, 0.6, 0.0)], 0.5, 0.8),
        ([(0.5, 0.95, 1.0), (0.7, 0.9, 0.4), (0.9, 0.6, 0.0)], 0.5, 0.7),
        # none within budget: fewest false accepts
        ([(0.5, 0.95, 3.0), (0.7, 0.9, 2.0), (0.9, 0.6, 2.0)], 0.5, 0.7),
        ([(0.5, 0.95, 3.0), (0.9, 0.6, 3.0)], 1.0, 0.5),
    ],
)
def test_suggest_threshold(curve: list[tuple[float, float, float]], budget: float, expected: float) -> None:
    points = [CurvePoint(t, r, int(f), f) for t, r, f in curve]
    assert suggest_threshold(points, budget).threshold == expected


def test_suggest_threshold_refuses_an_empty_curve() -> None:
    with pytest.raises(ValueError, match="empty"):
        suggest_threshold([])


def _curve(*points: tuple[float, float, int]) -> list[CurvePoint]:
    """(threshold, recall, false accepts) over 2 hours."""
    return [CurvePoint(t, r, n, n / 2) for t, r, n in points]


@pytest.mark.parametrize(
    ("curves", "budget", "expected"),
    [
        # no false accept at all (the default): patience 2 keeps more recall without one
        (
            {1: _curve((0.9, 0.95, 1), (0.99, 0.8, 0)), 2: _curve((0.9, 0.9, 0), (0.99, 0.7, 0))},
            0.0,
            (2, 0.9),
        ),
        # one in two hours allowed: patience 1 at 0.9 now
        (
            {1: _curve((0.9, 0.95, 1), (0.99, 0.8, 0)), 2: _curve((0.9, 0.9, 0), (0.99, 0.7, 0))},
            0.5,
            (1, 0.9),
        ),
        # equal recall: fewer false accepts, then the shorter patience
        ({1: _curve((0.9, 0.8, 1)), 2: _curve((0.9, 0.8, 0))}, 0.5, (2, 0.9)),
        ({1: _curve((0.9, 0.8, 0)), 3: _curve((0.9, 0.8, 0))}, 0.0, (1, 0.9)),
        # a curve within budget beats a better recall over it
        ({1: _curve((0.9, 0.99, 2)), 2: _curve((0.9, 0.5, 0))}, 0.0, (2, 0.9)),
        # none within budget: the fewest false accepts
        ({1: _curve((0.9, 0.99, 2)), 2: _curve((0.9, 0.9, 1))}, 0.0, (2, 0.9)),
    ],
)
def test_choose_operating_point(
    curves: dict[int, list[CurvePoint]], budget: float, expected: tuple[int, float]
) -> None:
    patience, point = choose_operating_point(curves, budget)
    assert (patience, point.threshold) == expected


@pytest.mark.parametrize(
    ("curves", "expected"),
    [
        # the point with no false accept reaches the floor: it stays
        ({1: _curve((0.9, 0.95, 1), (0.95, 0.9, 0))}, (1, 0.95)),
        # it hears too little: the fewest false accepts that reach the floor (one), the higher
        # threshold of those
        ({1: _curve((0.9, 1.0, 2), (0.95, 0.95, 1), (0.97, 0.92, 1), (0.995, 0.6, 0))}, (1, 0.97)),
        # across patiences: the fewer false accepts first, then the higher threshold
        ({1: _curve((0.9, 0.95, 2), (0.995, 0.5, 0)), 2: _curve((0.85, 0.9, 1), (0.99, 0.6, 0))}, (2, 0.85)),
        # equal on both: the shorter patience
        ({1: _curve((0.9, 0.95, 1), (0.995, 0.5, 0)), 3: _curve((0.9, 0.92, 1), (0.995, 0.4, 0))}, (1, 0.9)),
        # reaching the floor would take more false accepts than allowed: the chosen point stays
        ({1: _curve((0.8, 0.95, 3), (0.99, 0.6, 0))}, (1, 0.99)),
        # nothing reaches the floor: the chosen point stays
        ({1: _curve((0.5, 0.85, 0), (0.9, 0.6, 0))}, (1, 0.5)),
    ],
)
def test_keep_recall(curves: dict[int, list[CurvePoint]], expected: tuple[int, float]) -> None:
    chosen = choose_operating_point(curves, 0.0)
    patience, point = keep_recall(curves, chosen, recall_floor=0.9, max_false_accepts=2)
    assert (patience, point.threshold) == expected


def test_choose_operating_point_refuses_no_curves() -> None:
    with pytest.raises(ValueError, match="no threshold curves"):
        choose_operating_point({})


def test_default_thresholds_are_increasing_and_inside_0_1() -> None:
    t = default_thresholds()
    assert t == sorted(t) and t[0] > 0 and t[-1] < 1


@pytest.mark.parametrize(
    ("a", "b", "same"),
    [
        ("hey", "hay", True),
        ("grey", "gray", True),
        ("computer", "computa", True),  # non-rhotic voices (en-gb) say them alike
        ("cat", "kat", True),
        ("kiosk", "kiossk", True),
        ("phone", "fone", True),
        ("knight", "night", True),
        ("city", "sity", True),
        ("computer", "commuter", False),
        ("lamp", "ramp", False),
        ("hey", "hiy", False),
        ("jarvis", "jervis", False),
        ("okay", "otay", False),
        ("cat", "gat", False),
    ],
)
def test_sound_key(a: str, b: str, same: bool) -> None:
    assert (sound_key(a) == sound_key(b)) is same


@pytest.mark.parametrize(
    ("phrase", "homophones"),
    [
        ("hey computer", ["hay computer", "hey computa", "hay computa"]),
        ("hey jarvis", ["hay jarvis"]),
        ("okay kiosk", ["okey kiosk"]),
        ("hay there", ["hey there"]),  # a filler word that sounds like the phrase's own
    ],
)
def test_near_misses_leave_out_what_sounds_like_the_phrase(phrase: str, homophones: list[str]) -> None:
    got = near_misses(phrase)
    for item in homophones:
        assert sounds_same(item, phrase)
        assert item not in got
    assert not [n for n in got if sounds_same(n, phrase)]


def _lifted(s: float, p: float, s_low: float, s_high: float) -> float:
    """The enrolled verifier's score (`enroll.verifier_onnx`) of a window the classifier leans to."""
    return p + (1 - p) * min(1.0, max(0.0, (s - s_low) / (s_high - s_low)))


@pytest.mark.parametrize(
    ("negatives", "s_high", "ceiling", "expected"),
    [
        ([], 0.8, 0.8, 0.02),  # nothing leans: lift from just above 0
        ([(0.7, 0.9)], 0.8, 0.8, 0.72),  # at or over the ceiling already: never lifted
        ([(0.7, 0.18)], 0.9, 1e-9, 0.72),  # a ceiling under every score: no lift for any (the old rule)
        ([(0.75, 0.3)], 0.7, 0.8, 0.77),  # more similar than the takes: just above it, no lift
        ([(0.6, 0.5), (0.3, 0.05)], 0.8, 0.5, 0.62),  # the ones at the ceiling keep theirs
    ],
)
def test_verifier_low(
    negatives: list[tuple[float, float]], s_high: float, ceiling: float, expected: float
) -> None:
    assert verifier_low(negatives, s_high, ceiling) == pytest.approx(expected)


def test_verifier_low_lifts_no_negative_over_the_ceiling() -> None:
    negatives = [(0.70, 0.18), (0.667, 0.11), (0.577, 0.081), (0.538, 0.597)]  # "hello lamp"'s
    s_low = verifier_low(negatives, 0.776, 0.8)
    assert s_low < 0.70  # the most similar one is lifted, ...
    assert max(_lifted(s, p, s_low, 0.776) for s, p in negatives) < 0.8  # ... not to the ceiling
    # without the margin the tightest one would reach the ceiling exactly
    assert max(_lifted(s, p, s_low - 0.02, 0.776) for s, p in negatives) == pytest.approx(0.8)


def test_verifier_low_refuses_a_ceiling_outside_0_1() -> None:
    with pytest.raises(ValueError, match="ceiling"):
        verifier_low([], 0.8, 1.0)
