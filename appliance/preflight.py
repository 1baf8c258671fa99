"""Checks of a valid configuration against what a local session will actually do.

`appliance check-config`, `appliance doctor`, `appliance run` (before any model loads) and a
SIGHUP reload all call `preflight`, so they agree with each other and with a session:

- **Variables**, per wake word: the variables are those `session_variables` gives that wake
  word, and the templates are the ones `conversation_settings` renders (the system prompt and
  the first message), checked with `core.variables.unresolved`, which uses `render`'s own
  reference syntax. An undefined `{{var}}`, a `{{secret__x}}` (secrets go only into tool
  headers), and a variable that only some wake words define are problems.
- **Context**: the system prompt the session sends (with the tool and voice instructions the
  device adds) must leave room in the llama.cpp context (`appliance.local.llm.n_ctx`) for a
  user turn and a reply. Tokens are counted with the model's own tokenizer where it is cheap
  (`llama_cpp.Llama(vocab_only=True)` reads only the vocabulary); without it a conservative
  estimate is used and an overflow is a warning, not a problem.

Only a configuration that runs the local agent (mode `local` or `auto`) is checked; the context
only with the llama.cpp backend (a custom LLM's context is its server's business).
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import io
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from appliance.config import Config, device_secret_problems, load_config
from appliance.core import variables as dv
from appliance.core.history import ESTIMATE_CHARS_PER_TOKEN, MESSAGE_OVERHEAD_TOKENS, MIN_REPLY_TOKENS
from appliance.errors import ApplianceError, ConfigError

_LOGGER = logging.getLogger(__name__)

PROMPT_PATH = "conversation_config.agent.prompt.prompt"
FIRST_MESSAGE_PATH = "conversation_config.agent.first_message"
PLACEHOLDERS_PATH = "conversation_config.agent.dynamic_variables.dynamic_variable_placeholders"
N_CTX_PATH = "appliance.local.llm.n_ctx"
HISTORY_PATH = "appliance.local.llm.history_tokens"

MIN_TURN_TOKENS = 64
"""Room kept for the user's turn next to the system prompt (a long spoken sentence)."""


@dataclass(frozen=True)
class TokenCounter:
    count: Callable[[str], int]
    how: str
    """How the tokens were counted, for messages."""
    exact: bool


def estimate_counter(reason: str = "") -> TokenCounter:
    def count(text: str) -> int:
        return -(-len(text) // ESTIMATE_CHARS_PER_TOKEN)

    why = f"; the model's tokenizer is not available: {reason}" if reason else ""
    return TokenCounter(count, f"estimated at {ESTIMATE_CHARS_PER_TOKEN} characters per token{why}", False)


_tokenizer_lock = threading.Lock()
_tokenizer_cache: dict[tuple[str, int, int], Any] = {}


def _vocab(path: Path) -> Any:
    """The model's vocabulary only (no weights); the last one is kept for reloads."""
    import llama_cpp

    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    with _tokenizer_lock:
        vocab = _tokenizer_cache.get(key)
        if vocab is None:
            # Without weights llama.cpp warns that n_ctx exceeds the (unknown) training context,
            # through a Python callback that prints to sys.stderr: not for the user's eyes.
            with contextlib.redirect_stderr(io.StringIO()):
                vocab = llama_cpp.Llama(model_path=str(path), vocab_only=True, verbose=False)
            _close_vocabs()
            _tokenizer_cache[key] = vocab
        return vocab


def _close_vocabs() -> None:
    """Free the cached vocabularies while llama.cpp's module is intact (at interpreter exit its
    globals are gone before the objects' finalizers run, which then fail noisily)."""
    for vocab in _tokenizer_cache.values():
        with contextlib.suppress(Exception):
            vocab.close()
    _tokenizer_cache.clear()


def model_token_counter(config: Config) -> TokenCounter:
    """The configured llama.cpp model's tokenizer, else a conservative estimate (and why)."""
    from appliance.runtime.local_agent import _model_file

    ref = config.appliance.local.llm.model
    try:
        path = _model_file(config, ref, ".gguf")
        vocab = _vocab(path)
    except ImportError:
        return estimate_counter("llama-cpp-python is not installed")
    except (ApplianceError, OSError) as err:
        return estimate_counter(f"model {ref!r} is not installed ({type(err).__name__})")
    except (ValueError, RuntimeError) as err:  # llama.cpp could not read the file
        return estimate_counter(f"model {ref!r} cannot be read ({str(err)[:80]})")

    def count(text: str) -> int:
        return len(vocab.tokenize(text.encode("utf-8"), add_bos=False, special=True))

    return TokenCounter(count, f"counted with the tokenizer of {ref}", True)


def _uses_local_agent(config: Config) -> bool:
    return config.uses_local_agent  # mode local or auto, of the main agent or a word's own


def _uses_llama_cpp(config: Config) -> bool:
    return config.llm_backend == "llama_cpp"  # the one LLM selection (appliance.config.select_llm)


def _names(words: list[str]) -> str:
    return ", ".join(repr(w) for w in words)


def _session_variables(config: Config, wake_word: str) -> dict[str, dv.VariableValue]:
    from appliance.runtime.local_agent import session_variables

    return session_variables(config, wake_word, "local_preflight", datetime.now(UTC))


def variable_problems(config: Config) -> list[str]:
    """Every variable a session of some wake word could not render, one line each."""
    if not _uses_local_agent(config):
        return []
    agent = config.conversation_config.agent
    templates = [(PROMPT_PATH, agent.prompt.prompt or ""), (FIRST_MESSAGE_PATH, agent.first_message or "")]
    words = config.appliance.wake_words.words
    lacking: dict[tuple[str, str], list[str]] = {}
    secrets: set[tuple[str, str]] = set()
    problems: list[str] = []
    system_names: set[str] = set()
    checked: list[str] = []  # the wake words whose variables could be built
    for word in words:
        try:
            variables = _session_variables(config, word.name)
        except (ValueError, ApplianceError) as err:
            problems.append(f"appliance.wake_words ({word.name!r}): {err}")
            continue
        checked.append(word.name)
        system_names |= {k for k in variables if k.startswith(dv.SYSTEM_PREFIX)}
        for path, template in templates:
            missing, secret = dv.unresolved(template, variables)
            for name in missing:
                lacking.setdefault((path, name), []).append(word.name)
            secrets.update((path, name) for name in secret)
    all_words = [w.name for w in words]
    for path, template in templates:  # in the order of the file
        for name in dv.references(template):
            ref = f"{{{{{name}}}}}"
            if (path, name) in secrets:
                where = "the system prompt" if path == PROMPT_PATH else "the first message"
                problems.append(
                    f"{path}: {ref} is a secret variable: secret__ variables may only be used in tool "
                    f"headers, never in {where} (it would reach the LLM and the logs)"
                )
            elif (without := lacking.get((path, name))) is None:
                continue
            elif name.startswith(dv.SYSTEM_PREFIX):
                known = ", ".join(sorted(system_names)) or "none"
                problems.append(f"{path}: {ref} is not a system variable the device sets ({known})")
            elif len(without) == len(checked):
                problems.append(
                    f"{path}: {ref} is not defined; give it a value in {PLACEHOLDERS_PATH} "
                    "or in the dynamic_variables of every wake word"
                )
            else:
                having = [w for w in checked if w not in without]
                indexes = ", ".join(f"appliance.wake_words.words[{all_words.index(w)}]" for w in without)
                problems.append(
                    f"{path}: {ref} is defined only by wake word(s) {_names(having)}; wake word(s) "
                    f"{_names(without)} lack it (add it to the dynamic_variables of {indexes}, or a "
                    f"default to {PLACEHOLDERS_PATH})"
                )
    return problems


def _system_prompts(config: Config) -> list[str]:
    """The system prompt each wake word's session would send (those that render)."""
    from appliance.runtime.local_agent import conversation_settings

    prompts: list[str] = []
    quiet = _Quiet()  # its warnings (unsupported system tools) are the session's to log, not ours
    logging.getLogger("appliance.runtime.local_agent").addFilter(quiet)
    try:
        for word in config.appliance.wake_words.words:
            try:
                variables = _session_variables(config, word.name)
                prompts.append(conversation_settings(config, variables).system_prompt)
            except (ValueError, ApplianceError):
                continue  # reported by variable_problems
    finally:
        logging.getLogger("appliance.runtime.local_agent").removeFilter(quiet)
    return prompts


class _Quiet(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("system tool ")


def context_checks(config: Config, counter: TokenCounter | None = None) -> tuple[list[str], list[str]]:
    """`(problems, warnings)`: does the system prompt fit the llama.cpp context with room to talk?"""
    if not (_uses_local_agent(config) and _uses_llama_cpp(config)):
        return [], []
    prompts = _system_prompts(config)
    if not prompts:
        return [], []
    counter = counter or estimate_counter()
    llm = config.appliance.local.llm
    # the chat template adds a few tokens per message (role markers) and the BOS token
    prompt_tokens = max(counter.count(p) for p in prompts) + MESSAGE_OVERHEAD_TOKENS + 1
    reserve = MIN_TURN_TOKENS + MIN_REPLY_TOKENS
    problems: list[str] = []
    warnings: list[str] = []
    if prompt_tokens + reserve > llm.n_ctx:
        line = (
            f"{PROMPT_PATH}: the system prompt the device sends is {prompt_tokens:,} tokens "
            f"({counter.how}) but {N_CTX_PATH} is {llm.n_ctx:,} and {reserve} are kept for the user's "
            f"turn ({MIN_TURN_TOKENS}) and the reply ({MIN_REPLY_TOKENS}): at most "
            f"{max(0, llm.n_ctx - reserve):,} prompt tokens fit; shorten the prompt or raise {N_CTX_PATH}"
        )
        line += _prompt_documents_note(config, counter)
        (problems if counter.exact else warnings).append(line)
    elif prompt_tokens + MIN_TURN_TOKENS > llm.history_tokens:
        warnings.append(
            f"{HISTORY_PATH}: {llm.history_tokens:,} tokens hold the system prompt ({prompt_tokens:,} "
            f"tokens, {counter.how}) but no earlier turns, so the agent forgets each turn; raise it "
            f"(it may be up to {N_CTX_PATH} {llm.n_ctx:,}; what is left of n_ctx is room for the reply)"
        )
    return problems, warnings


def _prompt_documents_note(config: Config, counter: TokenCounter) -> str:
    """Which `usage_mode: prompt` knowledge-base files take how much of that prompt."""
    from appliance.runtime.knowledge_base import prompt_documents

    try:
        docs = prompt_documents(config)
    except ConfigError:
        return ""  # reported by knowledge_problems
    if not docs:
        return ""
    sizes = ", ".join(f"{d.path} {counter.count(d.text):,} tokens" for d in docs)
    return (
        f"; of which knowledge_base documents with usage_mode: prompt: {sizes} (use usage_mode: auto "
        "to retrieve only the relevant parts)"
    )


def knowledge_problems(config: Config) -> list[str]:
    """Every knowledge-base `path` that does not exist or cannot be read, one line each."""
    if not _uses_local_agent(config):
        return []
    from appliance.runtime.knowledge_base import load_documents

    try:
        load_documents(config.conversation_config.agent.prompt.knowledge_base, config.resolve_path)
    except ConfigError as err:
        return list(err.problems)
    return []


def preflight(config: Config, counter: TokenCounter | None = None) -> tuple[list[str], list[str]]:
    """`(problems, warnings)` of the checks; `counter` None = estimate the tokens. The main
    agent is checked for the wake words that open it, each word's own agent for its word."""
    problems: list[str] = []
    warnings: list[str] = []
    main = _main_agent(config)
    if main is not None:
        problems = variable_problems(main) + knowledge_problems(main)
        more_problems, warnings = context_checks(main, counter)
        problems += more_problems
    for binding in config.word_agents.values():
        prefix = f"appliance.wake_words.words[{binding.index}].agent: "
        word_problems, word_warnings = preflight(binding.config, counter)
        problems += [prefix + p for p in word_problems]
        warnings += [prefix + w for w in word_warnings]
    return problems, warnings


def _main_agent(config: Config) -> Config | None:
    """`config` restricted to the wake words without their own agent (None: there are none)."""
    if not config.word_agents:
        return config
    words = [w for w in config.appliance.wake_words.words if w.name not in config.word_agents]
    if not words:
        return None
    wake_words = config.appliance.wake_words.model_copy(update={"words": words})
    appliance = config.appliance.model_copy(update={"wake_words": wake_words})
    return dataclasses.replace(config, appliance=appliance, word_agents={})


def token_counter_for(config: Config) -> TokenCounter | None:
    """The model's tokenizer when the context check applies (a fraction of a second), else None."""
    return model_token_counter(config) if _uses_local_agent(config) and _uses_llama_cpp(config) else None


def check_runnable(config: Config) -> list[str]:
    """For `run` and reloads, before any model loads: raise `ConfigError` on a problem, else
    return the warnings."""
    problems, warnings = preflight(config, token_counter_for(config))
    if problems:
        raise ConfigError(problems, source=config.source)
    return warnings


atexit.register(_close_vocabs)


def check_config(path: str | Path | None) -> tuple[Config | None, list[str]]:
    """`(config, warnings)` when the file is valid, else `(None, problems)`; nothing is logged."""
    try:
        cfg = load_config(path, log_warnings=False)
    except ConfigError as err:
        return None, err.problems
    from appliance.core.pronunciation import LexiconError, load_pls

    broken: list[str] = []  # local pronunciation dictionaries: `<file>:<line>: <problem>`
    agents = [("", cfg)] + [
        (f"appliance.wake_words.words[{b.index}].agent: ", b.config) for b in cfg.word_agents.values()
    ]
    for prefix, agent in agents:
        for locator in agent.conversation_config.tts.pronunciation_dictionary_locators:
            try:
                if locator.path is not None:
                    load_pls(agent.resolve_path(locator.path))
            except LexiconError as err:
                broken.append(prefix + str(err))
        broken += [prefix + p for p in device_secret_problems(agent)]
    problems, warnings = preflight(cfg, token_counter_for(cfg))  # what a session would render
    problems = list(dict.fromkeys(broken)) + problems
    return (None, problems) if problems else (cfg, cfg.warnings + warnings)
