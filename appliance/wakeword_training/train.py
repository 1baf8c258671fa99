"""Build the data set, train, pick a threshold, write `<name>.onnx` + `<name>.wakeword.json`."""

from __future__ import annotations

import functools
import hashlib
import json
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO, TypeAlias, TypeVar

import numpy as np
import numpy.typing as npt

from appliance.adapters.openwakeword_detector import OpenWakeWordFeatures
from appliance.adapters.resample import resample
from appliance.core import wakeword_training as core
from appliance.paths import write_atomic
from appliance.ports import Pcm16
from appliance.wake_word_points import METADATA_SUFFIX as METADATA_SUFFIX
from appliance.wakeword_training import augment, synth
from appliance.wakeword_training import negative_features as negative_features_file
from appliance.wakeword_training.model import FRAMES, Ensemble, Mlp, check_frame_dropout, to_onnx, train_mlp

RATE_HZ = 16000
CHUNK_S = 60.0
WINDOW_SAMPLES = 32000  # exactly 16 embeddings (2 s); each 1,280 samples more is one embedding more
MEMBER_SEED_STEP = 1000  # ensemble member k draws its data with seed + k × this (member 0: seed)
POOL_SEED = 400  # the hard-negative pool's speech: seed + this (the training speech: + 100, + 200)
HARD_SCORE = 0.05  # a negative window the classifier scores at least this is a hard negative
HARD_REPEAT = 4  # each hard negative joins the next fit this many times more
T = TypeVar("T")
Windows = npt.NDArray[np.float32]
ModelSource: TypeAlias = Path | bytes
"""A classifier: its ONNX file, or the bytes of one not written yet (training calibrates its
model before it writes anything)."""
BASE_SUFFIX = ".base.onnx"  # NAME.base.onnx: the trained model an enrolled NAME.onnx was built on

OTHER_PHRASES = (
    "hey jarvis", "alexa", "okay google", "hey siri", "hey mycroft", "good morning", "good night",
    "turn on the lights", "what time is it", "set a timer", "thank you", "how are you",
    "stop the music", "play some jazz", "open the door", "hello there", "excuse me", "never mind",
)  # fmt: skip

SENTENCES = (
    "The weather tomorrow will be cloudy with a chance of rain in the afternoon.",
    "Could you pass me the salt and the pepper, please?",
    "I left my keys on the kitchen table next to the fruit bowl.",
    "We are going to visit my grandmother this weekend.",
    "The train to the city leaves at a quarter past eight.",
    "Please remember to water the plants while I am away.",
    "My favourite book is about a sailor who crosses the ocean alone.",
    "The children played football in the park until it got dark.",
    "Dinner is ready, come and sit down before it gets cold.",
    "I think the printer in the office is out of paper again.",
    "She bought a new bicycle and rides it to work every day.",
    "The meeting has been moved to Thursday morning at ten.",
    "Turn left at the next corner and then go straight ahead.",
    "There is a small bakery near the station that sells fresh bread.",
    "He forgot to charge his phone and now the battery is dead.",
    "The museum is closed on Mondays but open late on Fridays.",
    "Can you tell me how long it takes to bake a chocolate cake?",
    "The dog barked at the mail carrier every single morning.",
    "We watched a documentary about whales and dolphins last night.",
    "It is important to drink enough water when it is hot outside.",
    "My brother is learning to play the guitar and the piano.",
    "The garden looks beautiful now that the roses are blooming.",
    "I need to buy milk, eggs, butter and a loaf of bread.",
    "The computer lab on the second floor opens at nine.",
    "Our neighbours are painting their house a bright shade of blue.",
    "The concert was cancelled because the singer had a cold.",
    "Let me know when you arrive so I can pick you up.",
    "The river flooded the fields after three days of heavy rain.",
    "He wrote a long letter to his friend who lives abroad.",
    "The restaurant serves the best soup in the whole town.",
    "Put the groceries in the fridge before they go bad.",
    "A family of ducks lives by the pond behind the school.",
    "The lamp in the hallway flickers whenever the wind blows.",
    "Hey, did you see the game on television yesterday evening?",
    "Okay, I will call you back in about ten minutes.",
    "Hello, is anybody home? I brought some cookies.",
    "The kiosk at the corner sells newspapers and coffee.",
    "Computers have changed the way we work and communicate.",
    "Please close the window, it is getting cold in here.",
    "The flight was delayed by two hours because of fog.",
)  # fmt: skip

# Texts of the test negatives only (`negative_audio_chunk(split="test")`): never spoken in
# training or validation, so a false-accept rate measured on them is not tuned to them.
TEST_PHRASES = (
    "hey there", "okay then", "hello again", "hey you", "okay fine", "hello everyone", "come here",
    "call mom", "lights off", "volume up", "next song", "what is the weather", "good evening",
    "see you later", "wake me up at seven", "is it raining", "hey google", "computer science",
)  # fmt: skip

TEST_SENTENCES = (
    "The bus was late again so I walked the last two miles.",
    "Have you ever tried cooking rice in a clay pot?",
    "My sister keeps a diary and writes in it every night.",
    "The lights in the stadium came on just before sunset.",
    "We need a bigger table if everyone is coming for lunch.",
    "I heard a strange noise coming from the basement.",
    "The teacher asked us to read the first chapter by Monday.",
    "Hey, could you help me carry these boxes upstairs?",
    "Okay, so the plan is to meet at the station at noon.",
    "Hello, I would like to book a table for four people.",
    "The new computer in the library is much faster than the old one.",
    "A lamp post leaned over the road after the storm.",
    "The kids bought ice cream from the kiosk on the beach.",
    "He repaired the old clock that belonged to his grandfather.",
    "The shop around the corner sells second hand records.",
    "Every summer we go camping by the lake in the mountains.",
    "The doctor said I should get more sleep and less coffee.",
    "They painted a mural of a whale on the side of the school.",
    "I am not sure whether the store is open on holidays.",
    "The cat sleeps on the windowsill whenever the sun is out.",
    "Please switch off the heater before you leave the room.",
    "The orchestra played a symphony that lasted over an hour.",
    "Our team lost the match but we played really well.",
    "She keeps her keys in a little bowl by the front door.",
    "The price of apples went up after the dry summer.",
    "He likes to listen to the radio while he cooks dinner.",
    "We counted more than forty stars before the clouds came.",
    "The bridge will be closed for repairs until next spring.",
    "My uncle builds wooden boats in his garage.",
    "The hotel room had a view of the harbour and the lighthouse.",
    "It took them three hours to climb to the top of the hill.",
    "Hey, where did you put the remote control?",
    "The baby finally fell asleep after a long afternoon.",
    "I will send you the photos as soon as I get home.",
    "The farmer sold fresh vegetables at the Saturday market.",
    "Okay everyone, let us start the meeting now.",
    "The company moved its office to a building near the river.",
    "Hello, this is a message for the person who lost a blue umbrella.",
    "The printer jammed twice while I was printing the report.",
    "Tomorrow we will compare the results with last year's numbers.",
)  # fmt: skip


# Texts of the validation negatives only (`negative_audio_chunk(split="validation")`): used
# neither in training nor in the test split, so a threshold chosen on them meets speech it was not
# trained on, as in the test split and in a room (on the training texts it under-estimated false
# accepts: none in an hour of validation audio, 2–8 in two hours of test audio).
VALIDATION_PHRASES = (
    "hey buddy", "okay sure", "hello friend", "hey mister", "okay cool", "hello sunshine",
    "go away", "call dad", "lights on", "volume down", "previous song", "what is the time",
    "good afternoon", "talk to you soon", "wake me at six", "is it snowing", "hey alexa",
    "computer games",
)  # fmt: skip

VALIDATION_SENTENCES = (
    "The postman brought a parcel that was far too big for the letterbox.",
    "Would you like some tea or would you rather have coffee?",
    "My cousin collects old coins from every country she visits.",
    "The street lamps were still on when we left early in the morning.",
    "We should fix the fence before the goats get out again.",
    "I could hear thunder rolling over the hills all night.",
    "The librarian asked everyone to keep their voices down.",
    "Hey, have you seen my glasses anywhere around here?",
    "Okay, I think we have enough chairs for everybody now.",
    "Hello, I am calling about the apartment you advertised.",
    "The old computer in the attic still turns on after all these years.",
    "She bought a newspaper at the kiosk outside the station.",
    "A desk lamp and a notebook were all he needed to work.",
    "The bakery runs out of croissants before nine on weekends.",
    "Our football coach makes us run laps when we are late.",
    "The ferry across the bay takes about forty minutes.",
    "Grandpa tells the same story about the war every winter.",
    "The paint on the kitchen wall is starting to peel.",
    "I lost my umbrella somewhere between the shop and home.",
    "The fox ran across the field and vanished into the woods.",
    "Please turn the music down, the baby is sleeping.",
    "The film was so long that half the audience fell asleep.",
    "We planted tomatoes, beans and carrots in the spring.",
    "He keeps a spare key under the flower pot by the door.",
    "The market square is full of tourists in the summer.",
    "She practises the violin for an hour after school.",
    "The wind blew the washing off the line into the mud.",
    "Our flight home leaves just after midnight on Sunday.",
    "The pharmacist explained how often to take the tablets.",
    "Hey, would you mind holding the door for a second?",
    "The cathedral bells ring every hour on the hour.",
    "Okay, let us try that again from the beginning.",
    "The students built a robot for the science fair.",
    "Hello, could I speak to the manager, please?",
    "A thick fog rolled in from the sea after lunch.",
    "The repair shop said my bike will be ready on Friday.",
    "They keep chickens and a very noisy rooster in the yard.",
    "My computer crashed just before I saved the document.",
    "The swimming pool is closed for cleaning this week.",
    "We ate pancakes with maple syrup for breakfast.",
)  # fmt: skip

# Texts of the calibration negatives only (`negative_audio_chunk(split="calibration")`), which
# `train` chooses the written threshold and patience on; in voices of their own
# (`synth.calibration_voices`), so neither the training nor the benchmark's splits.
CALIBRATION_PHRASES = (
    "hey mate", "okay great", "hello darling", "hey honey", "okay wait", "hello world",
    "sit down", "call grandma", "lights please", "louder please", "skip this", "what is the date",
    "good day", "catch you later", "wake me at eight", "is it sunny", "hey cortana",
    "computer screen", "kiosk mode", "lamp shade",
)  # fmt: skip

CALIBRATION_SENTENCES = (
    "The neighbours' dog chased a squirrel up the old oak tree.",
    "Do you know whether the post office is open on Saturdays?",
    "My aunt grows the biggest pumpkins in the whole village.",
    "The night train was quiet except for the rattle of the wheels.",
    "We ran out of firewood halfway through the winter.",
    "A seagull stole a chip right out of my hand at the beach.",
    "The guide told us to stay on the path through the marsh.",
    "Hey, is that your jacket hanging on the back of the chair?",
    "Okay, I have written down the address and the phone number.",
    "Hello, I am looking for the platform for the coastal line.",
    "Her computer makes a loud whirring noise when it gets warm.",
    "There was a long queue at the kiosk outside the cinema.",
    "He switched on the reading lamp and opened his book.",
    "The carpenter measured the door frame twice before cutting.",
    "Our basketball team practises in the gym on Tuesday evenings.",
    "The lighthouse keeper climbed the stairs every evening at dusk.",
    "My grandmother knits a scarf for every grandchild each winter.",
    "The tap in the bathroom drips all night long.",
    "I left the shopping list on the counter by the kettle.",
    "The owl hooted from the barn roof until the sun came up.",
    "Please keep your voice down, the others are still asleep.",
    "The play had three acts and a very long interval.",
    "We picked strawberries at the farm and made jam at home.",
    "She hides the biscuits on the top shelf of the cupboard.",
    "The fountain in the square is switched off in winter.",
    "He plays chess with his neighbour every Sunday afternoon.",
    "The storm knocked over two trees on our street.",
    "Their plane landed early, so they waited for the taxi.",
    "The nurse checked his temperature and wrote it on the chart.",
    "Hey, can you grab another chair from the kitchen?",
)  # fmt: skip


# Words the phrase's own words are paired with for "carrier" negatives ("hey garden", "hello
# pencil", "garden lamp"): what fires a word on held-out voices is mostly its first word followed
# by another one ("hey google", "hello everyone"). Training only: none of these words is in a
# validation, test or calibration text (`carrier_phrases` also drops any that is).
CARRIER_WORDS = (
    "garden", "doctor", "teacher", "pencil", "yellow", "banana", "camera", "tomato", "sister",
    "Peter", "Susan", "monkey", "rocket", "pillow", "carpet", "dinner", "butter", "kitten",
    "number", "office", "puzzle", "river", "silver", "winter", "August", "Monday", "zebra",
    "melon", "marble", "captain", "pocket", "button", "lemon", "honey", "robot", "movie",
)  # fmt: skip


# The calibration split's own carrier words ("hey kettle", "kettle lamp"): `calibrate` hears
# them among its texts, so the written point is chosen against the confusion that fires most.
CALIBRATION_CARRIER_WORDS = (
    "morning", "kettle", "mister", "sugar", "tiger", "paper", "daddy", "lady", "pepper", "ruby",
    "mango", "cactus", "turtle", "pirate", "bottle", "ladder", "cookie", "jacket", "magic", "wizard",
)  # fmt: skip


def carrier_phrases(phrase: str, limit: int, carriers: tuple[str, ...] = CARRIER_WORDS) -> list[str]:
    """The phrase's first words with another word instead of its last one ("hey garden") and
    another word before its last one ("garden computer"), alternating, at most `limit`; a
    one-word phrase gets "WORD garden" and "garden WORD". Training's `CARRIER_WORDS` never use a
    word of the held-out or calibration texts; `CALIBRATION_CARRIER_WORDS` never one of the
    held-out texts or of training's carriers."""
    words = phrase.split()
    texts: list[str] = [*TEST_SENTENCES, *TEST_PHRASES, *VALIDATION_SENTENCES, *VALIDATION_PHRASES]
    texts += [*CALIBRATION_SENTENCES, *CALIBRATION_PHRASES] if carriers is CARRIER_WORDS else CARRIER_WORDS
    heldout = {w for t in texts for w in _plain(t).split()}
    out: list[str] = []
    for word in carriers:
        w = word.lower()
        if w in heldout or w in words:
            continue
        head = " ".join([*words[:-1], w]) if len(words) > 1 else f"{words[0]} {w}"
        tail = " ".join([w, *words[1:]]) if len(words) > 1 else f"{w} {words[0]}"
        out.extend([head, tail])
    return out[: max(0, limit)]


@dataclass(frozen=True)
class TrainSize:
    """How much data to make (the CLI default fits the 10-minute budget on a 2-core box)."""

    # voices the phrase is synthesized in (piper lengths first, then espeak-ng draws): 560 rather
    # than 140 lifted "hello lamp"'s best recall at <= 1 test false accept by 5-10 points on two
    # data draws (280: 1-8), "hey computer" within a take, for ~120 CPU s more
    positive_voices: int = 560
    positive_augments: int = 3
    near_miss_voices: int = 14
    other_phrase_voices: int = 6
    speech_voices: int = 6
    noise_clips: int = 200
    speech_sentences: int = len(SENTENCES)
    other_phrases: int = len(OTHER_PHRASES)
    speech_minutes: int = 16  # generated speech and noise in training voices, as negatives
    hard_negative_rounds: int = 1
    # minutes of general speech in training voices that no fit reads whole: each hard round adds
    # its windows the classifier still scores >= HARD_SCORE (a wider net for the speech that sounds
    # like the phrase, at the cost of scoring it rather than of fitting on it)
    hard_negative_pool_minutes: int = 48
    near_miss_limit: int = core.MAX_NEAR_MISSES
    # "carrier" negatives (`carrier_phrases`: "hey garden", "garden computer"), each in this many
    # training voices, their windows counted `carrier_repeat` times (more weight)
    carrier_voices: int = 14
    carrier_limit: int = 48
    carrier_repeat: int = 3
    epochs: int = 400
    hidden: int = 32
    # windows per positive take, one per 80 ms frame after the phrase's end (1: only the window
    # the phrase ends in): the detector fires on any of them, so all are labelled positive
    positive_frames: int = 6
    speed_range: float = 0.15  # positives also at a random speed (and pitch) ×(1 ± this), half of them
    # the fraction of positive windows with the end of a training sentence 0.05–0.3 s before the
    # phrase (as when a word is said right after talking), the rest with quiet before it
    speech_before: float = 0.0
    speed_speech_minutes: int = 8  # more general-speech negatives, each minute at ×(1 ± speed_range)
    negative_weight: float = 4.0  # the negatives' total weight against the positives' in training
    l2: float = 0.01  # weight decay: more keeps the classifier from fitting the training voices only
    # each training step hides this share of each window's embeddings (`train_mlp`): no single
    # 80 ms frame decides, as when a voice training never heard says one part of the phrase oddly
    frame_dropout: float = 0.2
    # the calibration split the written threshold and patience are chosen on (`calibrate`)
    calibration_minutes: int = 32
    calibration_takes: int = 24
    calibration_carriers: int = 0  # `carrier_phrases` in the calibration split's own words among its texts
    # embeddings (80 ms each) the classifier reads: openWakeWord's models read 16 (1.28 s, about
    # 2 s of audio with the embedding's own reach); the idle loop computes every embedding anyway,
    # so more costs only classifier input
    context_frames: int = FRAMES
    # classifiers, each fitted on its own draw of the data (voices, augmentation, near misses,
    # carriers; the general speech shared), exported as one model that averages their scores
    members: int = 1

    def __post_init__(self) -> None:
        if self.members < 1:
            raise ValueError(f"members must be 1 or more, got {self.members}")
        if self.hard_negative_pool_minutes < 0:
            minutes = self.hard_negative_pool_minutes
            raise ValueError(f"hard_negative_pool_minutes must be 0 or more, got {minutes}")
        check_frame_dropout(self.frame_dropout)


TINY = TrainSize(
    hard_negative_pool_minutes=0,
    positive_voices=12,
    positive_augments=2,
    near_miss_voices=2,
    other_phrase_voices=1,
    speech_voices=1,
    noise_clips=20,
    speech_sentences=6,
    speech_minutes=0,
    speed_speech_minutes=0,
    near_miss_limit=10,
    epochs=80,
    hidden=8,
    positive_frames=3,
    calibration_minutes=2,
    calibration_takes=6,
    carrier_voices=0,
)
MICRO = TrainSize(
    hard_negative_pool_minutes=0,
    positive_voices=7,
    positive_augments=2,
    near_miss_voices=1,
    other_phrase_voices=1,
    speech_voices=1,
    noise_clips=8,
    speech_sentences=2,
    other_phrases=3,
    near_miss_limit=4,
    epochs=40,
    hidden=4,
    speech_minutes=0,
    speed_speech_minutes=0,
    positive_frames=2,
    l2=1e-3,
    carrier_voices=0,
    calibration_minutes=1,
    calibration_takes=3,
)
"""The smallest seeded data set that still trains (about a minute): the tests and quick benchmarks."""


@dataclass
class TrainResult:
    name: str
    phrase: str
    model_path: Path
    metadata_path: Path
    threshold: float
    patience_frames: int = 1
    metadata: dict[str, Any] = field(default_factory=dict)


class Progress:
    """Training's progress on stderr: a tqdm bar on a terminal; elsewhere (a pipe, a file, the
    journal) one line when a stage starts, since a redrawn bar there is kilobytes of carriage
    returns (and fills a pipe nobody reads). Silent when `enabled` is False."""

    def __init__(self, total: int, enabled: bool, stream: TextIO | None = None) -> None:
        self._bar: Any = None
        self._stream = stream if stream is not None else sys.stderr
        self._lines = enabled and not _is_terminal(self._stream)
        self._total, self._done, self._label = total, 0, ""
        self._started = time.monotonic()
        if enabled and not self._lines:
            from tqdm import tqdm

            self._bar = tqdm(total=total, file=self._stream, unit="step", dynamic_ncols=True)

    def step(self, label: str, n: int = 1) -> None:
        if self._bar is not None:
            self._bar.set_description(label[:40])
            self._bar.update(n)
        elif self._lines:
            if label != self._label:
                elapsed = time.monotonic() - self._started
                line = f"{label[:40]} (step {self._done + 1}/{self._total}, {elapsed:.0f} s)"
                print(line, file=self._stream)
                self._stream.flush()
                self._label = label
            self._done += n

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # closed or not a real stream
        return False


def window_samples(frames: int = FRAMES) -> int:
    """Samples of audio that give exactly `frames` embeddings."""
    return WINDOW_SAMPLES + (frames - FRAMES) * 1280


FEATURE_THREADS = 2
"""The feature models' threads when training and evaluating: a minute of audio 1.6-1.9x faster
than on one on 2 cores, and on this box the same numbers as one thread; a fixed count (not the
machine's CPUs, where 3 or 4 threads moved some values by 2e-5) keeps a seed's model the same on
every machine."""


def features_for(models_dir: Path, threads: int = FEATURE_THREADS) -> OpenWakeWordFeatures:
    """openWakeWord's feature models for whole clips, on `threads` threads."""
    features = models_dir / "oww-features"
    return OpenWakeWordFeatures(features / "melspectrogram.onnx", features / "embedding_model.onnx", threads)


def place(
    take: Pcm16,
    rng: np.random.Generator,
    max_tail_s: float = 0.24,
    before: Pcm16 | None = None,
    window: int = WINDOW_SAMPLES,
) -> Pcm16:
    """`take` in a window of `window` samples (2 s), ending 0–`max_tail_s` before the window's end
    (silence around); with `before`, the end of that speech 0.05–0.3 s before the take (the rest
    of the window)."""
    take = np.asarray(take[-window:], dtype=np.int16)
    tail = int(rng.uniform(0, max_tail_s) * RATE_HZ)
    tail = min(tail, window - take.shape[0])
    out = np.zeros(window, dtype=np.int16)
    end = window - tail
    start = end - take.shape[0]
    out[start:end] = take
    if before is not None and before.size:
        stop = max(0, start - int(rng.uniform(0.05, 0.3) * RATE_HZ))
        lead = before[-stop:] if stop else before[:0]
        out[stop - lead.shape[0] : stop] = lead
    return out


def positive_windows(
    extractor: OpenWakeWordFeatures, clip: npt.NDArray[np.float64], frames: int, context: int = FRAMES
) -> Windows:
    """The last `frames` `context`-frame windows of `clip` (a `place`d take followed by
    `(frames - 1) * 1280` samples of its room): one window per 80 ms after the phrase's end."""
    emb = extractor.embeddings(augment.to_pcm(clip))
    return sliding(emb[-(context + frames - 1) :], frames=context)


def placed_positive(
    take: Pcm16,
    rng: np.random.Generator,
    frames: int,
    speed_range: float,
    before: Pcm16 | None = None,
    window: int = WINDOW_SAMPLES,
) -> npt.NDArray[np.float64]:
    """`take` (at a random speed, half the time) ending 0–0.16 s before the end of a 2 s window,
    followed by `frames - 1` frames of quiet, then augmented as a whole (the room goes on).
    `before`: speech whose end comes just before the take (see `place`)."""
    if speed_range > 0 and rng.random() < 0.5:
        factor = float(rng.uniform(1 - speed_range, 1 + speed_range))
        take = resample(take, int(RATE_HZ * factor), RATE_HZ)  # faster and higher when factor > 1
    tail_samples = (frames - 1) * 1280
    clip = np.concatenate([place(take, rng, 0.16, before, window), np.zeros(tail_samples, np.int16)])
    return augment.augment(clip, rng)


def trim(audio: Pcm16, level: int = 200) -> Pcm16:
    """Cut leading and trailing near-silence of a synthesized take."""
    loud = np.flatnonzero(np.abs(audio.astype(np.int32)) > level)
    if loud.size == 0:
        return audio
    return audio[max(0, loud[0] - 800) : loud[-1] + 800]


def window_set(
    extractor: OpenWakeWordFeatures, clips: Iterable[npt.NDArray[np.float64]], frames: int = FRAMES
) -> Windows:
    """The `frames`×96 feature window at the end of each clip (`window_samples(frames)` long)."""
    out = [extractor.embeddings(augment.to_pcm(c))[-frames:] for c in clips]
    return np.stack(out).astype(np.float32) if out else np.zeros((0, frames, 96), np.float32)


def sliding(embeddings: Windows, stride: int = 1, frames: int = FRAMES) -> Windows:
    """Every `frames`-frame window of a long embedding stream, one per `stride` frames."""
    n = embeddings.shape[0] - frames + 1
    if n <= 0:
        return np.zeros((0, frames, 96), np.float32)
    idx = np.arange(0, n, stride)[:, None] + np.arange(frames)[None, :]
    return np.asarray(embeddings[idx], dtype=np.float32)


def long_speech(texts: list[str], voice_list: list[synth.Voice], rng: np.random.Generator) -> Pcm16:
    """The texts spoken one after another (voices in turn) with 0.2–1 s pauses, room-augmented."""
    parts: list[npt.NDArray[np.float64]] = []
    for i, text in enumerate(texts):
        take = synth.say(text, voice_list[i % len(voice_list)])
        parts.append(augment.augment(take, rng, strength=0.7))
        parts.append(augment.room_noise(int(rng.uniform(0.2, 1.0) * RATE_HZ), rng, float(rng.uniform(5, 80))))
    return augment.to_pcm(np.concatenate(parts)) if parts else np.zeros(0, np.int16)


def negative_audio_chunk(
    index: int,
    seed: int,
    heldout: bool = True,
    split: str = "",
    exclude: str = "",
    segments: list[tuple[int, int, str, str]] | None = None,
    calibration_carriers: int = 0,
) -> Pcm16:
    """One minute of negative audio: voices reading sentences and phrases with room noise and
    pauses, and every fourth minute plain noise of varying colour and level.

    `split`: "train" (training voices, training texts), "validation" (held-out voices, texts of
    their own: for choosing a threshold), "test" (held-out voices, texts used nowhere else: for
    measuring) or "calibration" (voices and texts of its own: `train` chooses the threshold and
    patience it writes on it). Without it, `heldout` picks "test" or "train". `exclude`: a
    phrase whose texts are left out (a calibration text that says the phrase is no negative).
    `calibration_carriers`: this many of the phrase's `carrier_phrases` in the calibration
    split's own words are among its texts ("hey kettle", "kettle computer"). `segments`: if
    given, gets (first sample, end sample, text, voice label) of each text said (what a false
    accept was said over; the audio is the same either way)."""
    split = split or ("test" if heldout else "train")
    if split not in ("train", "validation", "test", "calibration"):
        raise ValueError(f"unknown negative split {split!r}")
    rng = np.random.default_rng([seed, index])
    n = int(CHUNK_S * RATE_HZ)
    if index % 4 == 3:
        parts = [augment.room_noise(n // 6, rng, float(rng.uniform(5, 3000))) for _ in range(6)]
        return augment.to_pcm(np.concatenate(parts))[:n]
    if split == "calibration":
        speakers = synth.calibration_voices(6, seed * 1009 + index, piper=index % 8 == 0)
    else:
        speakers = synth.voices(split != "train", 6, seed * 1009 + index, piper=index % 8 == 0)
    texts = {
        "calibration": [*CALIBRATION_SENTENCES, *CALIBRATION_PHRASES],
        "train": [*SENTENCES, *OTHER_PHRASES],
        "validation": [*VALIDATION_SENTENCES, *VALIDATION_PHRASES],
        "test": [*TEST_SENTENCES, *TEST_PHRASES],
    }[split]
    if exclude:
        texts = [t for t in texts if f" {_plain(exclude)} " not in f" {_plain(t)} "]
    if split == "calibration" and exclude and calibration_carriers > 0:
        texts += carrier_phrases(_plain(exclude), calibration_carriers, CALIBRATION_CARRIER_WORDS)
    order = rng.permutation(len(texts))
    parts_f: list[npt.NDArray[np.float64]] = []
    total = 0
    for k, i in enumerate(order):
        voice = speakers[k % len(speakers)]
        take = trim(synth.say(texts[int(i)], voice))
        parts_f.append(augment.augment(take, rng, strength=0.7))
        if segments is not None:
            segments.append((total, total + parts_f[-1].shape[0], texts[int(i)], voice.label))
        parts_f.append(
            augment.room_noise(int(rng.uniform(0.2, 1.5) * RATE_HZ), rng, float(rng.uniform(5, 60)))
        )
        total += parts_f[-2].shape[0] + parts_f[-1].shape[0]
        if total >= n:
            break
    return augment.to_pcm(np.concatenate(parts_f))[:n]


def _plain(text: str) -> str:
    """Lower-case words only (as `core.normalize_phrase`, for any length)."""
    return " ".join("".join(c if c.isalnum() or c == "'" else " " for c in text.lower()).split())


def lead_ins(size: TrainSize, seed: int) -> list[Pcm16]:
    """The training sentences in training voices, for speech just before a positive take
    (none when `size.speech_before` is 0)."""
    if size.speech_before <= 0:
        return []
    voices = synth.voices(False, 12, seed + 4, piper=False)
    texts = SENTENCES[: max(1, size.speech_sentences)]
    return [trim(synth.say(t, voices[i % len(voices)])) for i, t in enumerate(texts)]


def _each(items: list[T], progress: Progress, label: str) -> Iterator[T]:
    for item in items:
        yield item
        progress.step(label)


def build_dataset(
    phrase: str,
    size: TrainSize,
    seed: int,
    extractor: OpenWakeWordFeatures,
    progress: Progress,
    speech_windows: Windows | None = None,
    extra_negatives: Windows | None = None,
) -> tuple[Windows, npt.NDArray[np.float64], dict[str, Any], Windows]:
    """The training windows `x`, their labels `y` (1 positive), what they hold (`info`) and the
    general-speech windows among them, which another ensemble member may reuse
    (`speech_windows`: given, no speech is synthesized again). `extra_negatives`: windows the
    maker brought (`negative_features`), negatives as they are."""
    rng = np.random.default_rng(seed)
    ctx, window = size.context_frames, window_samples(size.context_frames)
    pos_voices = synth.voices(False, size.positive_voices, seed)
    leads = lead_ins(size, seed)
    pos_windows: list[Windows] = []
    for k, voice in enumerate(_each(pos_voices, progress, "positive takes")):
        take = trim(synth.say(phrase, voice))
        for a in range(size.positive_augments):
            if size.positive_frames <= 1 and size.speed_range <= 0:  # one window per take
                clip = augment.augment(place(take, rng, window=window), rng)
                pos_windows.append(window_set(extractor, [clip], ctx))
                continue
            before = leads[(k * size.positive_augments + a) % len(leads)] if leads else None
            if before is not None and rng.random() >= size.speech_before:
                before = None
            clip = placed_positive(take, rng, size.positive_frames, size.speed_range, before, window)
            pos_windows.append(positive_windows(extractor, clip, size.positive_frames, ctx))
    positives = np.concatenate(pos_windows) if pos_windows else np.zeros((0, ctx, 96), np.float32)
    # the phrase cut short: the window ends 0.3–0.6 s before the phrase does (must not fire yet)
    early: list[npt.NDArray[np.float64]] = []
    for voice in pos_voices[:: max(1, len(pos_voices) // 30)]:
        take = trim(synth.say(phrase, voice))
        cut = int(rng.uniform(0.3, 0.6) * RATE_HZ)
        if take.shape[0] > cut + 3200:
            early.append(augment.augment(place(take[:-cut], rng, 0.05, window=window), rng))
    near = core.near_misses(phrase, size.near_miss_limit)
    neg_clips: list[npt.NDArray[np.float64]] = []
    near_voices = synth.voices(False, size.near_miss_voices, seed + 1)
    for text in _each(near, progress, "near misses"):
        for voice in near_voices:
            neg_clips.append(augment.augment(place(trim(synth.say(text, voice)), rng, window=window), rng))
    carriers = carrier_phrases(phrase, size.carrier_limit) if size.carrier_voices > 0 else []
    carrier_clips: list[npt.NDArray[np.float64]] = []
    carrier_voices = synth.voices(False, size.carrier_voices, seed + 5) if carriers else []
    for text in _each(carriers, progress, "carrier phrases"):
        for voice in carrier_voices:
            carrier_clips.append(
                augment.augment(place(trim(synth.say(text, voice)), rng, window=window), rng)
            )
    other_voices = synth.voices(False, size.other_phrase_voices, seed + 2)
    others = [t for t in OTHER_PHRASES if core.normalize_phrase(t) != phrase][: size.other_phrases]
    for text in _each(others, progress, "other phrases"):
        for voice in other_voices:
            neg_clips.append(augment.augment(place(trim(synth.say(text, voice)), rng, window=window), rng))
    for _ in range(size.noise_clips):
        level = float(rng.uniform(2, 3000))
        neg_clips.append(augment.room_noise(window, rng, level))
    progress.step("noise")
    negatives = window_set(extractor, [*neg_clips, *early], ctx)
    if carrier_clips:
        carrier_windows = window_set(extractor, carrier_clips, ctx)
        negatives = np.concatenate([negatives, *([carrier_windows] * max(1, size.carrier_repeat))])
    speech_voices: list[synth.Voice] = []  # none when this member reuses another's speech
    speech_seconds = 0.0
    if speech_windows is None:
        speech_voices = synth.voices(False, size.speech_voices, seed + 3)
        speech = long_speech(list(SENTENCES[: size.speech_sentences]), speech_voices, rng)
        speech_seconds = speech.shape[0] / RATE_HZ + size.speech_minutes * CHUNK_S
        streams = [extractor.embeddings(speech)]
        streams += speech_minutes(size.speech_minutes, seed + 100, extractor, progress, "general speech")
        for index in range(size.speed_speech_minutes):  # faster and higher, or slower and lower
            factor = float(rng.uniform(1 - size.speed_range, 1 + size.speed_range))
            chunk = negative_audio_chunk(index, seed + 200, heldout=False)
            streams.append(extractor.embeddings(resample(chunk, int(RATE_HZ * factor), RATE_HZ)))
            progress.step("general speech")
        speech_windows = np.concatenate([sliding(e, 2, ctx) for e in streams])
    progress.step("general speech")
    extra = extra_negatives if extra_negatives is not None else np.zeros((0, ctx, 96), np.float32)
    x = np.concatenate([positives, negatives, speech_windows, extra])
    y = np.concatenate([np.ones(len(positives)), np.zeros(len(negatives) + len(speech_windows) + len(extra))])
    info = {
        "positive_windows": len(positives),
        "near_miss_and_noise_windows": len(negatives),
        "speech_windows": len(speech_windows),
        "speech_seconds": round(speech_seconds, 1),
        "feature_file_windows": len(extra),
        "near_misses": near,
        "carrier_phrases": len(carriers),
        "voices": sorted({v.label for v in [*pos_voices, *near_voices, *other_voices, *speech_voices]}),
    }
    return x, y, info, speech_windows


def speech_minutes(
    minutes: int, seed: int, extractor: OpenWakeWordFeatures, progress: Progress, label: str
) -> list[Windows]:
    """`minutes` minutes of general speech and noise in training voices (`negative_audio_chunk`
    with `seed`), as each minute's embedding stream."""
    streams = []
    for index in range(minutes):
        streams.append(extractor.embeddings(negative_audio_chunk(index, seed, heldout=False)))
        progress.step(label)
    return streams


def _fit_member(
    x: Windows, y: npt.NDArray[np.float64], size: TrainSize, seed: int, pool: Sequence[Windows] = ()
) -> tuple[Mlp, int]:
    """One classifier on one draw of the data, with `size.hard_negative_rounds` rounds of
    fitting again with the negatives it still likes (score >= HARD_SCORE), in its data and in the
    `pool` (embedding streams of speech it was not fitted on), each repeated HARD_REPEAT times.
    Returns the classifier and how many pool windows it was fitted on."""
    fit = functools.partial(
        train_mlp,
        seed=seed,
        hidden=size.hidden,
        epochs=size.epochs,
        negative_weight=size.negative_weight,
        l2=size.l2,
        frame_dropout=size.frame_dropout,
    )
    ctx = int(x.shape[1])
    model = fit(x, y)
    pooled = 0
    for _ in range(size.hard_negative_rounds):
        hard = [x[(y < 0.5) & (model.scores(x) >= HARD_SCORE)]]
        for stream in pool:
            windows = sliding(stream, 2, ctx)
            hard.append(windows[model.scores(windows) >= HARD_SCORE])
        found = np.concatenate(hard)
        if not len(found):
            break
        pooled += len(found) - len(hard[0])
        x = np.concatenate([x, *([found] * HARD_REPEAT)])
        y = np.concatenate([y, np.zeros(len(found) * HARD_REPEAT)])
        model = fit(x, y)
    return model, pooled


def train_word(
    phrase: str,
    name: str,
    out_dir: Path,
    models_dir: Path,
    *,
    seed: int = 0,
    size: TrainSize | None = None,
    show_progress: bool = True,
    clock: Callable[[], float] = time.monotonic,
    replace: bool = False,
    negative_features: Path | None = None,
    negative_feature_windows: int = negative_features_file.DEFAULT_WINDOWS,
) -> TrainResult:
    """Train a wake word for `phrase` and write `<name>.onnx` and `<name>.wakeword.json`, only
    once it is trained and calibrated, each all at once. A word of that name already in `out_dir`
    is refused before anything slow starts (`FileExistsError`), unless `replace`: then its files
    stay as they were until the new ones take their place, and an enrollment of it
    (`<name>.base.onnx`, the trained model it was built on) is dropped with it.
    `negative_features`: a file of openWakeWord feature windows (`negative_features.check`:
    ValueError before anything slow), of which `negative_feature_windows` join every member's
    negatives."""
    size = size or TrainSize()
    text = core.normalize_phrase(phrase)
    taken = word_files(out_dir, name)
    if taken and not replace:
        raise FileExistsError(f"{taken[0]} already exists")
    if negative_features is not None:
        negative_features_file.check(negative_features, size.context_frames)
    started = clock()
    extractor = features_for(models_dir)
    n_near = len(core.near_misses(text, size.near_miss_limit))
    minutes = size.speech_minutes + size.speed_speech_minutes
    n_carriers = len(carrier_phrases(text, size.carrier_limit)) if size.carrier_voices > 0 else 0
    per_member = size.positive_voices + n_near + n_carriers + size.other_phrases + 3
    steps = per_member * size.members + minutes + size.hard_negative_pool_minutes
    progress = Progress(steps + max(1, size.calibration_minutes) + 1, show_progress)
    try:
        members: list[Mlp] = []
        infos: list[dict[str, Any]] = []
        speech: Windows | None = None
        pos_list: list[npt.NDArray[np.float64]] = []
        neg_list: list[npt.NDArray[np.float64]] = []
        data_s = 0.0
        pooled = 0
        t0 = clock()
        # the hard-negative pool, shared by the members: kept as embedding streams, cut into
        # windows only to be scored
        pool = speech_minutes(
            size.hard_negative_pool_minutes, seed + POOL_SEED, extractor, progress, "hard negative pool"
        )
        extra = None
        if negative_features is not None:
            extra = negative_features_file.sample(
                negative_features, negative_feature_windows, seed, size.context_frames
            )
        data_s += clock() - t0
        for k in range(size.members):  # each on its own draw of the data; the general speech shared
            member_seed = seed + MEMBER_SEED_STEP * k
            t0 = clock()
            x, y, member_info, speech = build_dataset(
                text, size, member_seed, extractor, progress, speech, extra
            )
            data_s += clock() - t0
            infos.append(member_info)
            model, from_pool = _fit_member(x, y, size, member_seed, pool)
            pooled += from_pool
            progress.step("training")
            scores = model.scores(x)
            pos_list.append(scores[y > 0.5])
            neg_list.append(scores[y < 0.5])
            members.append(model)
            del x, y
        counts = ("positive_windows", "near_miss_and_noise_windows", "speech_windows", "feature_file_windows")
        info = {
            **infos[0],
            **{key: sum(int(i[key]) for i in infos) for key in counts},
            "voices": sorted({v for i in infos for v in i["voices"]}),
        }
        final: Mlp | Ensemble = members[0] if len(members) == 1 else Ensemble(tuple(members))
        # the training figures below are each member's on its own data (the ensemble's score
        # differs): how far each fitted its set
        pos, neg = np.concatenate(pos_list), np.concatenate(neg_list)
        blob = to_onnx(final, name)
        from appliance.wakeword_training.calibrate import calibrate

        trained_s = clock() - started
        cal = calibrate(
            blob,
            extractor,
            text,
            seed,
            size.calibration_minutes,
            size.calibration_takes,
            progress.step,
            size.calibration_carriers,
        )
    finally:
        progress.close()
    threshold, patience = cal.threshold, cal.patience_frames
    metadata: dict[str, Any] = {
        "name": name,
        "phrase": text,
        "threshold": threshold,  # as appliance.wake_words.words[].threshold / patience_frames
        "patience_frames": patience,
        "seed": seed,
        "engine": "openwakeword",
        "model_sha256": hashlib.sha256(blob).hexdigest(),
        "calibration": {
            "takes": cal.takes,
            "negative_seconds": round(cal.negative_seconds, 1),
            "recall": round(cal.recall, 4),
            "false_accepts": cal.false_accepts,
            "false_accepts_per_hour": round(cal.false_accepts_per_hour, 3),
            "seconds": round(clock() - started - trained_s, 1),
            **(
                {}
                if cal.no_false_accept_recall is None
                else {"no_false_accept_recall": round(cal.no_false_accept_recall, 4)}
            ),
        },
        "training": {
            **info,
            "hidden": size.hidden,
            "epochs": size.epochs,
            "positive_frames": size.positive_frames,
            "speed_range": size.speed_range,
            "speech_before": size.speech_before,
            "negative_weight": size.negative_weight,
            "carrier_voices": size.carrier_voices,
            "carrier_repeat": size.carrier_repeat,
            "context_frames": size.context_frames,
            "members": size.members,
            "l2": size.l2,
            "frame_dropout": size.frame_dropout,
            "random_variants": len(synth.random_variant_names()),
            "hard_negative_pool_minutes": size.hard_negative_pool_minutes,
            "hard_negative_pool_windows": pooled,
            "feature_file": None if negative_features is None else negative_features.name,
            "train_recall_at_threshold": round(float(np.mean(pos >= threshold)), 4),
            "train_negative_accepts_at_threshold": int(np.sum(neg >= threshold)),
            "data_seconds": round(data_s, 1),
            "total_seconds": round(clock() - started, 1),
        },
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    model_path = out_dir / f"{name}.onnx"
    metadata_path = out_dir / f"{name}{METADATA_SUFFIX}"
    write_atomic(model_path, blob)
    write_atomic(metadata_path, (json.dumps(metadata, indent=2, sort_keys=True) + "\n").encode())
    (out_dir / f"{name}{BASE_SUFFIX}").unlink(missing_ok=True)  # enrolled on the model replaced
    return TrainResult(name, text, model_path, metadata_path, threshold, patience, metadata)


def word_files(folder: Path, name: str) -> list[Path]:
    """The files of a word `name` in `folder`: its model, metadata and enrollment base, or a
    microWakeWord model of that name (which a NAME.onnx would take the place of)."""
    paths = (
        folder / f"{name}.onnx",
        folder / f"{name}{METADATA_SUFFIX}",
        folder / f"{name}{BASE_SUFFIX}",
        folder / f"{name}.tflite",
    )
    return [p for p in paths if p.exists()]


def _session(model: ModelSource) -> Any:
    import onnxruntime as ort

    source = model if isinstance(model, bytes) else str(model)
    return ort.InferenceSession(source, providers=["CPUExecutionProvider"])


def _run(session: Any, windows: Windows) -> npt.NDArray[np.float64]:
    if windows.shape[0] == 0:
        return np.zeros(0)
    name = session.get_inputs()[0].name
    out = [session.run(None, {name: windows[i : i + 1024]})[0][:, 0] for i in range(0, len(windows), 1024)]
    return np.concatenate(out).astype(np.float64)


def score_windows(model: ModelSource, windows: Windows) -> npt.NDArray[np.float64]:
    """Scores of feature windows by the exported ONNX model (as the detector runs it)."""
    return _run(_session(model), windows)


def model_frames(model: ModelSource) -> int:
    """How many embeddings the classifier reads (its input's second dimension)."""
    return int(_session(model).get_inputs()[0].shape[1])


def score_stream(model: ModelSource, embeddings: Windows, stride: int = 1) -> npt.NDArray[np.float64]:
    """The score of every window of an embedding stream the model reads (one per `stride`
    frames), as the detector computes one per 80 ms frame."""
    session = _session(model)
    return _run(session, sliding(embeddings, stride, int(session.get_inputs()[0].shape[1])))
