"""The selective-decoding benchmark (paper Sec. 4.3) on the embedded corpus (flow ``selective-decoding``:
``flows/prefect_flows/selective_decoding.py``).

Streams: the test split's multi-event clips (dense, timestamped event captions), decoded at a
fixed fps and concatenated into streams of ~``stream_seconds``; the predictor emits one embedding
per sliding window of the model's own frame count (``x_encoder.num_frames``; ``flows.stream``
says why the frame rate is a parameter). Decoders: ``retrieval`` (nearest training caption by
y-encoder embedding — a cheap, deterministic stand-in) or the trained y-decoder when one is given.
The sweep compares uniform decoding, Ward segmentation and the online trigger at matched decode rates.
"""

from __future__ import annotations

import json
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from flows.loaders import caption_bank, event_clips
from vljepa.streaming import OnlineTriggerConfig, Stream, savings_factor, sweep
from vljepa.streaming.embed import FrameMismatchWarning, embed_stream, stream_window
from vljepa.streaming.selective import pareto_plot


@dataclass(frozen=True, kw_only=True)
class SelectiveConfig:
    split: str = "test"
    dataset: str = "synthetic"
    fps: float = 2.0  # frames per second fed to the encoder
    window_frames: int | None = None  # None: the model's x_encoder.num_frames (small: 4 = 2 s at 2 fps)
    stride_frames: int = 1  # frames between window starts: one window every 0.5 s at 2 fps
    allow_frame_mismatch: bool = False  # accept a window_frames that is not the model's frame count (warns)
    stream_seconds: float = 60.0  # consecutive clips are concatenated into streams this long
    min_events: int = 2
    max_clips: int | None = None
    rates: tuple[float, ...] = (2.0, 1.0, 0.5, 0.35, 0.25, 0.1, 0.05, 0.02, 0.01)
    thresholds: tuple[float, ...] = (0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.45)
    pool: bool = True
    query: str = ""


class RetrievalDecoder:
    """Embedding → the nearest caption of a bank (by y-encoder embedding): a decoder stand-in."""

    def __init__(self, model, bank: list[str]) -> None:
        from vljepa.evaluate import text_embeddings

        self.bank = sorted(set(bank))
        self.bank_embeddings = text_embeddings(model, self.bank).numpy()  # (C, D)

    def __call__(self, embeddings: np.ndarray) -> list[str]:
        emb = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True).clip(1e-12)
        return [self.bank[i] for i in (emb @ self.bank_embeddings.T).argmax(1)]


def build_streams(model, encoder, clips: list[dict], cfg: SelectiveConfig) -> tuple[list[Stream], float]:
    """Decode, concatenate and embed; returns the streams and the compute seconds per window."""
    from preprocessing.sampling import sample_fps

    size = encoder.spec.image_size
    groups: list[list[dict]] = [[]]
    for clip in clips:
        if groups[-1] and sum(c["duration"] for c in groups[-1]) >= cfg.stream_seconds:
            groups.append([])
        groups[-1].append(clip)
    streams, compute, windows = [], 0.0, 0
    for number, group in enumerate(g for g in groups if g):
        frames, truth, offset = [], [], 0.0
        for clip in group:
            decoded = sample_fps(clip["path"], fps=cfg.fps, size=size)
            frames += [(offset + float(t), f) for t, f in zip(decoded.timestamps, decoded.frames)]
            truth += [(offset + 0.5 * (a + b), text) for a, b, text in clip["events"]]
            offset += float(clip["duration"])
        start = time.perf_counter()
        with warnings.catch_warnings():  # an accepted mismatch is reported once, by run_selective
            warnings.simplefilter("ignore", FrameMismatchWarning)
            windows_of_stream = embed_stream(iter(frames), encoder, model, window_frames=cfg.window_frames,
                                             stride_frames=cfg.stride_frames,
                                             allow_frame_mismatch=cfg.allow_frame_mismatch, query=cfg.query)
        out = list(windows_of_stream)
        compute += time.perf_counter() - start
        windows += len(out)
        streams.append(Stream(f"stream-{number:03d}", np.array([w.time for w in out]),
                              np.stack([w.embedding for w in out]), truth, duration=offset))
    return streams, compute / max(windows, 1)


def run_selective(model, encoder, db_path: Path, train_texts: list[str], cfg: SelectiveConfig, out_dir: Path,
                  decoder=None) -> dict:
    """The sweep, the savings factors, the online trigger's latency and cost; writes plot + table + JSON."""
    # Checked before any clip is decoded; recorded below as the window actually used.
    window_frames = stream_window(model.cfg.x_encoder, cfg.window_frames, allow_frame_mismatch=cfg.allow_frame_mismatch)
    out_dir.mkdir(parents=True, exist_ok=True)
    clips = event_clips(db_path, cfg.split, dataset=cfg.dataset, min_events=cfg.min_events, max_clips=cfg.max_clips)
    if not clips:
        raise ValueError(f"no {cfg.split} clips with ≥ {cfg.min_events} events in {db_path}")
    with torch.no_grad():
        streams, seconds_per_window = build_streams(model, encoder, clips, cfg)
        decode = decoder or RetrievalDecoder(model, train_texts)
        trigger = OnlineTriggerConfig()
        rows = sweep(streams, decode, rates=cfg.rates, thresholds=cfg.thresholds, pool=cfg.pool, trigger=trigger)
    stride_s = cfg.stride_frames / cfg.fps
    online_rows = [r for r in rows if r.method == "online"]
    result = {
        "config": asdict(cfg),
        "window_frames": window_frames, "window_seconds": window_frames / cfg.fps,
        "n_streams": len(streams), "n_clips": len(clips),
        "stream_seconds": float(sum(s.duration for s in streams)),
        "n_events": int(sum(len(s.captions) for s in streams)),
        "decoder": "y-decoder" if isinstance(decode, YDecoderCallable) else type(decode).__name__,
        "rows": [asdict(r) for r in rows],
        "savings_vs_uniform_1hz": {m: savings_factor(rows, m) for m in ("ward", "online")},
        "online_mean_latency_windows": float(np.mean([r.mean_latency_windows for r in online_rows
                                                      if r.mean_latency_windows is not None])) if online_rows else None,
        "online_latency_bound_windows": max(trigger.hysteresis, trigger.min_len),
        "compute_seconds_per_window": seconds_per_window,
        "compute_per_window_over_stride": seconds_per_window / stride_s,
    }
    pareto_plot(rows, str(out_dir / "pareto.png"), title=f"Selective decoding ({result['decoder']})")
    (out_dir / "selective_decoding.json").write_text(json.dumps(result, indent=2))
    (out_dir / "selective_decoding.md").write_text(format_table(result))
    return result


def format_table(result: dict) -> str:
    lines = ["| method | setting | decodes/s | CIDEr | decodes |", "|---|---|---|---|---|"]
    for r in result["rows"]:
        setting = f"{r['setting']} Hz" if r["method"] != "online" else f"threshold {r['setting']}"
        lines.append(f"| {r['method']} | {setting} | {r['decodes_per_s']:.3f} | {r['cider']:.3f} | {r['n_decodes']} |")
    savings = result["savings_vs_uniform_1hz"]
    fmt = lambda v: "not reached" if v is None else f"{v:.2f}×"  # noqa: E731
    lines += ["", f"Savings at ≤ 1 % CIDEr loss vs uniform 1 Hz: Ward {fmt(savings['ward'])}, online {fmt(savings['online'])}.",
              f"Online trigger: mean latency {result['online_mean_latency_windows']} windows "
              f"(bound {result['online_latency_bound_windows']}); compute per window / stride = "
              f"{result['compute_per_window_over_stride']:.3f}."]
    return "\n".join(lines)


def resolve_model(registered_model: str, alias: str, tracking_uri: str, artifacts_root: Path | None = None):
    """The VLJepa module behind ``models:/NAME@ALIAS`` and the MLflow run that produced it."""
    model, decoder, version, _ = load_registered(registered_model, alias, tracking_uri, artifacts_root)
    return model, decoder, version.run_id, str(version.version)


def load_registered(registered_model: str, alias: str, tracking_uri: str, artifacts_root: Path | None = None):
    """(VLJepa, y-decoder or None, the MLflow model version, the local checkpoint dir) of ``models:/NAME@ALIAS``.

    A model logged through the MLflow server (``infra/up.sh``) has ``mlflow-artifacts:/`` URIs that
    only the server resolves; read from its SQLite store directly, they are looked up under
    ``artifacts_root`` (the server's ``--artifacts-destination``, ``<state>/mlflow/artifacts``).
    Raises ``ConfigError`` naming the store when no version holds the alias.
    """
    import mlflow
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    from flows.resolve import ConfigError
    from flows.tracking_store import use_tracking
    use_tracking(tracking_uri)
    try:
        version = MlflowClient().get_model_version_by_alias(registered_model, alias)
    except MlflowException as exc:
        raise ConfigError(f"no model registered as models:/{registered_model}@{alias} in {tracking_uri}: train and "
                          "register one (`vljepa run`), or pass --checkpoint DIR") from exc
    where = f"models:/{registered_model}@{alias}"
    source = MlflowClient().get_model_version_download_uri(registered_model, version.version)
    if source.startswith("mlflow-artifacts:/") and not tracking_uri.startswith(("http://", "https://")):
        local = Path(artifacts_root or ".") / source.removeprefix("mlflow-artifacts:/")
        if artifacts_root is None or not local.is_dir():
            raise ConfigError(f"{where} was logged through an MLflow server ({source}) and {local} does not hold it: "
                              "start the server (`bash infra/up.sh`) and pass --tracking-uri http://127.0.0.1:5000")
        where = str(local)
    # MLflow warns "add type hints to the `predict` method" when it loads the class: about logging, harmless
    # here, and not filterable (mlflow.utils.annotations resets the filter to "once" around it).
    pyfunc = mlflow.pyfunc.load_model(where).unwrap_python_model()
    return pyfunc.model, getattr(pyfunc, "decoder", None), version, getattr(pyfunc, "checkpoint_dir", None)


class YDecoderCallable:
    """The y-decoder as a ``decode``: (K, D) embeddings → K texts (greedy unless ``num_beams``)."""

    def __init__(self, decoder, batch_size: int = 64, num_beams: int = 1) -> None:
        self.decoder, self.batch_size, self.num_beams = decoder, batch_size, num_beams

    def __call__(self, embeddings):
        import torch

        out = []
        for i in range(0, len(embeddings), self.batch_size):
            batch = torch.as_tensor(embeddings[i : i + self.batch_size], dtype=torch.float32)
            out += self.decoder.generate(batch, num_beams=self.num_beams)
        return out


def sweep_registered_model(registered_model: str = "vljepa", alias: str = "candidate", state_dir: str | None = None,
                           tracking_uri: str | None = None, max_clips: int | None = None, split: str = "test") -> dict:
    """Run the sweep on the test streams for a registered model and log it to its run."""
    import tempfile

    import mlflow

    from flows.env import StateLayout
    from vljepa.encoders import build_x_encoder

    layout = StateLayout.resolve(state_dir, tracking_uri)
    model, decoder, run_id, version = resolve_model(registered_model, alias, layout.tracking_uri,
                                                     layout.mlflow_artifacts)
    db = layout.manifest
    cfg = SelectiveConfig(max_clips=max_clips, split=split)
    with tempfile.TemporaryDirectory() as tmp:
        result = run_selective(model, build_x_encoder(model.cfg.x_encoder), db, caption_bank(db), cfg, Path(tmp),
                               decoder=YDecoderCallable(decoder) if decoder is not None else None)
        with mlflow.start_run(run_id=run_id):
            for method, factor in result["savings_vs_uniform_1hz"].items():
                if factor is not None:
                    mlflow.log_metric(f"selective/savings_{method}", factor)
            mlflow.log_metric("selective/compute_per_window_over_stride", result["compute_per_window_over_stride"])
            if result["online_mean_latency_windows"] is not None:
                mlflow.log_metric("selective/online_mean_latency_windows", result["online_mean_latency_windows"])
            for name in ("pareto.png", "selective_decoding.md", "selective_decoding.json"):
                mlflow.log_artifact(str(Path(tmp) / name), artifact_path="selective_decoding")
    result["model"] = f"models:/{registered_model}@{alias} (version {version}, run {run_id})"
    return result
