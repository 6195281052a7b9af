"""Selective decoding measured on the paper's protocol, on the stream benchmark.

``run_stream_bench`` (``vljepa stream --benchmark``, deployment ``selective-decoding/benchmark``):

1. generates the stream benchmark (``preprocessing.streams``; content-addressed under the state dir);
2. trains a model on it: the main job's recipe (``run_pipeline``) on the atomic-action clips of the
   training streams with their atomic captions, registered as ``vljepa-streams`` (its evaluation
   trains its y-decoder on those captions); a re-run reuses every content-addressed stage;
3. embeds every val and test stream, one predicted embedding per sliding window of the model's
   frame count (``fps`` 2, a window every ``stride`` frame), cached per model;
4. sweeps the decode rate from 2 to 0.01 Hz for uniform and Ward decoding, each from the exact
   window embedding at the decode time and from the embedding average-pooled over what the decode
   stands for (uniform: its 1/rate interval; Ward: its segment); every annotation is matched to the
   decode nearest in time and CIDEr is computed over the matched pairs (the paper's protocol);
5. the savings factor: decodes of uniform 1 Hz over the decodes of the strategy at the lowest
   swept rate whose CIDEr is within ``tolerance`` (1 %) of uniform 1 Hz (same embedding kind),
   with a 95 % interval from a bootstrap over test streams (per-pair CIDEr with the document
   frequencies of the whole test set held fixed: resampling streams does not re-fit them);
6. the online trigger: its threshold, hysteresis and minimum segment length chosen on the val streams
   (the fewest decodes whose CIDEr is within ``tolerance`` of val's uniform 1 Hz, else the best CIDEr),
   then reported on the test streams with its latency distribution. Test streams are scored once per
   reported number.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from flows.resolve import RunConfig

RATES = (2.0, 1.0, 0.5, 0.35, 0.25, 0.1, 0.05, 0.02, 0.01)
THRESHOLDS = (0.005, 0.01, 0.02, 0.05, 0.1, 0.15, 0.2, 0.3)
TRIGGERS = ((1, 1), (2, 2), (3, 3))  # the online trigger's (hysteresis, min_len) in windows, tried on val
CURVES = (("uniform", True), ("uniform", False), ("ward", True), ("ward", False))


@dataclass(frozen=True, kw_only=True)
class StreamBenchConfig:
    streams: str = "small"  # preprocessing.streams preset
    rates: tuple[float, ...] = RATES
    thresholds: tuple[float, ...] = THRESHOLDS
    triggers: tuple[tuple[int, int], ...] = TRIGGERS
    fps: float = 2.0
    stride: int = 1
    tolerance: float = 0.01
    bootstrap: int = 2000
    seed: int = 0
    registered_model: str = "vljepa-streams"
    run: RunConfig = field(default_factory=RunConfig)


class MemoDecoder:
    """A ``decode`` (e.g. ``flows.selective.YDecoderCallable``) that decodes each distinct embedding once:
    the exact curves decode the same windows at many rates."""

    def __init__(self, decode) -> None:
        self.decode, self.memo, self.decoded = decode, {}, 0

    def __call__(self, embeddings: np.ndarray) -> list[str]:
        embeddings = np.asarray(embeddings, dtype=np.float32)
        keys = [e.tobytes() for e in embeddings]
        todo = sorted({k: i for i, k in enumerate(keys) if k not in self.memo}.values())
        if todo:
            for row, text in zip(todo, self.decode(embeddings[todo])):
                self.memo[keys[row]] = text
            self.decoded += len(todo)
        return [self.memo[k] for k in keys]


def train_stream_model(cfg: StreamBenchConfig, clips_dir: Path) -> tuple[Path, Path, dict]:
    """The main job's recipe on the action clips; returns (checkpoint, its y-decoder, pipeline summary)."""
    from flows.pipeline import run_pipeline

    run = dataclasses.replace(cfg.run, data=str(clips_dir), registered_model=cfg.registered_model,
                              experiment=cfg.run.experiment or "vljepa-streams")
    result = run_pipeline(run)
    checkpoint = Path(result.checkpoint_dir)
    decoder = checkpoint.parent / f"{checkpoint.name}-eval" / "decoder"
    summary = {"checkpoint": str(checkpoint), "dataset": result.dataset, "n_train": result.n_train,
               "n_test": result.n_test, "train_steps": result.train_steps, "suite_metrics": result.suite_metrics,
               "reused_stages": result.reused_stages, "mlflow_run_id": result.mlflow.run_id}
    return checkpoint, decoder, summary


def embed_streams(model, encoder, root: Path, records: list[dict], cfg: StreamBenchConfig, model_key: str):
    """``vljepa.streaming.Stream`` per record (window embeddings cached under ``root/embeddings``)."""
    import torch

    from preprocessing.sampling import sample_fps
    from vljepa.streaming import Stream
    from vljepa.streaming.embed import embed_stream

    cache = root / "embeddings" / f"{model_key}-fps{cfg.fps:g}-stride{cfg.stride}"
    cache.mkdir(parents=True, exist_ok=True)
    streams, seconds, windows = [], 0.0, 0
    for record in records:
        path = cache / f"{record['stream_id']}.npz"
        if not path.is_file():
            started = time.perf_counter()
            clip = sample_fps(root / record["path"], fps=cfg.fps, size=encoder.spec.image_size)
            with torch.no_grad():
                out = list(embed_stream(zip(clip.timestamps.tolist(), clip.frames), encoder, model,
                                        stride_frames=cfg.stride))
            seconds += time.perf_counter() - started
            windows += len(out)
            tmp = path.with_suffix(".tmp.npz")
            np.savez(tmp, times=np.array([w.time for w in out]), embeddings=np.stack([w.embedding for w in out]))
            tmp.replace(path)
        saved = np.load(path)
        streams.append(Stream(record["stream_id"], saved["times"], saved["embeddings"],
                              [(a["time"], a["caption"]) for a in record["annotations"]], duration=record["duration"]))
    return streams, (seconds / windows / (cfg.stride / cfg.fps) if windows else None)


def pair_scores(streams, points, decode) -> tuple[list[np.ndarray], list[int]]:
    """Per stream: the CIDEr of each annotation against its nearest-in-time decode; decodes per stream."""
    from vljepa.streaming.selective import cider_pairs, matched_pairs

    scores = cider_pairs(*matched_pairs(streams, points, decode))
    return np.split(scores, np.cumsum([len(s.captions) for s in streams])[:-1]), [len(p) for p in points]


def score(streams, points, decode) -> dict:
    """Mean CIDEr over every matched pair of ``streams``, the decodes and the decodes per second."""
    scores, counts = pair_scores(streams, points, decode)
    return {"cider": float(np.concatenate(scores).mean()), "decodes": sum(counts),
            "decodes_per_s": sum(counts) / sum(s.duration for s in streams)}


def sweep_curves(streams, decode, rates) -> dict[str, dict[float, tuple[list[np.ndarray], list[int]]]]:
    """Per curve ("ward/pooled", ...) and rate: per-stream pair scores and decode counts."""
    from vljepa.streaming.selective import strategy_points

    out: dict[str, dict[float, Any]] = {}
    for method, pool in CURVES:
        name = f"{method}/{'pooled' if pool else 'exact'}"
        out[name] = {rate: pair_scores(streams, [strategy_points(s, method, rate, pool=pool) for s in streams], decode)
                     for rate in rates}
    return out


def savings(curve: dict, reference: dict, take: np.ndarray, tolerance: float) -> float | None:
    """Uniform-1-Hz decodes / the curve's decodes at its lowest rate within ``tolerance`` of uniform 1 Hz."""
    def mean(scores):
        return float(np.concatenate([scores[i] for i in take]).mean())

    target = (1 - tolerance) * mean(reference[1.0][0])
    reached = [rate for rate, (scores, _) in curve.items() if mean(scores) >= target]
    if not reached:
        return None
    rate = min(reached)
    return sum(reference[1.0][1][i] for i in take) / max(sum(curve[rate][1][i] for i in take), 1)


def summarise(curves: dict, streams, cfg: StreamBenchConfig) -> dict:
    """Rows per curve and rate, and the savings factor of every curve with its bootstrap interval."""
    durations = np.array([s.duration for s in streams])
    every = np.arange(len(streams))
    rows = []
    for name, per_rate in curves.items():
        for rate, (scores, counts) in per_rate.items():
            rows.append({"curve": name, "rate": rate, "decodes_per_s": sum(counts) / durations.sum(),
                         "cider": float(np.concatenate(scores).mean()), "decodes": sum(counts)})
    rng = np.random.default_rng(cfg.seed)
    draws = [rng.integers(len(streams), size=len(streams)) for _ in range(cfg.bootstrap)]
    factors = {}
    for name, per_rate in curves.items():
        reference = curves[f"uniform/{name.split('/')[1]}"]
        point = savings(per_rate, reference, every, cfg.tolerance)
        boot = [savings(per_rate, reference, take, cfg.tolerance) for take in draws]
        reached = np.array([b for b in boot if b is not None])
        factors[name] = {"savings": point, "ci95": [float(np.quantile(reached, 0.025)), float(np.quantile(reached, 0.975))]
                         if len(reached) else None, "bootstrap_reached": len(reached) / len(boot)}
    return {"rows": rows, "savings": factors}


def online(streams_val, streams_test, decode, cfg: StreamBenchConfig, val_reference: float) -> dict:
    """The causal trigger: threshold, hysteresis and min_len chosen on val, reported once on test."""
    from vljepa.streaming import OnlineTriggerConfig, online_points

    def run(streams, threshold, hysteresis, min_len):
        trigger = OnlineTriggerConfig(threshold=threshold, hysteresis=hysteresis, min_len=min_len)
        results = [online_points(s, trigger) for s in streams]
        latency = [lat for r in results for lat in r[1]]
        return {"threshold": threshold, "hysteresis": hysteresis, "min_len": min_len,
                **score(streams, [r[0] for r in results], decode), "latency_windows": latency}

    val = [run(streams_val, t, h, m) for h, m in cfg.triggers for t in cfg.thresholds]
    good = [r for r in val if r["cider"] >= (1 - cfg.tolerance) * val_reference]
    chosen = min(good, key=lambda r: r["decodes_per_s"]) if good else max(val, key=lambda r: r["cider"])
    test = run(streams_test, chosen["threshold"], chosen["hysteresis"], chosen["min_len"])
    lat_s = np.array(test.pop("latency_windows"), dtype=float) * cfg.stride / cfg.fps
    return {"val": [{k: v for k, v in r.items() if k != "latency_windows"} for r in val],
            "val_reference": val_reference,
            "chosen_threshold": chosen["threshold"], "chosen_hysteresis": chosen["hysteresis"],
            "chosen_min_len": chosen["min_len"], "chosen_on_val_within_tolerance": bool(good), "test": test,
            "latency_s": {"mean": float(lat_s.mean()), "p50": float(np.median(lat_s)),
                          "p95": float(np.quantile(lat_s, 0.95)), "max": float(lat_s.max())}}


def oracle(streams, decode, reference: float) -> dict:
    """One decode per annotation at its time (``annotation_points``), exact and pooled, on these
    streams: the CIDEr a strategy at the annotations' rate could reach at best, beside ``reference``
    (uniform 1 Hz, pooled, on the same streams)."""
    from vljepa.streaming import annotation_points

    exact, pooled = (score(streams, [annotation_points(s, pool=pool) for s in streams], decode)
                     for pool in (False, True))
    return {"uniform_1hz": reference, "exact": exact["cider"], "pooled": pooled["cider"],
            "decodes_per_s": exact["decodes_per_s"]}


def model_key(checkpoint: Path) -> str:
    digest = hashlib.sha256((checkpoint / "model.safetensors").read_bytes()).hexdigest()
    return digest[:12]


def run_stream_bench(cfg: StreamBenchConfig, *, progress: bool = True) -> dict:
    """Steps 1-6 of the module docstring; writes ``results.json``, ``pareto.png``, ``summary.md``."""
    from flows.selective import YDecoderCallable
    from flows.stream_bench_report import log_to_mlflow, markdown, pareto_figure
    from preprocessing.streams import PRESETS, generate_streams
    from vljepa.checkpoint import load_checkpoint
    from vljepa.decoder import load_decoder
    from vljepa.encoders import build_x_encoder
    from vljepa.streaming import uniform_points

    started = time.perf_counter()
    layout = cfg.run.layout().ensure()
    scfg = PRESETS[cfg.streams]
    root = layout.data_dir / f"streams-{cfg.streams}-{scfg.config_hash()[:12]}"
    corpus = generate_streams(scfg, root, progress=progress)
    checkpoint, decoder_dir, trained = train_stream_model(cfg, root / "clips")
    model = load_checkpoint(checkpoint)
    decode = MemoDecoder(YDecoderCallable(load_decoder(decoder_dir)))
    encoder = build_x_encoder(model.cfg.x_encoder)
    records = [json.loads(line) for line in (root / "streams.jsonl").read_text().splitlines()]
    key = model_key(checkpoint)
    val, _ = embed_streams(model, encoder, root, [r for r in records if r["split"] == "val"], cfg, key)
    test, compute = embed_streams(model, encoder, root, [r for r in records if r["split"] == "test"], cfg, key)
    val_uniform = score(val, [uniform_points(s, 1.0) for s in val], decode)["cider"]
    curves = sweep_curves(test, decode, cfg.rates)
    result = {"streams": {"preset": cfg.streams, "dir": str(root), "config_hash": corpus["config_hash"],
                          "statistics": corpus["statistics"], "paper": corpus["paper"]},
              "model": {**trained, "key": key, "registered_model": cfg.registered_model},
              "protocol": {"rates": list(cfg.rates), "fps": cfg.fps, "stride": cfg.stride, "tolerance": cfg.tolerance,
                           "bootstrap": cfg.bootstrap, "n_val": len(val), "n_test": len(test)},
              **summarise(curves, test, cfg),
              "online": online(val, test, decode, cfg, val_uniform), "oracle_val": oracle(val, decode, val_uniform),
              "compute_per_window_over_stride": compute, "decoded": decode.decoded}
    out = layout.root / "selective" / f"{cfg.streams}-{key}"
    out.mkdir(parents=True, exist_ok=True)
    result["seconds"] = round(time.perf_counter() - started, 1)
    (out / "results.json").write_text(json.dumps(result, indent=1) + "\n")
    pareto_figure(result, out / "pareto.png")
    (out / "summary.md").write_text(markdown(result) + "\n")
    result["out_dir"] = str(out)
    result["mlflow_run_id"] = log_to_mlflow(result, out, cfg.run.layout().tracking_uri)
    return result
