"""The local agent's conversation flow, as the ElevenLabs platform defines it. Pure.

`ConversationMachine.handle(event, now) -> list[Effect]` reproduces on the device: the first
message, turn timeout re-prompts and silence end-call, the soft-timeout filler (once per
turn, only while no reply text has come), interruptions with transcript truncation, system
tools (end_call, skip_turn, language_detection), device tools and max duration. Workers (STT,
LLM, TTS, playback) live in the runtime; they report back with the events below.

Where the seeds are silent (see ARCHITECTURE.md):
- `agent_response` carries the complete reply text, so it is emitted once the reply text is
  complete *and* its first audio plays (normally the LLM finishes during the first chunk).
- With `silence_end_call_timeout` off (-1), the session ends after `max_reprompts` turn
  timeouts in a row without an answer, so a device on a shelf never talks to an empty room.
- User speech while the reply is still being generated (nothing audible yet) cancels it
  silently: the user was not done talking.
- Multi-voice markup (`core/voice_tags.py`) never reaches `agent_response` or the history;
  when a labelled voice speaks, `agent_response` carries `multivoice_message.parts`.
- A reply cut by the device's bounds (`core/reply_guard.py`) arrives as a `ReplyGenerated`
  holding only what is spoken, with its `Truncation`: `reply_truncated` is emitted, the
  history keeps the spoken text.
- LLM failures are spoken (`WorkFailed` with stage `llm` and the turn): every failure emits
  `error` (the adapter's code, stage `llm`, and `recovery`). When nothing of the generation
  was queued for speech, the failure is retryable and came within `llm_retry_window_s` of the
  request (a 20 s hang is not waited for twice), the same request is sent again, once
  (`recovery: retry`). Otherwise the user hears what was already queued, then the short
  apology in the conversation's language (`llm_failure_messages`; `recovery: apology`),
  which the history keeps too, and the agent listens again. A failed turn-timeout re-prompt
  is not apologised for (nobody asked anything): it listens again (`recovery: listen`).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, assert_never

# re-exported: each machine's effects and events read as one vocabulary
from appliance.core.common import ArmTimer as ArmTimer
from appliance.core.common import CancelTimer as CancelTimer
from appliance.core.common import Emit as Emit
from appliance.core.common import Event, Timer
from appliance.core.common import TimerFired as TimerFired
from appliance.core.history import ConversationHistory
from appliance.core.reply_guard import Truncation
from appliance.core.system_tools import SystemTool, system_tool_result
from appliance.core.voice_tags import Segment, strip_markup

TURN_TIMEOUT = Timer.TURN_TIMEOUT
SOFT_TIMEOUT = Timer.SOFT_TIMEOUT
SILENCE_END_CALL = Timer.SILENCE_END_CALL
MAX_DURATION = Timer.MAX_DURATION

LLM_FAILURE_MESSAGES: Mapping[str, str] = {
    "en": "Sorry, I can't answer right now. Please try again.",
    "de": "Entschuldigung, ich kann gerade nicht antworten. Bitte versuche es noch einmal.",
    "fr": "Désolé, je ne peux pas répondre pour le moment. Réessaie, s'il te plaît.",
    "es": "Lo siento, ahora mismo no puedo responder. Inténtalo de nuevo, por favor.",
    "it": "Mi dispiace, in questo momento non riesco a rispondere. Riprova, per favore.",
    "pt": "Desculpe, não consigo responder agora. Tente novamente, por favor.",
    "nl": "Sorry, ik kan nu even niet antwoorden. Probeer het nog eens.",
}
"""What the agent says when its LLM fails, per language (`appliance.local.llm_failure_message`)."""

REPROMPT_NOTE = (
    "The user has not said anything for {seconds:g} seconds. In one short sentence, check "
    "whether they are still there or need more time. Do not repeat your previous answer."
)


class Phase(StrEnum):
    STARTING = "starting"
    LISTENING = "listening"
    TRANSCRIBING = "transcribing"
    THINKING = "thinking"
    SPEAKING = "speaking"
    ENDING = "ending"
    ENDED = "ended"


class OutputKind(StrEnum):
    FIRST_MESSAGE = "first_message"
    REPLY = "reply"
    FILLER = "soft_timeout_filler"
    FAREWELL = "farewell"
    REPROMPT = "reprompt"
    APOLOGY = "llm_failure_apology"


@dataclass(frozen=True)
class ConversationSettings:
    system_prompt: str = ""
    first_message: str = ""
    turn_timeout_s: float = 7.0
    silence_end_call_timeout_s: float | None = None
    soft_timeout_s: float | None = None
    soft_timeout_message: str = "Hhmmmm...yeah."
    soft_timeout_use_llm: bool = False
    interruptions_enabled: bool = True
    disable_first_message_interruptions: bool = False
    max_duration_s: float | None = 600.0
    max_reprompts: int = 2
    max_tool_rounds: int = 3
    history_budget_tokens: int = 1024
    language: str = "en"
    system_tool_names: frozenset[str] = frozenset()
    device_tool_names: frozenset[str] = frozenset()
    tools: tuple[dict[str, Any], ...] = ()
    """OpenAI function schemas offered to the LLM (system tools first)."""
    voice_labels: frozenset[str] = frozenset()
    """Multi-voice labels (`tts.supported_voices`): their `<Label>` markup is removed from
    `agent_response` and the history and kept as `multivoice_message.parts`."""
    llm_failure_messages: Mapping[str, str] = field(default_factory=lambda: dict(LLM_FAILURE_MESSAGES))
    """The apology spoken when the LLM fails, per language code (`en`, `de`, ...; `en` is the
    fallback for a language without one)."""
    uninterruptible_tools: frozenset[str] = frozenset()
    """Tools with `disable_interruptions`: once the LLM calls one, the rest of the turn (the
    tool and the reply after it) cannot be interrupted."""
    language_prompts: Mapping[str, str] = field(default_factory=dict)
    """The system prompt per language (`language_presets.<lang>.overrides.agent.prompt.prompt`,
    rendered): it replaces the prompt after `language_detection` switches to that language."""
    llm_retries: int = 1
    """Retries of a failed generation of which nothing was spoken yet."""
    llm_retry_window_s: float = 10.0
    """A failure later than this after its request is not retried (the user waited enough)."""


@dataclass(frozen=True)
class ToolCall:
    """One complete tool call (the LLM's, or the remote server's); `ports.ToolCallRequest` too."""

    id: str
    name: str
    arguments: dict[str, Any]
    raw_arguments: str = ""
    """The arguments as the model sent them (for the history); `arguments` is {} if unparsable."""


# ------------------------------------------------------------------ events (facts)
@dataclass(frozen=True)
class Started:
    pass


@dataclass(frozen=True)
class UserSpeechStarted:
    pass


@dataclass(frozen=True)
class UserUtterance:
    audio: bytes = field(repr=False)
    duration_s: float


@dataclass(frozen=True)
class Transcribed:
    turn: int
    text: str
    language: str


@dataclass(frozen=True)
class ReplyTextStarted:
    turn: int


@dataclass(frozen=True)
class ReplyGenerated:
    turn: int
    text: str
    tool_calls: tuple[ToolCall, ...] = ()
    truncated: Truncation | None = None
    """The device's bounds cut the reply: `text` is what is spoken, up to the cut."""


@dataclass(frozen=True)
class OutputStarted:
    turn: int


@dataclass(frozen=True)
class OutputFinished:
    turn: int
    spoken_text: str
    interrupted: bool = False
    queued_text: str = ""
    """Everything that was queued to be said in this turn (the original, when interrupted)."""


@dataclass(frozen=True)
class ToolFinished:
    turn: int
    call: ToolCall
    result: str
    is_error: bool = False


@dataclass(frozen=True)
class EndRequested:
    reason: str
    immediate: bool = False
    """True: stop speaking at once and close (a stop button, mute) instead of finishing."""


@dataclass(frozen=True)
class WorkFailed:
    stage: str
    code: str
    message: str
    turn: int | None = None
    """The turn whose work failed (stage `llm`: retried or apologised for; None: the session ends)."""
    retryable: bool = True
    spoken_text: str = ""
    """Stage `llm`: the text of this generation already queued for speech (it will be heard)."""


@dataclass(frozen=True)
class UserText:
    """A typed user message (`user_message`): answered like a transcribed turn, when listening."""

    text: str


@dataclass(frozen=True)
class ContextAdded:
    """A contextual update: background for the LLM, never spoken, no reply of its own."""

    text: str


@dataclass(frozen=True)
class UserActivity:
    """The user is there (`appliance send user_activity`): a listening agent's turn timeout
    starts again, so it does not re-prompt someone who is, say, reading."""


@dataclass(frozen=True)
class Feedback:
    """The user's like / dislike of the conversation, recorded as a `feedback` event."""

    like: bool


ConversationEvent = (
    Started
    | UserSpeechStarted
    | UserUtterance
    | Transcribed
    | ReplyTextStarted
    | ReplyGenerated
    | OutputStarted
    | OutputFinished
    | ToolFinished
    | TimerFired
    | EndRequested
    | WorkFailed
    | UserText
    | ContextAdded
    | UserActivity
    | Feedback
)


# ------------------------------------------------------------------ effects (requests)
@dataclass(frozen=True)
class Transcribe:
    turn: int
    audio: bytes = field(repr=False)
    language: str | None = None


@dataclass(frozen=True)
class GenerateReply:
    turn: int
    messages: tuple[dict[str, Any], ...]
    tools: tuple[dict[str, Any], ...]
    kind: OutputKind = OutputKind.REPLY


@dataclass(frozen=True)
class Say:
    turn: int
    text: str
    kind: OutputKind


@dataclass(frozen=True)
class SayFiller:
    """Speak a filler now: LLM-generated from `context` if asked and possible, else `fallback`."""

    turn: int
    fallback: str
    context: tuple[dict[str, Any], ...] | None


@dataclass(frozen=True)
class SealOutput:
    """Nothing more will be queued for this turn: report OutputFinished once it has played."""

    turn: int


@dataclass(frozen=True)
class CancelOutput:
    """Stop playback within one block, cancel generation and synthesis, report OutputFinished."""

    turn: int


@dataclass(frozen=True)
class RunTool:
    turn: int
    call: ToolCall


@dataclass(frozen=True)
class SwitchLanguage:
    language: str


@dataclass(frozen=True)
class Close:
    reason: str


Effect = (
    Emit
    | Transcribe
    | GenerateReply
    | Say
    | SayFiller
    | SealOutput
    | CancelOutput
    | RunTool
    | SwitchLanguage
    | ArmTimer
    | CancelTimer
    | Close
)


@dataclass
class _Turn:
    id: int
    kind: OutputKind
    interruptible: bool = True
    reply_text: str | None = None
    reply_started: bool = False
    audio_started: bool = False
    response_emitted: bool = False
    filler_used: bool = False
    tool_rounds: int = 0
    end_after: str | None = None
    skip: bool = False
    spoken_parts: list[str] = field(default_factory=list)
    voice_parts: list[Segment] = field(default_factory=list)
    request: GenerateReply | None = None
    """The last generation asked for (resent on a retry)."""
    requested_at: float = 0.0
    llm_retries: int = 0


@dataclass
class ConversationMachine:
    settings: ConversationSettings
    phase: Phase = Phase.STARTING
    language: str = ""
    history: ConversationHistory = field(init=False)
    _turn: _Turn | None = None
    _next_turn: int = 0
    _reprompts: int = 0
    _started_at: float = 0.0
    _closing_reason: str | None = None
    _pending_texts: list[str] = field(default_factory=list)
    _heard_language: str = ""

    def __post_init__(self) -> None:
        self.history = ConversationHistory(self.settings.system_prompt, self.settings.history_budget_tokens)
        self.language = self.settings.language

    # ------------------------------------------------------------ helpers
    def _new_turn(self, kind: OutputKind, interruptible: bool = True) -> _Turn:
        self._next_turn += 1
        self._turn = _Turn(self._next_turn, kind, interruptible)
        return self._turn

    def _current(self, turn: int) -> _Turn | None:
        return self._turn if self._turn is not None and self._turn.id == turn else None

    def _t(self, now: float) -> float:
        return round(now - self._started_at, 3)

    def _generate(self, turn: _Turn, now: float, extra: list[dict[str, Any]] | None = None) -> GenerateReply:
        messages = self.history.messages() + (extra or [])
        turn.request = GenerateReply(turn.id, tuple(messages), self.settings.tools, turn.kind)
        turn.requested_at = now
        return turn.request

    def preview_reply(self, transcript: str) -> GenerateReply | None:
        """The reply request a turn with this transcript would make now, without changing any
        state (a speculative reply generates it while the end decision is pending); None when
        the conversation is not waiting for the user or there are no words."""
        text = transcript.strip()
        if self.phase is not Phase.LISTENING or not text or self._closing_reason is not None:
            return None
        history = copy.deepcopy(self.history)
        history.add_user(text)
        messages = tuple(history.messages())
        return GenerateReply(self._next_turn + 1, messages, self.settings.tools, OutputKind.REPLY)

    def _listen(self, now: float, *, arm_turn_timeout: bool) -> list[Effect]:
        self.phase = Phase.LISTENING
        self._turn = None
        if self._pending_texts and self._closing_reason is None:
            return self._text_turn(self._pending_texts.pop(0), now)
        if arm_turn_timeout:
            return [ArmTimer(TURN_TIMEOUT, now + self.settings.turn_timeout_s)]
        return []

    def _close(self, reason: str) -> list[Effect]:
        self.phase = Phase.ENDED
        return [
            CancelTimer(TURN_TIMEOUT),
            CancelTimer(SOFT_TIMEOUT),
            CancelTimer(SILENCE_END_CALL),
            CancelTimer(MAX_DURATION),
            Close(reason),
        ]

    # ------------------------------------------------------------ entry point
    def handle(self, event: ConversationEvent, now: float) -> list[Effect]:
        if self.phase is Phase.ENDED:
            return []
        match event:
            case Started():
                return self._on_started(now)
            case UserSpeechStarted():
                return self._on_user_speech(now)
            case UserUtterance():
                return self._on_utterance(event, now)
            case Transcribed():
                return self._on_transcribed(event, now)
            case ReplyTextStarted():
                turn = self._current(event.turn)
                if turn is None:
                    return []
                turn.reply_started = True
                return [CancelTimer(SOFT_TIMEOUT)]
            case ReplyGenerated():
                return self._on_reply(event, now)
            case OutputStarted():
                return self._on_output_started(event, now)
            case OutputFinished():
                return self._on_output_finished(event, now)
            case ToolFinished():
                return self._on_tool_finished(event, now)
            case TimerFired():
                return self._on_timer(event, now)
            case EndRequested():
                return self._on_end_requested(event)
            case WorkFailed():
                if event.stage == "llm" and event.turn is not None:
                    return self._on_llm_failed(event, now)
                return [
                    Emit(Event.ERROR, {"code": event.code, "message": event.message, "stage": event.stage}),
                    *self._close("error"),
                ]
            case UserText():
                return self._on_user_text(event, now)
            case ContextAdded():
                self.history.add_context(event.text, t=self._t(now))
                return [Emit(Event.CONTEXTUAL_UPDATE, {"text": event.text})]
            case UserActivity():
                if self.phase is not Phase.LISTENING:
                    return []  # no turn timeout runs while the agent works or speaks
                return [ArmTimer(TURN_TIMEOUT, now + self.settings.turn_timeout_s)]
            case Feedback():
                return [Emit("feedback", {"score": "like" if event.like else "dislike"})]
            case _:
                assert_never(event)

    # ------------------------------------------------------------ handlers
    def _on_started(self, now: float) -> list[Effect]:
        self._started_at = now
        s = self.settings
        effects: list[Effect] = []
        if s.max_duration_s:
            effects.append(ArmTimer(MAX_DURATION, now + s.max_duration_s))
        if s.silence_end_call_timeout_s:
            effects.append(ArmTimer(SILENCE_END_CALL, now + s.silence_end_call_timeout_s))
        if s.first_message:
            turn = self._new_turn(
                OutputKind.FIRST_MESSAGE,
                interruptible=s.interruptions_enabled and not s.disable_first_message_interruptions,
            )
            turn.reply_text = self._unmarked(turn, s.first_message)
            # the LLM sees it as the platform's does (the user may answer its question)
            self.history.add_agent(turn.reply_text, t=self._t(now))
            self.phase = Phase.SPEAKING
            effects += [Say(turn.id, s.first_message, OutputKind.FIRST_MESSAGE), SealOutput(turn.id)]
        else:
            effects += self._listen(now, arm_turn_timeout=False)
        return effects

    def _on_user_speech(self, now: float) -> list[Effect]:
        effects: list[Effect] = [CancelTimer(TURN_TIMEOUT)]
        self._reprompts = 0
        if self.settings.silence_end_call_timeout_s:
            effects.append(ArmTimer(SILENCE_END_CALL, now + self.settings.silence_end_call_timeout_s))
        turn = self._turn
        if turn is None or self.phase is Phase.ENDING:
            return effects
        if self.phase is Phase.SPEAKING and turn.audio_started:
            if turn.interruptible and self.settings.interruptions_enabled:
                effects.append(CancelOutput(turn.id))
            return effects
        not_audible_yet = self.phase in (Phase.THINKING, Phase.TRANSCRIBING) or (
            self.phase is Phase.SPEAKING and not turn.audio_started
        )
        if (
            not_audible_yet
            and turn.interruptible
            and self.settings.interruptions_enabled
            and turn.end_after is None
        ):
            # The user was not done talking: drop the pending reply.
            effects += [CancelOutput(turn.id), CancelTimer(SOFT_TIMEOUT)]
        return effects

    def _on_user_text(self, event: UserText, now: float) -> list[Effect]:
        text = event.text.strip()
        if not text or self.phase is Phase.ENDING or self._closing_reason is not None:
            return []
        if self.phase is not Phase.LISTENING:
            self._pending_texts.append(text)  # answered when the agent is listening again
            return []
        return self._text_turn(text, now)

    def _text_turn(self, text: str, now: float) -> list[Effect]:
        turn = self._new_turn(OutputKind.REPLY)
        self._reprompts = 0
        self.history.add_user(text, t=self._t(now))
        self.phase = Phase.THINKING
        effects: list[Effect] = [CancelTimer(TURN_TIMEOUT)]
        if self.settings.silence_end_call_timeout_s:
            effects.append(ArmTimer(SILENCE_END_CALL, now + self.settings.silence_end_call_timeout_s))
        if self.settings.soft_timeout_s is not None:
            effects.append(ArmTimer(SOFT_TIMEOUT, now + self.settings.soft_timeout_s))
        return [*effects, Emit(Event.USER_MESSAGE, {"text": text}), self._generate(turn, now)]

    def _on_utterance(self, event: UserUtterance, now: float) -> list[Effect]:
        if self.phase is Phase.ENDING:
            return []
        if self.phase is Phase.SPEAKING and self._turn is not None:
            # Speech while the agent was talking and could not be interrupted: ignored.
            return []
        turn = self._new_turn(OutputKind.REPLY)
        self.phase = Phase.TRANSCRIBING
        effects: list[Effect] = [CancelTimer(TURN_TIMEOUT)]
        if self.settings.soft_timeout_s is not None:
            effects.append(ArmTimer(SOFT_TIMEOUT, now + self.settings.soft_timeout_s))
        effects.append(Transcribe(turn.id, event.audio, None if self.language == "auto" else self.language))
        return effects

    def _on_transcribed(self, event: Transcribed, now: float) -> list[Effect]:
        turn = self._current(event.turn)
        if turn is None:
            return []
        text = event.text.strip()
        if not text:
            # Nothing intelligible: listen again without answering.
            return [CancelTimer(SOFT_TIMEOUT), *self._listen(now, arm_turn_timeout=True)]
        self.history.add_user(text, t=self._t(now))
        self._heard_language = event.language
        self.phase = Phase.THINKING
        return [
            Emit(Event.USER_TRANSCRIPT, {"user_transcript": text, "language": event.language}),
            self._generate(turn, now),
        ]

    def _on_reply(self, event: ReplyGenerated, now: float) -> list[Effect]:
        turn = self._current(event.turn)
        if turn is None:
            return []
        text = self._unmarked(turn, event.text)
        turn.reply_text = (turn.reply_text + " " if turn.reply_text else "") + text
        turn.reply_text = turn.reply_text.strip()
        effects: list[Effect] = [CancelTimer(SOFT_TIMEOUT)]
        if event.truncated is not None:
            effects.append(Emit("reply_truncated", event.truncated.event_fields()))
        if not event.tool_calls:
            if text:
                self.history.add_agent(text, t=self._t(now))
            self.phase = Phase.SPEAKING
            return [*effects, *self._maybe_emit_response(turn), SealOutput(turn.id)]
        if text:
            self.history.add_agent(text, t=self._t(now))
        continue_generation = False
        for call in event.tool_calls:
            if call.name in self.settings.uninterruptible_tools:
                turn.interruptible = False
            tool_type = "system" if call.name in self.settings.system_tool_names else "client"
            self.history.add_tool_call(
                call.id, call.name, call.raw_arguments or json.dumps(call.arguments), tool_type=tool_type
            )
            if call.name == "end_call" and "end_call" in self.settings.system_tool_names:
                effects += self._system_tool(call, SystemTool.END_CALL)
                farewell = str(call.arguments.get("message") or "").strip()
                if farewell:
                    effects.append(Say(turn.id, farewell, OutputKind.FAREWELL))
                    farewell = self._unmarked(turn, farewell)
                    self.history.add_agent(farewell, t=self._t(now))
                    turn.reply_text = (turn.reply_text + " " + farewell).strip()
                turn.end_after = "end_call"
            elif call.name == "skip_turn" and "skip_turn" in self.settings.system_tool_names:
                effects += self._system_tool(call, SystemTool.SKIP_TURN)
                turn.skip = True
            elif (
                call.name == "language_detection" and "language_detection" in self.settings.system_tool_names
            ):
                language = str(call.arguments.get("language") or "").strip()
                effects += self._system_tool(call, SystemTool.LANGUAGE_DETECTION)
                if language:
                    self.language = language
                    prompt = _for_language(self.settings.language_prompts, language)
                    if prompt is not None:
                        self.history.system_prompt = prompt
                    effects.append(SwitchLanguage(language))
                    effects.append(Emit("language_switched", {"language": language}))
                continue_generation = True
            elif call.name in self.settings.device_tool_names:
                effects.append(RunTool(turn.id, call))
                turn.tool_rounds += 1
                self.phase = Phase.THINKING
                return effects
            else:
                self.history.add_tool_result(call.id, call.name, f"error: unknown tool '{call.name}'")
                effects.append(
                    Emit(Event.AGENT_TOOL_RESPONSE, self._tool_response(call, "unknown", is_error=True))
                )
                continue_generation = True
        if continue_generation and turn.end_after is None and not turn.skip:
            turn.tool_rounds += 1
            if turn.tool_rounds <= self.settings.max_tool_rounds:
                self.phase = Phase.THINKING
                effects.append(self._generate(turn, now))
                return effects
        self.phase = Phase.ENDING if turn.end_after else Phase.SPEAKING
        return [*effects, *self._maybe_emit_response(turn), SealOutput(turn.id)]

    def _system_tool(self, call: ToolCall, tool: SystemTool) -> list[Effect]:
        result = system_tool_result(tool, call.arguments)
        self.history.add_tool_result(call.id, call.name, json.dumps(result), result=result)
        return [Emit(Event.AGENT_TOOL_RESPONSE, self._tool_response(call, "system", is_error=False))]

    @staticmethod
    def _tool_response(call: ToolCall, tool_type: str, *, is_error: bool) -> dict[str, Any]:
        return {"tool_name": call.name, "tool_call_id": call.id, "tool_type": tool_type, "is_error": is_error}

    def _on_tool_finished(self, event: ToolFinished, now: float) -> list[Effect]:
        turn = self._current(event.turn)
        if turn is None:
            return []
        self.history.add_tool_result(event.call.id, event.call.name, event.result, is_error=event.is_error)
        effects: list[Effect] = [
            Emit(
                Event.AGENT_TOOL_RESPONSE, self._tool_response(event.call, "client", is_error=event.is_error)
            )
        ]
        if turn.tool_rounds > self.settings.max_tool_rounds:
            self.phase = Phase.SPEAKING
            return [*effects, *self._maybe_emit_response(turn), SealOutput(turn.id)]
        self.phase = Phase.THINKING
        effects.append(self._generate(turn, now))
        return effects

    def _on_llm_failed(self, event: WorkFailed, now: float) -> list[Effect]:
        turn = self._current(event.turn) if event.turn is not None else None
        if turn is None or self.phase is not Phase.THINKING:
            return []  # a turn already dropped (the user spoke again): nothing to recover
        s = self.settings
        spoken = event.spoken_text.strip()
        fields = {"code": event.code, "message": event.message, "stage": "llm"}
        if (
            not spoken
            and event.retryable
            and turn.request is not None
            and turn.llm_retries < s.llm_retries
            and now - turn.requested_at <= s.llm_retry_window_s
            and self._closing_reason is None
        ):
            turn.llm_retries += 1
            turn.requested_at = now
            return [Emit(Event.ERROR, {**fields, "recovery": "retry"}), turn.request]
        effects: list[Effect] = [CancelTimer(SOFT_TIMEOUT)]
        if spoken:
            text = self._unmarked(turn, spoken)
            self.history.add_agent(text, t=self._t(now))
            turn.reply_text = f"{turn.reply_text or ''} {text}".strip()
        elif turn.kind is OutputKind.REPROMPT:
            # Nobody asked anything: no apology to an empty room, the silence count goes on.
            effects.insert(0, Emit(Event.ERROR, {**fields, "recovery": "listen"}))
            if self._closing_reason is not None:
                return effects + self._close(self._closing_reason)
            return effects + self._listen(now, arm_turn_timeout=True)
        apology = self._failure_message()
        self.history.add_agent(apology, t=self._t(now))
        turn.reply_text = f"{turn.reply_text or ''} {self._unmarked(turn, apology)}".strip()
        self.phase = Phase.SPEAKING
        return [
            Emit(Event.ERROR, {**fields, "recovery": "apology"}),
            *effects,
            Say(turn.id, apology, OutputKind.APOLOGY),
            *self._maybe_emit_response(turn),
            SealOutput(turn.id),
        ]

    def _failure_message(self) -> str:
        """The apology in the conversation's language (the one heard last when it is `auto`)."""
        language = (self._heard_language if self.language == "auto" else self.language).lower()
        messages = {k.lower(): v for k, v in self.settings.llm_failure_messages.items()}
        for key in (language, language.replace("_", "-").split("-")[0], "en"):
            if messages.get(key):
                return messages[key]
        return LLM_FAILURE_MESSAGES["en"]

    def _maybe_emit_response(self, turn: _Turn) -> list[Effect]:
        if turn.response_emitted or not turn.audio_started or not turn.reply_text:
            return []
        if turn.kind in (OutputKind.REPLY, OutputKind.REPROMPT) and self.phase is Phase.THINKING:
            return []
        turn.response_emitted = True
        fields: dict[str, Any] = {"agent_response": turn.reply_text, "kind": turn.kind.value}
        if any(part.voice is not None for part in turn.voice_parts):
            parts = [{"text": part.text, "voice_label": part.voice} for part in turn.voice_parts]
            fields["multivoice_message"] = {"parts": parts}
        return [Emit(Event.AGENT_RESPONSE, fields)]

    def _unmarked(self, turn: _Turn, text: str) -> str:
        """`text` without multi-voice markup; its voice parts are added to the turn's."""
        plain, parts = strip_markup(text, self.settings.voice_labels)
        for part in parts:
            last = turn.voice_parts[-1] if turn.voice_parts else None
            if last is not None and last.voice == part.voice:
                turn.voice_parts[-1] = Segment(part.voice, f"{last.text} {part.text}")
            else:
                turn.voice_parts.append(part)
        return plain

    def _on_output_started(self, event: OutputStarted, now: float) -> list[Effect]:
        turn = self._current(event.turn)
        if turn is None or turn.audio_started:
            return []
        turn.audio_started = True
        if self.phase is Phase.THINKING and turn.reply_text is None:
            # The first audio of a turn whose reply is still streaming (or a filler).
            return []
        return self._maybe_emit_response(turn)

    def _on_output_finished(self, event: OutputFinished, now: float) -> list[Effect]:
        turn = self._current(event.turn)
        if turn is None:
            return []
        effects: list[Effect] = []
        if event.interrupted:
            original = (turn.reply_text or event.queued_text).strip()
            spoken = event.spoken_text.strip()
            if turn.audio_started:
                effects.append(Emit(Event.INTERRUPTION, {"reason": "user_speech"}))
                if original and spoken != original:
                    effects.append(
                        Emit(
                            "agent_response_correction",
                            {"original_agent_response": original, "corrected_agent_response": spoken},
                        )
                    )
            self._keep_only_spoken(turn, spoken, original, now)
            effects += [CancelTimer(SOFT_TIMEOUT)]
            if turn.end_after:
                return effects + self._close(turn.end_after)
            return effects + self._listen(now, arm_turn_timeout=False)
        if not turn.response_emitted and turn.reply_text and turn.audio_started:
            effects += self._maybe_emit_response(turn)
        if turn.end_after:
            return effects + self._close(turn.end_after)
        if self._closing_reason is not None:
            return effects + self._close(self._closing_reason)
        return effects + self._listen(now, arm_turn_timeout=not turn.skip)

    def _keep_only_spoken(self, turn: _Turn, spoken: str, original: str, now: float) -> None:
        """After an interruption the history holds what the user heard, nothing more."""
        if turn.reply_text is not None and turn.kind is not OutputKind.FILLER:
            self.history.replace_last_agent(spoken)
        elif spoken:
            self.history.add_agent(spoken, interrupted=True, original=original, t=self._t(now))

    def _on_timer(self, event: TimerFired, now: float) -> list[Effect]:
        s = self.settings
        if event.name == MAX_DURATION:
            return self._end_now("max_duration")
        if event.name == SILENCE_END_CALL:
            return self._end_now("silence_end_call_timeout")
        if event.name == SOFT_TIMEOUT:
            turn = self._turn
            if (
                turn is None
                or turn.filler_used
                or turn.reply_started
                or self.phase
                not in (
                    Phase.TRANSCRIBING,
                    Phase.THINKING,
                )
            ):
                return []
            turn.filler_used = True
            context = tuple(self.history.recent_context()) if s.soft_timeout_use_llm else None
            return [SayFiller(turn.id, s.soft_timeout_message, context)]
        if event.name == TURN_TIMEOUT:
            if self.phase is not Phase.LISTENING:
                return []
            if s.silence_end_call_timeout_s is None and self._reprompts >= s.max_reprompts:
                return self._close("silence")
            self._reprompts += 1
            turn = self._new_turn(OutputKind.REPROMPT)
            self.phase = Phase.THINKING
            note = {"role": "system", "content": REPROMPT_NOTE.format(seconds=s.turn_timeout_s)}
            return [Emit("turn_timeout", {"reprompt": self._reprompts}), self._generate(turn, now, [note])]
        return []

    def _end_now(self, reason: str) -> list[Effect]:
        effects: list[Effect] = []
        if self._turn is not None and self.phase in (Phase.SPEAKING, Phase.THINKING, Phase.TRANSCRIBING):
            effects.append(CancelOutput(self._turn.id))
        return effects + self._close(reason)

    def _on_end_requested(self, event: EndRequested) -> list[Effect]:
        if event.immediate:
            return self._end_now(event.reason)
        if self._turn is None or self.phase in (Phase.LISTENING, Phase.STARTING):
            return self._close(event.reason)
        # Finish what is being said (or about to be), then close.
        self._closing_reason = event.reason
        return []


def _for_language(by_language: Mapping[str, str], language: str) -> str | None:
    """The entry for `language` ("de-DE" falls back to "de"), or None."""
    tag = language.strip().replace("_", "-")
    for key in (tag, tag.lower(), tag.split("-")[0].lower()):
        if key in by_language:
            return by_language[key]
    return None
