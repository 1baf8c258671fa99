"""Run the benchmarks on this machine and print one plain-text table per benchmark.

    .venv/bin/python -m benchmarks.run                    # everything
    .venv/bin/python -m benchmarks.run --only idle        # idle.cpu, idle.latency, ...
    .venv/bin/python -m benchmarks.run --only idle.cpu --json out.json
    .venv/bin/python -m benchmarks.run --quick            # tiny inputs: checks it runs, not numbers

To add a benchmark, write a function `(quick: bool) -> list[dict[str, Any]]` (one dict per row,
keys are the column headers in order, values str / int / float / None) whose docstring's first
line is the table's title, and register it in `BENCHMARKS` under a dotted name. `--only NAME`
selects NAME and everything under `NAME.`, except the opt-in benchmarks (`OPT_IN`, such as the
30-minute `soak.realtime`), which run only when named exactly.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from benchmarks import agent_session, echo, idle_loop, knowledge, local_agent, remote, soak, voices, wakeword
from benchmarks.common import format_table

Row = dict[str, Any]
Benchmark = Callable[[bool], list[Row]]

BENCHMARKS: dict[str, Benchmark] = {
    "idle.cpu": idle_loop.cpu_table,
    "idle.latency": idle_loop.latency_table,
    "idle.latency.runs": idle_loop.latency_runs_table,
    "idle.memory": idle_loop.memory_table,
    "idle.engines": idle_loop.engines_table,
    "idle.engines.voices": idle_loop.engine_voices_table,
    **local_agent.BENCHMARKS,
    **agent_session.BENCHMARKS,
    **echo.BENCHMARKS,
    **echo.OPT_IN_BENCHMARKS,
    **voices.BENCHMARKS,
    **remote.BENCHMARKS,
    **soak.BENCHMARKS,
    **wakeword.BENCHMARKS,
    **knowledge.BENCHMARKS,
}
OPT_IN: frozenset[str] = soak.OPT_IN | frozenset(echo.OPT_IN_BENCHMARKS)
"""Run only when named exactly with --only (long wall-clock runs such as the real-time soak)."""


def select(
    only: Sequence[str] | None, registry: dict[str, Benchmark] = BENCHMARKS, opt_in: frozenset[str] = OPT_IN
) -> list[str]:
    """Registered names matching any of `only` exactly or as a dotted prefix (all if None);
    an `opt_in` name only when it is named exactly."""
    if not only:
        return [name for name in registry if name not in opt_in]
    chosen = [
        name
        for name in registry
        if any(name == o or (name.startswith(o + ".") and name not in opt_in) for o in only)
    ]
    unknown = [o for o in only if not any(name == o or name.startswith(o + ".") for name in registry)]
    if unknown:
        raise SystemExit(f"unknown benchmark {', '.join(unknown)}; known: {', '.join(registry)}")
    return chosen


def title_of(fn: Benchmark) -> str:
    doc = (fn.__doc__ or "").strip()
    return doc.splitlines()[0] if doc else ""


def machine() -> dict[str, Any]:
    info: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
    }
    try:
        fields = dict(
            (key.strip().lower(), value.strip())
            for key, _, value in (
                text.partition(":") for text in Path("/proc/cpuinfo").read_text(errors="replace").splitlines()
            )
        )
        # x86 says "model name"; a Raspberry Pi says "Model" (the board) and "Hardware"
        info["cpu"] = fields.get("model name") or fields.get("model") or fields.get("hardware")
    except OSError:
        pass
    if hasattr(os, "getloadavg"):
        # other work on the machine inflates wall times (CPU time less so): shown for context
        info["load avg 1 min"] = round(os.getloadavg()[0], 2)
    try:
        import onnxruntime

        info["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        pass
    return info


def run(
    names: Sequence[str], *, quick: bool = False, out: Callable[[str], None] | None = print
) -> dict[str, Any]:
    """Run the named benchmarks in order; print each table as soon as it is done."""
    results: dict[str, Any] = {}
    for name in names:
        fn = BENCHMARKS[name]
        start = time.perf_counter()
        rows = fn(quick)
        elapsed = time.perf_counter() - start
        results[name] = {"title": title_of(fn), "rows": rows, "elapsed_s": elapsed}
        if out is not None:
            out(f"\n== {name}: {title_of(fn)}  ({elapsed:.1f} s)\n{format_table(rows)}")
    return results


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmarks on this machine and print one table per benchmark."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=main.__doc__)
    parser.add_argument("--only", action="append", metavar="NAME", help="run NAME and NAME.* (repeatable)")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the results as JSON")
    parser.add_argument("--quick", action="store_true", help="tiny inputs (smoke run; numbers meaningless)")
    parser.add_argument("--list", action="store_true", help="list the registered benchmarks")
    args = parser.parse_args(argv)
    if args.list:
        for name, fn in BENCHMARKS.items():
            print(f"{name:20}  {title_of(fn)}")
        return 0
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    names = select(args.only)
    info = machine()
    print("machine: " + ", ".join(f"{k} {v}" for k, v in info.items()) + ("  [quick]" if args.quick else ""))
    start = time.perf_counter()
    results = run(names, quick=args.quick)
    total = time.perf_counter() - start
    print(f"\ntotal {total:.1f} s")
    if args.json is not None:
        doc = {"machine": info, "quick": args.quick, "total_s": total, "benchmarks": results}
        args.json.write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
