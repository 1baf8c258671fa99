"""Training's progress: a bar on a terminal, a line per stage anywhere else (a pipe, a file, the
journal), nothing with --no-progress."""

from __future__ import annotations

import io

from appliance.wakeword_training.train import Progress


def test_off_a_terminal_each_stage_is_one_line() -> None:
    out = io.StringIO()  # not a terminal
    progress = Progress(10, enabled=True, stream=out)
    for label in ["positive takes"] * 4 + ["near misses"] * 3 + ["training"] + ["calibration audio"] * 2:
        progress.step(label)
    progress.close()
    lines = out.getvalue().splitlines()
    assert [line.split(" (")[0] for line in lines] == [
        "positive takes",
        "near misses",
        "training",
        "calibration audio",
    ]
    assert "(step 1/10," in lines[0] and "(step 5/10," in lines[1] and "(step 9/10," in lines[3]
    assert "\r" not in out.getvalue()


def test_disabled_progress_writes_nothing() -> None:
    out = io.StringIO()
    progress = Progress(3, enabled=False, stream=out)
    progress.step("positive takes")
    progress.close()
    assert out.getvalue() == ""


def test_on_a_terminal_it_is_a_bar() -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    out = Terminal()
    progress = Progress(2, enabled=True, stream=out)
    progress.step("positive takes")
    progress.step("training")
    progress.close()
    assert "\r" in out.getvalue() and "2/2" in out.getvalue()  # tqdm redraws its line
