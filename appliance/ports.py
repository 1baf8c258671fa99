"""The ports: what the runtime needs from the outside world, as `typing.Protocol`s.

Adapters implement them with one third-party library each; tests implement them with fakes.
Audio crossing a port is always numpy int16 mono. Microphone audio is always 16 kHz (the
adapter resamples); speaker audio carries its own rate (the adapter resamples to the device).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from appliance.core.conversation import ToolCall
from appliance.core.endpointing import SAMPLE_RATE_HZ, UtteranceEnded

Pcm16 = npt.NDArray[np.int16]

MIC_RATE_HZ = SAMPLE_RATE_HZ


class Clock(Protocol):
    def now(self) -> float:
        """Seconds on the appliance clock since start."""
        ...


class EventSink(Protocol):
    def emit(self, type: str, **fields: Any) -> None:
        """Record one event of the public events stream (`type`, `t` and fields)."""
        ...


@runtime_checkable
class Microphone(Protocol):
    sample_rate_hz: int
    dropped_blocks: int

    def frames(self) -> AsyncIterator[Pcm16]:
        """16 kHz mono int16 blocks until the input ends (headless) or forever (device)."""
        ...

    async def close(self) -> None: ...


@runtime_checkable
class Speaker(Protocol):
    async def play(self, audio: Pcm16, sample_rate_hz: int) -> bool:
        """Play to the end; True if played fully, False if `stop()` cut it short."""
        ...

    def stop(self) -> None:
        """Silence within one output block. Safe to call from any task; idempotent."""
        ...

    @property
    def playing(self) -> bool: ...

    async def close(self) -> None: ...


class PlaybackReference(Protocol):
    """What the speaker played, by clock time: the echo canceller's and the echo simulation's
    reference signal (`runtime/playback_monitor.py` records it)."""

    def reference(self, t_start: float, n_samples: int) -> npt.NDArray[np.float32]:
        """`n_samples` at 16 kHz from `t_start` on (float, full scale 1.0; silence where nothing played)."""
        ...


class EchoCanceller(Protocol):
    """Removes the agent's own voice from the microphone while it speaks (and for the echo tail
    after), given what the speaker played: the real canceller (`adapters/echo_canceller.py`) or
    the one-tap gating fallback (`adapters/echo_suppressor.py`). Runs on the model thread."""

    @property
    def name(self) -> str:
        """The `appliance.audio.echo_cancellation` setting it implements (`gate`, `webrtc`)."""
        ...

    @property
    def lookback_samples(self) -> int:
        """How much playback from before the block the reference starts with (gating searches
        the echo delay in it; the canceller estimates the delay itself and needs none)."""
        ...

    def process(self, mic: Pcm16, reference: npt.NDArray[np.float32]) -> Pcm16:
        """`mic`: the block that just arrived (16 kHz); `reference`: what the speaker played from
        `lookback_samples` before the block's first sample to its last, `lookback_samples +
        mic.size` samples (float, 16 kHz). Returns the cleaned block, `mic.size` samples."""
        ...

    def pause(self) -> None:
        """The agent stopped speaking and the echo tail is over: the next block `process` gets
        does not follow this one (the adapted echo path is kept: the room did not change)."""
        ...


class WakeWordDetector(Protocol):
    frame_samples: int
    names: list[str]

    def scores(self, frame: Pcm16) -> dict[str, float]:
        """Scores in [0, 1] for each loaded model, for one frame of `frame_samples`."""
        ...

    def reset(self) -> None: ...


class VoiceActivityDetector(Protocol):
    frame_samples: int

    def probability(self, frame: Pcm16) -> float:
        """Speech probability for one frame of `frame_samples` at 16 kHz."""
        ...

    def reset(self) -> None: ...


class SpeechToText(Protocol):
    def transcribe(self, audio: Pcm16, language: str | None) -> tuple[str, str]:
        """Text and the language heard (the given one, or the detected one when None)."""
        ...


@dataclass(frozen=True)
class TextDelta:
    """A piece of the reply text, in order."""

    text: str


ToolCallRequest = ToolCall
"""One complete tool call (streamed argument fragments already assembled): the conversation's own
`core.conversation.ToolCall`, so an LLM adapter's call reaches the machine as it is."""


LlmOutput = TextDelta | ToolCallRequest


class LanguageModel(Protocol):
    def stream_chat(
        self,
        messages: list[dict[str, Any]],
        tools: list[dict[str, Any]] | None,
        options: Mapping[str, Any],
    ) -> AsyncIterator[LlmOutput]:
        """Stream an OpenAI-style chat completion: text deltas as they come, then tool calls.

        `messages` and `tools` are in the OpenAI chat-completions format. `options` carries
        `temperature`, `max_tokens` and `extra_body` (forwarded as-is). Cancelling the
        iteration (aclose / task cancel) stops generation. Failures raise `AgentError`
        with a specific code (`llm_unreachable`, `llm_timeout`, `llm_bad_response`...).
        """
        ...


class TextToSpeech(Protocol):
    def synthesize(self, text: str, voice: str, speed: float) -> tuple[Pcm16, int]:
        """Audio for `text` in local voice `voice` at `speed` (0.7–1.2), with its rate."""
        ...


class AgentSession(Protocol):
    """One conversation, local or remote, behind the same interface.

    The session writes the ElevenLabs event vocabulary (`user_transcript`, `agent_response`,
    `audio`, `interruption`, ...) to the event sink it was built with and plays through the
    shared speaker. The device loop never knows which kind it talks to.
    """

    @property
    def busy(self) -> bool:
        """True while the agent is thinking or speaking (fast headless runs pause input)."""
        ...

    async def start(self) -> None:
        """Connect / prepare and speak the first message if there is one."""
        ...

    def push_audio(self, frame: Pcm16) -> None:
        """Every microphone frame while the session runs (a remote agent streams them)."""
        ...

    async def speech_started(self, t: float) -> None:
        """The device VAD heard the user start speaking (barge-in for a local agent)."""
        ...

    async def utterance(self, utterance: UtteranceEnded) -> None:
        """The device endpointer closed a user turn (a local agent answers it)."""
        ...

    async def end(self, reason: str) -> None:
        """Finish what is being said, then close. Idempotent."""
        ...

    async def closed(self) -> str:
        """Wait until the session has closed; returns the reason."""
        ...
