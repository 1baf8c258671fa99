"""What fires a trained word in the test negatives of `wakeword.heldout` (a diagnostic).

    python -m benchmarks.wakeword_fires DIR/NAME.onnx [...] [--threshold T --patience P] [--top N]

For each model (at the threshold and patience of its NAME.wakeword.json unless given): every
false accept in the cached 2 h of test negatives (seed 0), with its score, the minute it is in,
and the text and voice said over it (the minute is synthesized again, which gives the same audio),
then the `--top` highest other peaks below the threshold (how close the rest comes). The test
negatives are generated and cached on first use, as `benchmarks.wakeword` does.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from appliance.core import wakeword_training as core
from appliance.paths import state_dir
from appliance.wakeword_training import evaluate as ev
from appliance.wakeword_training.train import (
    CHUNK_S,
    RATE_HZ,
    features_for,
    model_frames,
    negative_audio_chunk,
    score_stream,
)
from benchmarks.wakeword import NEGATIVE_HOURS, _models_dir

Event = tuple[float, int, int]  # score, minute, frame


def _said_over(minute: int, end_s: float, cache: dict[int, list[tuple[int, int, str, str]]]) -> str:
    """The texts (and voices) said in the 2 s before `end_s` of test minute `minute`."""
    if minute % 4 == 3:
        return "(noise minute)"
    if minute not in cache:
        segments: list[tuple[int, int, str, str]] = []
        negative_audio_chunk(minute, 0, split="test", segments=segments)
        cache[minute] = segments
    lo, hi = int((end_s - 2.0) * RATE_HZ), int(end_s * RATE_HZ)
    said = [f"{text!r} [{voice}]" for a, b, text, voice in cache[minute] if a < hi and b > lo]
    return " / ".join(said) or "(pause)"


def fires(model: Path, threshold: float, patience: int, top: int) -> list[str]:
    """One line per false accept, then the highest other peaks."""
    extractor = features_for(_models_dir())
    cache_dir = state_dir() / "wakeword-eval"
    streams = ev.negative_embeddings(extractor, NEGATIVE_HOURS, 0, cache_dir, split="test")
    lines: list[str] = []
    accepts: list[Event] = []
    others: list[Event] = []
    reads = model_frames(model)
    for minute, emb in enumerate(streams):
        scores = score_stream(model, emb).tolist()
        for frame in core.activation_frames(scores, threshold, ev.REFRACTORY_FRAMES, patience):
            accepts.append((max(scores[max(0, frame - patience + 1) : frame + 1]), minute, frame))
        # the rest: peaks of runs (at the same patience) below the threshold, one per 2 s
        low = [min(scores[i : i + patience]) for i in range(len(scores) - patience + 1)]
        for frame in core.activation_frames(low, min(0.5, threshold), ev.REFRACTORY_FRAMES, 1):
            window = low[frame : frame + ev.REFRACTORY_FRAMES]
            best = max(range(len(window)), key=window.__getitem__)
            if window[best] < threshold:
                others.append((window[best], minute, frame + best + patience - 1))
    hours = sum(e.shape[0] for e in streams) * core.FRAME_S / 3600
    lines.append(
        f"{model.stem}: threshold {threshold:g} patience {patience}: {len(accepts)} false accepts in "
        f"{hours:.2f} h ({len(accepts) / hours:.2f}/h)"
    )
    cache: dict[int, list[tuple[int, int, str, str]]] = {}
    listed = (("FIRES", sorted(accepts, reverse=True)), ("below", sorted(others, reverse=True)[:top]))
    for label, events in listed:
        for score, minute, frame in events:
            frames = streams[minute].shape[0]
            end_s = CHUNK_S - (frames - 1 - (frame + reads - 1)) * core.FRAME_S
            said = _said_over(minute, end_s, cache)
            lines.append(f"  {label} {score:.4f} min {minute} t={end_s:5.1f}s  {said}")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="+", type=Path)
    parser.add_argument("--threshold", type=float)
    parser.add_argument("--patience", type=int)
    parser.add_argument("--top", type=int, default=8)
    args = parser.parse_args(argv)
    for model in args.models:
        meta_file = model.with_name(model.stem + ".wakeword.json")
        meta = json.loads(meta_file.read_text(encoding="utf-8")) if meta_file.is_file() else {}
        if args.threshold is None and "threshold" not in meta:
            parser.error(f"{model}: no {meta_file.name} beside it; give --threshold")
        threshold = args.threshold if args.threshold is not None else float(meta["threshold"])
        patience = args.patience if args.patience is not None else int(meta.get("patience_frames", 1))
        print("\n".join(fires(model, threshold, patience, args.top)), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
