"""Endpointer: utterance boundaries from VAD probabilities, table-driven on audio time."""

from __future__ import annotations

import dataclasses

import pytest

from appliance.core.endpointing import (
    END_SILENCE_S,
    EndpointConfig,
    Endpointer,
    SpeechPaused,
    SpeechResumed,
    SpeechStarted,
    TurnEagerness,
    UtteranceEnded,
)

FRAME_SAMPLES = 512
FRAME_S = FRAME_SAMPLES / 16000  # 0.032 s


def frame(value: int = 0) -> bytes:
    return int(value).to_bytes(2, "little", signed=True) * FRAME_SAMPLES


def drive(ep: Endpointer, probs: list[float]) -> list[tuple[str, float, float]]:
    out: list[tuple[str, float, float]] = []
    for i, p in enumerate(probs):
        t_end = (i + 1) * FRAME_S
        for ev in ep.process(p, frame(1 if p >= 0.5 else 0), t_end):
            if isinstance(ev, SpeechStarted):
                out.append(("start", round(ev.t, 3), 0.0))
            else:
                assert isinstance(ev, UtteranceEnded)
                out.append((ev.reason, round(ev.start_t, 3), round(ev.end_t, 3)))
    return out


def seq(*parts: tuple[float, int]) -> list[float]:
    probs: list[float] = []
    for p, n in parts:
        probs += [p] * n
    return probs


@pytest.mark.parametrize(
    ("eagerness", "silence_frames", "ends"),
    [
        # end-of-speech silence: eager 0.40 s = 12.5 frames → 13, normal 0.75 s → 24, patient 1.5 s → 47
        (TurnEagerness.EAGER, 12, False),
        (TurnEagerness.EAGER, 13, True),
        (TurnEagerness.NORMAL, 23, False),
        (TurnEagerness.NORMAL, 24, True),
        (TurnEagerness.PATIENT, 46, False),
        (TurnEagerness.PATIENT, 47, True),
    ],
)
def test_eagerness_sets_end_silence(eagerness: TurnEagerness, silence_frames: int, ends: bool) -> None:
    ep = Endpointer(EndpointConfig.for_eagerness(eagerness))
    events = drive(ep, seq((0.0, 10), (0.9, 30), (0.0, silence_frames)))
    # speech begins at frame 10 (t = 0.32 s) and its last frame ends at 40 * 0.032 = 1.28 s
    assert events[0] == ("start", 0.32, 0.0)
    if ends:
        assert events[1:] == [("silence", 0.32, 1.28)]
    else:
        assert events[1:] == []


def test_documented_table_values() -> None:
    assert END_SILENCE_S == {
        TurnEagerness.EAGER: 0.40,
        TurnEagerness.NORMAL: 0.75,
        TurnEagerness.PATIENT: 1.50,
    }


def test_short_blip_does_not_start_speech() -> None:
    ep = Endpointer(EndpointConfig(min_speech_s=0.2))
    # 6 frames = 0.192 s < 0.2 s; 7 frames = 0.224 s
    assert drive(ep, seq((0.0, 5), (0.9, 6), (0.0, 40))) == []
    ep.reset()
    assert drive(ep, seq((0.0, 5), (0.9, 7)))[0] == ("start", 0.16, 0.0)


def test_hysteresis_keeps_speech_through_mid_probabilities() -> None:
    ep = Endpointer(EndpointConfig(end_silence_s=0.2))
    # 0.4 is below the start threshold but above the release threshold: still speech
    events = drive(ep, seq((0.9, 10), (0.4, 20), (0.0, 7)))
    assert events == [("start", 0.0, 0.0), ("silence", 0.0, 0.96)]


def test_pause_shorter_than_end_silence_continues_the_utterance() -> None:
    ep = Endpointer(EndpointConfig(end_silence_s=0.4))
    events = drive(ep, seq((0.9, 10), (0.0, 10), (0.9, 10), (0.0, 13)))
    assert events == [("start", 0.0, 0.0), ("silence", 0.0, 0.96)]


def test_max_length_cuts_the_utterance() -> None:
    ep = Endpointer(EndpointConfig(max_utterance_s=1.0))
    events = drive(ep, seq((0.9, 80)))
    assert events[0] == ("start", 0.0, 0.0)
    assert events[1][0] == "max_length"
    assert events[1][2] == pytest.approx(1.024)  # first frame end at or past 1.0 s


def test_audio_has_preroll_and_trimmed_tail() -> None:
    ep = Endpointer(EndpointConfig(preroll_s=0.1, end_silence_s=0.5, min_speech_s=0.064))
    ended: list[UtteranceEnded] = []
    probs = seq((0.0, 20), (0.9, 10), (0.0, 16))
    for i, p in enumerate(probs):
        ended += [e for e in ep.process(p, frame(0), (i + 1) * FRAME_S) if isinstance(e, UtteranceEnded)]
    assert len(ended) == 1
    samples = len(ended[0].audio) // 2
    # preroll: frames kept while waiting (>= 0.1 s → 4 frames incl. the 2 speech frames that
    # started it), plus the 8 further speech frames, plus 0.2 s of trailing silence (3200 samples)
    assert samples == (4 + 8) * FRAME_SAMPLES + 3200


def test_reset_between_utterances() -> None:
    ep = Endpointer(EndpointConfig(end_silence_s=0.2))
    first = drive(ep, seq((0.9, 10), (0.0, 7)))
    assert [e[0] for e in first] == ["start", "silence"]
    assert not ep.in_speech


def drive_pauses(ep: Endpointer, probs: list[float]) -> list[tuple[str, float]]:
    out: list[tuple[str, float]] = []
    for i, p in enumerate(probs):
        for ev in ep.process(p, frame(1 if p >= 0.5 else 0), (i + 1) * FRAME_S):
            if isinstance(ev, SpeechStarted):
                out.append(("start", round(ev.t, 3)))
            elif isinstance(ev, SpeechPaused):
                out.append(("paused", round(ev.t, 3)))
            elif isinstance(ev, SpeechResumed):
                out.append(("resumed", round(ev.t, 3)))
            else:
                out.append((ev.reason, round(ev.end_t, 3)))
    return out


@pytest.mark.parametrize(
    ("probs", "expected"),
    [
        # speech 0-0.32 s, then silence: paused once 0.2 s of it is heard (7 frames = 0.224 s,
        # at 0.544 s), ended at 0.75 s of it (24 frames)
        (seq((0.9, 10), (0.0, 24)), [("start", 0.0), ("paused", 0.32), ("silence", 0.32)]),
        # a 0.5 s mid-sentence pause: paused, resumed when speech comes back (at 0.32 + 16
        # frames = 0.832 s), paused again after the second part, then the end
        (
            seq((0.9, 10), (0.0, 16), (0.9, 10), (0.0, 24)),
            [("start", 0.0), ("paused", 0.32), ("resumed", 0.832), ("paused", 1.152), ("silence", 1.152)],
        ),
        # a silence shorter than pause_report_s reports nothing
        (
            seq((0.9, 10), (0.0, 6), (0.9, 10), (0.0, 24)),
            [("start", 0.0), ("paused", 0.832), ("silence", 0.832)],
        ),
    ],
)
def test_pauses_are_reported_for_speculative_turns(
    probs: list[float], expected: list[tuple[str, float]]
) -> None:
    ep = Endpointer(EndpointConfig(pause_report_s=0.2))
    assert drive_pauses(ep, probs) == expected


def test_paused_audio_is_what_the_end_hands_over() -> None:
    """With pause_report_s >= 0.2 the speculative transcript can be reused as is."""
    ep = Endpointer(EndpointConfig(pause_report_s=0.2, preroll_s=0.1, min_speech_s=0.064))
    paused: list[SpeechPaused] = []
    ended: list[UtteranceEnded] = []
    for i, p in enumerate(seq((0.0, 20), (0.9, 10), (0.0, 24))):
        for ev in ep.process(p, frame(int(p * 10) + i % 3), (i + 1) * FRAME_S):
            if isinstance(ev, SpeechPaused):
                paused.append(ev)
            elif isinstance(ev, UtteranceEnded):
                ended.append(ev)
    assert len(paused) == 1 and len(ended) == 1
    assert paused[0].audio == ended[0].audio


def test_no_pause_events_by_default() -> None:
    events = drive_pauses(Endpointer(EndpointConfig()), seq((0.9, 10), (0.0, 16), (0.9, 10), (0.0, 24)))
    assert [e[0] for e in events] == ["start", "silence"]


@pytest.mark.parametrize("eagerness", list(TurnEagerness))
@pytest.mark.parametrize(
    "probs",
    [
        seq((0.9, 10), (0.0, 60)),
        seq((0.9, 10), (0.0, 16), (0.9, 10), (0.0, 60)),  # a 0.5 s mid-sentence pause
        seq((0.9, 10), (0.0, 30), (0.9, 10), (0.0, 60)),  # a 0.96 s one (ends an eager/normal turn)
    ],
)
def test_speculation_leaves_turn_eagerness_as_it_is(eagerness: TurnEagerness, probs: list[float]) -> None:
    """Pause reports only add events: every turn ends when and with what it ends without them."""

    def ends(pause_report_s: float | None) -> list[tuple[float, float, bytes]]:
        ep = Endpointer(EndpointConfig(end_silence_s=END_SILENCE_S[eagerness], pause_report_s=pause_report_s))
        out: list[tuple[float, float, bytes]] = []
        for i, p in enumerate(probs):
            for ev in ep.process(p, frame(int(p * 10) + i % 3), (i + 1) * FRAME_S):
                if isinstance(ev, UtteranceEnded):
                    out.append((round(ev.end_t, 3), round(ev.declared_t, 3), ev.audio))
        return out

    plain = ends(None)
    assert plain and ends(0.2) == plain
    assert all(
        declared - end == pytest.approx(END_SILENCE_S[eagerness], abs=0.033) for end, declared, _ in plain
    )


BARGE_IN = EndpointConfig(barge_in_min_speech_s=0.06, barge_in_threshold=0.8, barge_in_after_s=2.5)


# 100 frames = 3.2 s; the canceller starts at 0 (settled from 2.5 s, frame 79 ends at 2.528 s)
@pytest.mark.parametrize(
    ("cfg", "probs", "canceller_from", "starts"),
    [
        # settled canceller: 2 frames (0.064 s >= 0.06) at >= 0.8 start speech at the second frame
        (BARGE_IN, seq((0.0, 85), (0.85, 2), (0.0, 13)), 0.0, [2.784]),
        # the normal rule alone (agent silent): 2 frames are a blip
        (BARGE_IN, seq((0.0, 85), (0.85, 2), (0.0, 13)), None, []),
        # ... and 7 frames are speech (0.224 s >= 0.2)
        (BARGE_IN, seq((0.0, 85), (0.85, 7), (0.0, 8)), None, [2.944]),
        # one frame is not enough, even a confident one
        (BARGE_IN, seq((0.0, 85), (0.99, 1), (0.3, 1), (0.99, 1), (0.0, 12)), 0.0, []),
        # below the barge-in threshold only the normal rule counts (7 frames at 0.7)
        (BARGE_IN, seq((0.0, 85), (0.7, 6), (0.0, 9)), 0.0, []),
        (BARGE_IN, seq((0.0, 85), (0.7, 7), (0.0, 8)), 0.0, [2.944]),
        # the canceller started 1 s ago only (not settled): the normal rule
        (BARGE_IN, seq((0.0, 85), (0.85, 2), (0.0, 13)), 1.7, []),
        # ... and it settles within the run: only the frames after 2.5 s count (frames 78, 79 end at
        # 2.496 s and 2.528 s: the first one is before)
        (BARGE_IN, seq((0.0, 77), (0.9, 2), (0.0, 21)), 0.0, []),
        (BARGE_IN, seq((0.0, 77), (0.9, 3), (0.0, 20)), 0.0, [2.56]),
        # the faster rule off: the normal rule while the agent speaks too
        (EndpointConfig(), seq((0.0, 85), (0.85, 2), (0.0, 13)), 0.0, []),
    ],
)
def test_barge_in_rule_while_the_canceller_runs(
    cfg: EndpointConfig, probs: list[float], canceller_from: float | None, starts: list[float]
) -> None:
    ep = Endpointer(cfg)
    got: list[float] = []
    for i, p in enumerate(probs):
        t_end = (i + 1) * FRAME_S
        talk_over_s = None if canceller_from is None or t_end < canceller_from else t_end - canceller_from
        got += [
            round(t_end, 3)
            for ev in ep.process(p, frame(), t_end, talk_over_s)
            if isinstance(ev, SpeechStarted)
        ]
    assert got == starts


# the canceller started 1 s ago (not settled); frames 86, 87 (0-based 85, 86) are speech at 0.85
@pytest.mark.parametrize(
    ("double_talk_frames", "starts"),
    [
        # the raw microphone marks both speech frames: the barge-in rule holds before 2.5 s
        ({85, 86}, [2.784]),
        # one of them only: a run of one frame is not enough
        ({86}, []),
        ({85}, []),
        # double talk in frames the VAD does not score as speech starts nothing
        ({80, 81, 82, 83}, []),
        # none: the fixed wait, as before
        (set(), []),
    ],
)
def test_double_talk_frames_count_for_the_barge_in_rule_before_the_canceller_settles(
    double_talk_frames: set[int], starts: list[float]
) -> None:
    ep = Endpointer(BARGE_IN)
    got: list[float] = []
    for i, p in enumerate(seq((0.0, 85), (0.85, 2), (0.0, 13))):
        t_end = (i + 1) * FRAME_S
        talk_over_s = None if t_end < 1.7 else t_end - 1.7
        events = ep.process(p, frame(), t_end, talk_over_s, double_talk=i in double_talk_frames)
        got += [round(t_end, 3) for ev in events if isinstance(ev, SpeechStarted)]
    assert got == starts


def test_double_talk_means_nothing_while_the_agent_is_silent_or_the_rule_is_off() -> None:
    for cfg, talk_over_s in ((BARGE_IN, None), (EndpointConfig(), 1.0)):
        ep = Endpointer(cfg)
        got = []
        for i, p in enumerate(seq((0.0, 85), (0.85, 2), (0.0, 13))):
            t_end = (i + 1) * FRAME_S
            got += ep.process(p, frame(), t_end, talk_over_s, double_talk=True)
        assert not any(isinstance(ev, SpeechStarted) for ev in got)


# the canceller started 1 s ago; its output's VAD stays low (it suppressed the user), the raw
# microphone's VAD (given only for frames the band detector marks) is high in frames 85, 86
@pytest.mark.parametrize(
    ("raw", "talk_over_from", "starts"),
    [
        ({85: 0.9, 86: 0.9}, 1.7, [2.784]),
        # below the barge-in threshold (0.8), or one frame only: nothing
        ({85: 0.7, 86: 0.9}, 1.7, []),
        ({86: 0.95}, 1.7, []),
        # the agent is silent (the canceller does not run): the raw VAD means nothing
        ({85: 0.9, 86: 0.9}, None, []),
    ],
)
def test_the_raw_microphones_vad_in_marked_frames_counts_for_the_barge_in_rule(
    raw: dict[int, float], talk_over_from: float | None, starts: list[float]
) -> None:
    ep = Endpointer(BARGE_IN)
    got: list[float] = []
    for i, p in enumerate(seq((0.0, 85), (0.3, 2), (0.0, 13))):
        t_end = (i + 1) * FRAME_S
        talk_over_s = None if talk_over_from is None else t_end - talk_over_from
        events = ep.process(p, frame(), t_end, talk_over_s, raw_prob=raw.get(i))
        got += [round(t_end, 3) for ev in events if isinstance(ev, SpeechStarted)]
    assert got == starts


def test_the_raw_vad_means_nothing_when_the_barge_in_rule_is_off() -> None:
    ep = Endpointer(EndpointConfig())
    got = []
    for i, p in enumerate(seq((0.0, 85), (0.3, 2), (0.0, 13))):
        got += ep.process(p, frame(), (i + 1) * FRAME_S, 1.0, raw_prob=0.99)
    assert not any(isinstance(ev, SpeechStarted) for ev in got)


def test_a_barge_in_start_keeps_the_speech_frames_and_the_preroll() -> None:
    ep = Endpointer(BARGE_IN)
    events = []
    probs = seq((0.0, 85), (0.9, 10), (0.0, 30))
    for i, p in enumerate(probs):
        t_end = (i + 1) * FRAME_S
        events += ep.process(p, frame(1 if p >= 0.5 else 0), t_end, t_end)
    started = [e for e in events if isinstance(e, SpeechStarted)]
    ended = [e for e in events if isinstance(e, UtteranceEnded)]
    assert [round(e.t, 3) for e in started] == [round(85 * FRAME_S, 3)]  # the start of the first speech frame
    assert len(ended) == 1 and ended[0].start_t == started[0].t
    assert ended[0].end_t == pytest.approx(95 * FRAME_S)
    # the preroll (0.6 s: 19 frames, the last 2 of them the speech that started it), the 8 speech
    # frames after, 0.2 s of the trailing silence
    assert len(ended[0].audio) == (19 + 8) * FRAME_SAMPLES * 2 + int(0.2 * 16000) * 2


CONVERGING = dataclasses.replace(BARGE_IN, converging_min_speech_s=0.4)  # for the first 2 s


# the canceller starts at 0; frames 16.. (from 0.512 s) carry the VAD's reading
@pytest.mark.parametrize(
    ("cfg", "probs", "playing", "starts"),
    [
        # 7 frames at 0.7 (0.224 s) 0.5 s into the turn: the fresh canceller's leak, not a user
        (CONVERGING, seq((0.0, 16), (0.7, 7), (0.0, 77)), True, []),
        # ... the same without the rule: the normal rule starts speech (the self-interruption)
        (BARGE_IN, seq((0.0, 16), (0.7, 7), (0.0, 77)), True, [0.736]),
        # 13 frames (0.416 s >= 0.4) do start speech within the window
        (CONVERGING, seq((0.0, 16), (0.7, 13), (0.0, 71)), True, [0.928]),
        # in the echo tail (the agent's words are over) the normal rule holds
        (CONVERGING, seq((0.0, 16), (0.7, 7), (0.0, 77)), False, [0.736]),
        # after 2 s of the turn the normal rule holds again (frames 66.. from 2.08 s)
        (CONVERGING, seq((0.0, 65), (0.7, 7), (0.0, 28)), True, [2.304]),
        # a run that began in the window and goes on past it starts speech at the window's end
        (CONVERGING, seq((0.0, 56), (0.7, 8), (0.0, 36)), True, [2.016]),
        # double-talk-free barge-in rule frames (>= 0.8 for 2 frames) after 2.5 s are unaffected
        (CONVERGING, seq((0.0, 85), (0.85, 2), (0.0, 13)), True, [2.784]),
    ],
)
def test_a_converging_canceller_needs_longer_speech_while_the_agent_is_heard(
    cfg: EndpointConfig, probs: list[float], playing: bool, starts: list[float]
) -> None:
    ep = Endpointer(cfg)
    got: list[float] = []
    for i, p in enumerate(probs):
        t_end = (i + 1) * FRAME_S
        events = ep.process(p, frame(), t_end, t_end, playing=playing)
        got += [round(t_end, 3) for ev in events if isinstance(ev, SpeechStarted)]
    assert got == starts
