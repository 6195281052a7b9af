"""The evaluation stage: the paper's tasks, embedding analysis, MLflow (flow ``evaluate``:
``flows/prefect_flows/evaluate.py``).

``run_evaluation(...)`` is the in-process entry point (tests and ``pretrain/full`` call it). Steps:
load the checkpoint; train (or re-use) the y-decoder on the train split's texts and the predictor's
outputs for its clips, and score its round trip on held-out captions; run every task on the test
split's cached tokens; analyse the embedding spaces; write JSON + markdown + PNGs; log them into
the training run; register the pyfunc (with the decoder) and promote it to ``champion`` if it
beats the current one.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path

from flows.loaders import decoder_texts, load_state_tokens, load_task_data, load_vocabulary
from vljepa.decoder_config import DECODER_TRAINING
from vljepa.files import content_key_sha256, file_sha256

ALL_TASKS = ("retrieval", "classification", "captioning", "vqa", "hard_negatives", "world_prediction")


@dataclass(frozen=True, kw_only=True)
class EvalConfig:
    tasks: tuple[str, ...] = ALL_TASKS
    decoder_preset: str | None = None  # default: the model's preset if it is "tiny", "paper" or "rehearsal", else "small"
    decoder_steps: int | None = None  # override the preset's training steps
    # The decoder study's choice on val (docs/results/decoder-study): text + predicted, greedy.
    decoder_train: str = "text+predicted"
    decoder_predicted_max: int = 4096  # training clips whose predictions join the decoder's data (the first N)
    num_beams: int = 1  # captioning and the round trip; VQA answers decode greedily
    registered_model: str = "vljepa"
    champion_metric: str = "eval/retrieval/t2v_r1"
    greater_is_better: bool = True
    register: bool = True
    dataset: str = "synthetic"

    def __post_init__(self) -> None:
        unknown = sorted(set(self.tasks) - set(ALL_TASKS))
        if unknown:
            raise ValueError(f"unknown tasks {unknown}; choose from {ALL_TASKS}")
        if self.decoder_train not in DECODER_TRAINING:
            raise ValueError(f"decoder_train {self.decoder_train!r}: choose from {DECODER_TRAINING}")


# ---------------------------------------------------------------------------------------------
# The y-decoder (trained once per checkpoint and decoder config)


def predicted_pairs(model, train) -> tuple:
    """The predictor's embeddings of the training clips (``TaskData``), with the query it was trained
    with, and their captions: the ``extra`` pairs of ``train_decoder``."""
    import numpy as np

    from vljepa.tasks.common import predict, training_query

    query = training_query(model)
    predicted = predict(model, train.dataset().visual(np.arange(len(train))), [query] * len(train) if query else None)
    return predicted, list(train.captions)


def ensure_decoder(model, checkpoint_dir: Path, db_path: Path, out_dir: Path, cfg: EvalConfig,
                   train_cache: str | Path | None = None):
    """Train the y-decoder, or load it if one exists for this checkpoint and config. Returns (decoder, info).

    train_cache: the train split's token cache; ``cfg.decoder_train == "text+predicted"`` needs it
    (the predictor's embeddings of its first ``cfg.decoder_predicted_max`` clips join the texts).
    """
    from vljepa.decoder import decoder_preset, load_decoder
    from vljepa.decoder_train import train_decoder
    from vljepa.tasks.common import frames_per_token_group

    with_predictions = cfg.decoder_train == "text+predicted"
    if with_predictions and train_cache is None:
        raise ValueError("the y-decoder trains on the predictor's outputs for training clips "
                         "(EvalConfig.decoder_train='text+predicted'): give train_cache, the train split's token "
                         "cache, or set decoder_train='text' for a text-only decoder")
    preset = cfg.decoder_preset or (model.cfg.preset if model.cfg.preset in ("tiny", "paper", "rehearsal") else "small")
    dcfg = decoder_preset(preset, shared_dim=model.cfg.shared_dim)
    if cfg.decoder_steps is not None:
        dcfg = dataclasses.replace(dcfg, steps=cfg.decoder_steps)
    if dcfg.device.startswith("cuda") and not model.cfg.train.device.startswith("cuda"):
        dcfg = dataclasses.replace(dcfg, device=model.cfg.train.device)  # the model's machine has no GPU
    data = (f"text+predicted:{Path(train_cache).resolve().name}:{cfg.decoder_predicted_max}"
            if with_predictions else "text")
    key = content_key_sha256(file_sha256(checkpoint_dir / "model.safetensors") + dcfg.to_json() + data)
    decoder_dir = out_dir / "decoder"
    stamp = decoder_dir / "source.json"
    if stamp.is_file() and json.loads(stamp.read_text()).get("key") == key:
        info = json.loads(stamp.read_text())
        return load_decoder(decoder_dir), {**info, "reused": True}
    extra = None
    if with_predictions:
        x_encoder = model.cfg.x_encoder
        train = load_task_data(db_path, train_cache, "train", num_frames=x_encoder.num_frames,
                               tubelet_size=frames_per_token_group(x_encoder), dataset=cfg.dataset,
                               limit=cfg.decoder_predicted_max)
        extra = predicted_pairs(model, train)
    result = train_decoder(model, decoder_texts(db_path, "train", cfg.dataset), dcfg, out_dir=decoder_dir, extra=extra)
    info = {"key": key, "checkpoint": str(checkpoint_dir), "train_seconds": result.seconds,
            "embed_seconds": result.embed_seconds, "n_texts": result.n_texts, "steps": dcfg.steps,
            "training": cfg.decoder_train, "n_predicted": len(extra[1]) if extra else 0,
            "final_loss": result.history[-1]["loss"], "vocab_size": len(result.decoder.vocab)}
    stamp.write_text(json.dumps(info, indent=2))
    return result.decoder, {**info, "reused": False}


# ---------------------------------------------------------------------------------------------
# The evaluation


def run_evaluation(checkpoint_dir: str | Path, db_path: str | Path, test_cache: str | Path,
                   corpus_dir: str | Path | None, run_id: str | None = None, *, val_cache: str | Path | None = None,
                   tracking_uri: str | None = None, out_dir: str | Path | None = None,
                   cfg: EvalConfig = EvalConfig(), labels: tuple[str, ...] | list[str] | None = None,
                   skipped: dict[str, str] | None = None, train_cache: str | Path | None = None) -> dict:
    """Evaluate a checkpoint on every task; log into MLflow run ``run_id`` if given.

    Args:
        checkpoint_dir: ``model.safetensors`` + ``config.json`` (``vljepa.checkpoint.save_checkpoint``).
        db_path: the DuckDB manifest; test_cache / val_cache: Parquet token caches of those splits
            (val is optional; when given, retrieval and classification also run on it).
        corpus_dir: has ``corpus.json`` (labels, colours, shapes, motions); None for a dataset without
            one (``flows.user_data``): ``labels`` are then its class names (None: no classification),
            and ``cfg.tasks`` must leave out the tasks that read the vocabulary.
        skipped: task -> why it does not run on this data (written into the results and summary).
        train_cache: the train split's token cache, for the y-decoder's predicted pairs
            (``cfg.decoder_train``; ``ensure_decoder``).
        run_id: the training run to log metrics, plots and the registered model into.
        out_dir: results directory; default ``<checkpoint_dir>-eval``.
    Returns a summary dict: metrics, chance levels, paths, registration and promotion.
    """
    import torch

    from vljepa import analysis
    from vljepa.evaluate import round_trip
    from vljepa.evaluate import text_embeddings
    from vljepa.tasks import captioning, classification, hard_negatives, retrieval, vqa, world_prediction
    from vljepa.tasks.common import frames_per_token_group, markdown_table, predict, write_result
    from vljepa.checkpoint import load_checkpoint

    started = time.perf_counter()
    checkpoint_dir, db_path = Path(checkpoint_dir), Path(db_path)
    out = Path(out_dir) if out_dir else checkpoint_dir.parent / f"{checkpoint_dir.name}-eval"
    out.mkdir(parents=True, exist_ok=True)
    model = load_checkpoint(checkpoint_dir)
    num_threads = model.cfg.train.num_threads
    if num_threads:
        torch.set_num_threads(num_threads)
    vocab = None
    if corpus_dir is not None:
        labels, vocab = load_vocabulary(corpus_dir)
    elif set(cfg.tasks) & {"hard_negatives", "world_prediction"}:
        raise ValueError("hard_negatives and world_prediction read corpus.json's vocabulary: give corpus_dir, "
                         "or leave them out of EvalConfig.tasks")
    if "classification" in cfg.tasks and not labels:
        raise ValueError("classification needs class names: give corpus_dir or labels, or leave it out of tasks")
    labels = list(labels) if labels else []
    x_encoder = model.cfg.x_encoder
    test = load_task_data(db_path, test_cache, "test", num_frames=x_encoder.num_frames,
                          tubelet_size=frames_per_token_group(x_encoder), dataset=cfg.dataset)
    if "world_prediction" in cfg.tasks and test.tubelet_size > 1:
        # Tubelet tokens mix frames: the state images (first, last) go through the frozen x-encoder.
        device = str(model.predictor.out_proj.weight.device)
        test = dataclasses.replace(test, state_tokens=load_state_tokens(x_encoder, db_path, "test", test.sample_ids,
                                                                        dataset=cfg.dataset, device=device))
    timings: dict[str, float] = {}

    t0 = time.perf_counter()
    decoder, decoder_info = ensure_decoder(model, checkpoint_dir, db_path, out, cfg, train_cache)
    timings["decoder"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    held_out = sorted(set(test.captions))
    trip = round_trip(model, decoder, held_out, num_beams=cfg.num_beams)
    timings["round_trip"] = time.perf_counter() - t0

    results = []
    for name in cfg.tasks:
        t0 = time.perf_counter()
        if name == "retrieval":
            results.append(retrieval.run(model, test))
        elif name == "classification":
            results.append(classification.run(model, test, labels))
        elif name == "captioning":
            results.append(captioning.run(model, decoder, test, num_beams=cfg.num_beams))
        elif name == "vqa":
            results.append(vqa.run(model, test, decoder))
        elif name == "hard_negatives":
            results.append(hard_negatives.run(model, test, vocab))
        elif name == "world_prediction":
            results.append(world_prediction.run(model, test, vocab))
        timings[name] = time.perf_counter() - t0
    if val_cache:
        val = load_task_data(db_path, val_cache, "val", num_frames=x_encoder.num_frames,
                             tubelet_size=frames_per_token_group(x_encoder), dataset=cfg.dataset)
        for result in [retrieval.run(model, val)] + ([classification.run(model, val, labels)] if labels else []):
            result.task = f"val_{result.task}"
            results.append(result)
    from vljepa.tasks.common import TaskResult

    results.append(TaskResult(task="decoder_round_trip", metrics=trip["metrics"],
                              chance={}, n=trip["n"],
                              protocol="Held-out test captions: text → y-encoder → y-decoder (beam "
                                       f"{cfg.num_beams}) → text.",
                              details={"examples": trip["examples"], "decoder": decoder_info}))

    # Embedding-space analysis on the test split (query-free prediction vs caption target).
    predicted = predict(model, test.dataset().visual(list(range(len(test)))))
    target = text_embeddings(model, test.captions)
    space, reference = analysis.analyse(predicted, target)
    results.append(TaskResult(task="embedding_space", metrics=space, chance=reference, n=len(test),
                              protocol=analysis.__doc__.split("\n\n")[0]))
    for result in results:
        write_result(result, out / "tasks")

    plots = out / "plots"
    plots.mkdir(exist_ok=True)
    by_task = {r.task: r for r in results}
    pngs = [analysis.embedding_map_png(predicted, target, [lbl or "?" for lbl in test.labels], plots / "embedding_map.png")]
    if "classification" in by_task:
        cls = by_task["classification"]
        pngs.append(analysis.confusion_png(cls.details["confusion"], cls.details["labels"], plots / "confusion_matrix.png",
                                           f"classification (test): top-1 {cls.metrics['top1']:.3f}"))
    if "retrieval" in by_task:
        ret = by_task["retrieval"]
        pngs.append(analysis.rank_histogram_png({"text→video": ret.details["t2v_ranks"], "video→text": ret.details["v2t_ranks"]},
                                                plots / "retrieval_ranks.png", f"retrieval ranks (test, n={ret.n})"))
    if "captioning" in by_task:
        rows = [(e["reference"], e["decoded"]) for e in by_task["captioning"].details["examples"]]
        pngs.append(analysis.examples_table_png(rows, ("reference caption", "decoded from predicted embedding"),
                                                plots / "decoded_examples.png", "captioning: y-decoder on predictions (test)"))
    summary_md = "# Evaluation\n\n" + markdown_table(results)
    if skipped:
        summary_md += "\n\nSkipped on this data:\n\n" + "".join(f"- {t}: {why}\n" for t, why in skipped.items())
    (out / "summary.md").write_text(summary_md)
    metrics = {k: v for r in results for k, v in r.flat().items()}
    chance = {f"{r.task}/{k}": float(v) for r in results for k, v in r.chance.items()}
    timings["total"] = time.perf_counter() - started
    summary = {"metrics": metrics, "chance": chance, "out_dir": str(out), "timings_s": timings,
               "decoder": decoder_info, "num_beams": cfg.num_beams, "plots": [str(p) for p in pngs],
               "n_test": len(test),
               "skipped": dict(skipped or {})}
    (out / "results.json").write_text(json.dumps(summary, indent=2, sort_keys=True))
    if run_id is not None:
        summary["mlflow"] = log_to_mlflow(run_id, tracking_uri, metrics, chance, out, checkpoint_dir,
                                          out / "decoder", test, cfg, eval_key=Path(test_cache).resolve().name)
    return summary


def log_to_mlflow(run_id: str, tracking_uri: str | None, metrics: dict[str, float], chance: dict[str, float],
                  out: Path, checkpoint_dir: Path, decoder_dir: Path, test, cfg: EvalConfig,
                  eval_key: str | None = None) -> dict:
    """Metrics as ``eval/<task>/<metric>`` (+ ``eval_chance/...``), the results and plots as
    artifacts under ``evaluation/``; then register the pyfunc and maybe promote it.

    eval_key: the content key of the test tokens (``flows.registry``: versions evaluated on other
    test sets are not compared). The log line says which version and aliases moved.
    """
    import mlflow
    from mlflow.tracking import MlflowClient

    from flows.mlflow_model import log_pyfunc_model
    from flows.registry import promote_if_better, register_run_model

    if tracking_uri:
        from flows.tracking_store import use_tracking
        use_tracking(tracking_uri)
    client = MlflowClient()
    with mlflow.start_run(run_id=run_id):
        mlflow.log_metrics({f"eval/{k}": v for k, v in metrics.items()})
        mlflow.log_metrics({f"eval_chance/{k}": v for k, v in chance.items()})
        mlflow.log_artifacts(str(out / "tasks"), "evaluation/tasks")
        mlflow.log_artifacts(str(out / "plots"), "evaluation/plots")
        mlflow.log_artifact(str(out / "summary.md"), "evaluation")
        mlflow.log_artifact(str(out / "results.json"), "evaluation")
    info: dict = {"run_id": run_id}
    if cfg.register:
        example = test.tokens[:2].reshape(2, -1).astype("float32")
        registration = register_run_model(
            client, name=cfg.registered_model, run_id=run_id, kind="embedding+decoder",
            log_model=lambda: log_pyfunc_model(str(checkpoint_dir), str(decoder_dir), name="vljepa_model",
                                               tokens_example=example), eval_key=eval_key)
        promotion = promote_if_better(client, name=cfg.registered_model, version=registration.version,
                                      metric=cfg.champion_metric, greater_is_better=cfg.greater_is_better)
        moved = [f"{'registered' if registration.created else 'found'} {cfg.registered_model} version "
                 f"{registration.version}",
                 f"candidate -> {registration.version}" if registration.candidate else registration.note,
                 f"champion -> {registration.version} ({promotion.reason})" if promotion.promoted else
                 f"champion stays at version {promotion.champion_version} ({promotion.reason})"]
        print(f"[registry] {'; '.join(moved)}", flush=True)
        info.update(version=registration.version, created=registration.created, promoted=promotion.promoted,
                    candidate=registration.candidate, champion_version=promotion.champion_version,
                    promotion_reason=promotion.reason, registry_log="; ".join(moved))
    return info
