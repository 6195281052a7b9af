"""Selective decoding: where to decode an embedding stream, and how well the text covers it.

Three policies over a stream of window embeddings with timestamps:
- ``uniform_points``: every 1/r seconds (what a streaming token VLM is limited to);
- ``ward_points``: one decode per temporally constrained Ward segment, at its midpoint (paper);
- ``online_points``: the causal trigger of ``online.py``.
Each decode uses the average-pooled embedding of the stretch it stands for (the paper's choice;
``pool=False`` takes the single window embedding at the decode time instead).

Scoring follows the paper's protocol: every ground-truth caption (t_i, y_i) is matched to the
decoded output nearest in time, and CIDEr is computed over the matched pairs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from vljepa.streaming.online import OnlineTriggerConfig, run_trigger
from vljepa.streaming.segment import segment_bounds, ward_segments


@dataclass(frozen=True)
class DecodePoint:
    time: float  # seconds: the time the decoded text is placed at
    embedding: np.ndarray  # (D,) what goes to the y-decoder
    start: float  # the stretch of stream it stands for
    end: float


@dataclass(frozen=True)
class Stream:
    """One video's window embeddings and its dense ground truth."""

    name: str
    times: np.ndarray  # (T,) window centres, seconds, increasing
    embeddings: np.ndarray  # (T, D)
    captions: list[tuple[float, str]]  # (time, caption) ground truth, e.g. event midpoints
    duration: float  # seconds covered by the stream


def uniform_count(duration: float, rate_hz: float) -> int:
    """Number of uniform decodes over ``duration`` s at ``rate_hz``: one per full 1/r interval, at least 1."""
    if duration <= 0 or rate_hz <= 0:
        raise ValueError(f"duration and rate must be positive, got {duration}, {rate_hz}")
    return max(1, int(math.floor(duration * rate_hz + 1e-9)))


def _pooled(stream: Stream, lo: float, hi: float, centre: float, pool: bool) -> np.ndarray:
    inside = (stream.times >= lo) & (stream.times < hi)
    if pool and inside.any():
        return stream.embeddings[inside].mean(0)
    return stream.embeddings[int(np.abs(stream.times - centre).argmin())]


def uniform_points(stream: Stream, rate_hz: float, *, pool: bool = True) -> list[DecodePoint]:
    """Decode at the centres of ``uniform_count`` equal intervals of length 1/r from the start."""
    count = uniform_count(stream.duration, rate_hz)
    start = float(stream.times[0]) - _half_stride(stream)
    period = 1.0 / rate_hz
    points = []
    for k in range(count):
        lo, hi = start + k * period, start + (k + 1) * period
        if k == count - 1:
            hi = max(hi, start + stream.duration)  # the tail joins the last interval
        centre = 0.5 * (lo + hi)
        points.append(DecodePoint(centre, _pooled(stream, lo, hi, centre, pool), lo, hi))
    return points


def ward_points(stream: Stream, n_segments: int, *, pool: bool = True) -> list[DecodePoint]:
    """One decode per Ward segment, at the segment's midpoint (paper Sec. 4.3)."""
    labels = ward_segments(stream.embeddings, n_segments)
    points = []
    for a, b in segment_bounds(labels):
        lo, hi = float(stream.times[a]), float(stream.times[b - 1])
        mid_index = (a + b - 1) // 2
        embedding = stream.embeddings[a:b].mean(0) if pool else stream.embeddings[mid_index]
        points.append(DecodePoint(0.5 * (lo + hi), embedding, lo, hi))
    return points


def online_points(stream: Stream, cfg: OnlineTriggerConfig) -> tuple[list[DecodePoint], list[int]]:
    """Decode points of the causal trigger, and each decode's latency in windows.

    A decoded text describes its segment from the segment's start until the next decode; it is
    placed at the centre of that stretch for scoring (the live viewer sees it at decision time).
    """
    events = run_trigger(stream.embeddings, cfg)
    points = []
    for i, event in enumerate(events):
        lo = float(stream.times[event.segment_start])
        hi = float(stream.times[events[i + 1].index]) if i + 1 < len(events) else float(stream.times[-1])
        hi = max(hi, float(stream.times[event.index]))
        points.append(DecodePoint(0.5 * (lo + hi), event.embedding, lo, hi))
    return points, [e.latency for e in events]


def _half_stride(stream: Stream) -> float:
    return 0.5 * float(np.median(np.diff(stream.times))) if len(stream.times) > 1 else 0.0


def match_nearest_in_time(truth_times: Sequence[float], decoded_times: Sequence[float]) -> list[int]:
    """For each ground-truth time, the index of the decoded output nearest in time (ties: earlier)."""
    if not len(decoded_times):
        raise ValueError("no decoded outputs to match")
    decoded = np.asarray(decoded_times, dtype=np.float64)
    return [int(np.abs(decoded - t).argmin()) for t in truth_times]


def cider(references: list[str], candidates: list[str]) -> float:
    """Corpus CIDEr (pycocoevalcap's scorer; its PTB tokenizer needs Java, so we lowercase and
    strip punctuation ourselves) of candidates[i] against references[i]."""
    return float(cider_pairs(references, candidates).mean())


def cider_pairs(references: list[str], candidates: list[str]) -> np.ndarray:
    """Each pair's CIDEr-D (document frequencies from all of ``references``); their mean is ``cider``."""
    from pycocoevalcap.cider.cider import Cider

    def norm(text: str) -> str:
        return " ".join("".join(c if c.isalnum() or c.isspace() else " " for c in text.lower()).split())

    refs = {i: [norm(r)] for i, r in enumerate(references)}
    cands = {i: [norm(c) or "empty"] for i, c in enumerate(candidates)}
    _, scores = Cider().compute_score(refs, cands)
    return np.asarray(scores, dtype=np.float64)


Decoder = Callable[[np.ndarray], list[str]]  # (K, D) embeddings -> K texts


@dataclass(frozen=True)
class SweepRow:
    method: str  # "uniform" | "ward" | "online"
    setting: float  # target rate (Hz) for uniform/ward, threshold for online
    decodes_per_s: float  # achieved average decode rate over all streams
    cider: float
    n_decodes: int
    mean_latency_windows: float | None = None


def matched_pairs(streams: Sequence[Stream], points: Sequence[Sequence[DecodePoint]],
                  decode: Decoder) -> tuple[list[str], list[str]]:
    """Decode every point; each ground-truth caption with the decoded text nearest to it in time,
    stream after stream: (references, candidates)."""
    flat = [p for per_stream in points for p in per_stream]
    texts = decode(np.stack([p.embedding for p in flat])) if flat else []
    references, candidates, offset = [], [], 0
    for stream, per_stream in zip(streams, points):
        decoded = texts[offset : offset + len(per_stream)]
        offset += len(per_stream)
        matches = match_nearest_in_time([t for t, _ in stream.captions], [p.time for p in per_stream])
        for (_, caption), j in zip(stream.captions, matches):
            references.append(caption)
            candidates.append(decoded[j])
    return references, candidates


def score_points(streams: Sequence[Stream], points: Sequence[Sequence[DecodePoint]], decode: Decoder) -> tuple[float, int]:
    """Decode every point, match ground truth nearest in time, CIDEr over all matched pairs."""
    return cider(*matched_pairs(streams, points, decode)), sum(len(p) for p in points)


def annotation_points(stream: Stream, *, pool: bool = True) -> list[DecodePoint]:
    """An oracle that knows where the annotations are: one decode per ground-truth caption, at its
    time, standing for the stretch halfway to its neighbours. No strategy that decodes at the
    annotations' rate can place its decodes better, so its CIDEr bounds what such a rate can reach."""
    times = [float(t) for t, _ in stream.captions]
    start = float(stream.times[0]) - _half_stride(stream)
    cuts = [start] + [0.5 * (a + b) for a, b in zip(times, times[1:])] + [start + stream.duration]
    return [DecodePoint(t, _pooled(stream, lo, hi, t, pool), lo, hi) for t, lo, hi in zip(times, cuts, cuts[1:])]


def strategy_points(stream: Stream, method: str, rate_hz: float, *, pool: bool = True) -> list[DecodePoint]:
    """``uniform`` at ``rate_hz``, or ``ward`` with as many segments as uniform decoding would make."""
    if method == "uniform":
        return uniform_points(stream, rate_hz, pool=pool)
    if method == "ward":
        return ward_points(stream, uniform_count(stream.duration, rate_hz), pool=pool)
    raise ValueError(f"unknown method {method!r}; expected uniform or ward")


def sweep(streams: Sequence[Stream], decode: Decoder, *, rates: Sequence[float],
          thresholds: Sequence[float] = (), pool: bool = True, trigger: OnlineTriggerConfig | None = None) -> list[SweepRow]:
    """CIDEr against decode rate for uniform and Ward at each target rate, and the online trigger
    at each threshold."""
    total = sum(s.duration for s in streams)
    rows = []
    for rate in rates:
        for method in ("uniform", "ward"):
            score, n = score_points(streams, [strategy_points(s, method, rate, pool=pool) for s in streams], decode)
            rows.append(SweepRow(method, rate, n / total, score, n))
    base = trigger or OnlineTriggerConfig()
    for threshold in thresholds:
        cfg = OnlineTriggerConfig(threshold=threshold, hysteresis=base.hysteresis, min_len=base.min_len,
                                  max_len=base.max_len)
        results = [online_points(s, cfg) for s in streams]
        score, n = score_points(streams, [r[0] for r in results], decode)
        latencies = [lat for r in results for lat in r[1]]
        rows.append(SweepRow("online", threshold, n / total, score, n,
                             float(np.mean(latencies)) if latencies else None))
    return rows


def rate_to_reach(rows: Sequence[SweepRow], method: str, target: float) -> float | None:
    """Lowest decode rate at which ``method`` reaches CIDEr ≥ target (linear interpolation between
    sweep points on its rate axis); None if it never does."""
    points = sorted((r.decodes_per_s, r.cider) for r in rows if r.method == method)
    best = None
    for (r0, c0), (r1, c1) in zip(points, points[1:]):
        if c0 >= target:
            best = r0 if best is None else min(best, r0)
        elif c1 >= target:
            crossing = r0 + (target - c0) * (r1 - r0) / (c1 - c0)
            best = crossing if best is None else min(best, crossing)
    if points and points[-1][1] >= target:
        best = points[-1][0] if best is None else min(best, points[-1][0])
    return best


def savings_factor(rows: Sequence[SweepRow], method: str, *, reference_rate: float = 1.0,
                   tolerance: float = 0.01) -> float | None:
    """How many times fewer decodes ``method`` needs to reach (1 - tolerance) × the CIDEr of
    uniform decoding at ``reference_rate`` Hz (the paper: 2.85× for Ward at 1 Hz)."""
    reference = [r for r in rows if r.method == "uniform" and abs(r.setting - reference_rate) < 1e-9]
    if not reference:
        raise ValueError(f"the sweep has no uniform row at {reference_rate} Hz")
    needed = rate_to_reach(rows, method, reference[0].cider * (1.0 - tolerance))
    return None if not needed else reference[0].decodes_per_s / needed


def pareto_plot(rows: Sequence[SweepRow], path: str, title: str = "Selective decoding") -> str:
    """CIDEr against decodes per second, one line per method (log rate axis)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.2), dpi=110)
    styles = {"uniform": ("tab:red", "o"), "ward": ("tab:blue", "s"), "online": ("tab:green", "^")}
    for method, (colour, marker) in styles.items():
        pts = sorted((r.decodes_per_s, r.cider) for r in rows if r.method == method)
        if pts:
            ax.plot(*zip(*pts), marker=marker, color=colour, label=method)
    ax.set_xscale("log")
    ax.set_xlabel("decodes per second")
    ax.set_ylabel("CIDEr (nearest-in-time matching)")
    ax.set_title(title)
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
