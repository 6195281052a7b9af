"""``vljepa evaluate``: every task of the paper on a checkpoint (``flows.evaluate.run_evaluation``)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from flows.cli.common import ConfigError, add_state_arguments
from vljepa.decoder_config import DECODER_TRAINING

HELP = ("run every task of the paper on a trained checkpoint (a BASE or an SFT model) on the held-out "
        "test split; with --run-id, log into that MLflow run and register the model")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", help="a model directory (model.safetensors + config.json), e.g. the "
                                      "checkpoint_dir that `vljepa train` prints; 'base': the newest VL-JEPA_BASE")
    p.add_argument("--run-id", default=None, help="the MLflow run to log into (`vljepa train` prints mlflow_run_id)")
    p.add_argument("--no-register", action="store_true", help="log metrics only; do not register the model")
    p.add_argument("--registered-model", default="vljepa", help="MLflow registered model name")
    p.add_argument("--out", default=None, help="results directory (default <checkpoint>-eval)")
    p.add_argument("--data", default=None, metavar="DIR",
                   help="evaluate on the test split of your own dataset (as `vljepa run --data`); default: the "
                        "generated corpus")
    p.add_argument("--annotations", default=None, metavar="FILE", help="with --data: its annotation file")
    p.add_argument("--decoder-train", choices=DECODER_TRAINING, default="text+predicted",
                   help="what the y-decoder trains on: the training texts' y-encoder embeddings and the predictor's "
                        "outputs for the training clips (default; chosen by `python -m flows.decoder_study`), or the "
                        "texts only")
    p.add_argument("--num-beams", type=int, default=1, help="beam width of captioning and the round trip (default 1)")
    add_state_arguments(p)


def main(args: argparse.Namespace) -> int:
    from flows.data import cache_split_tokens, prepare_corpus
    from flows.user_data import detect_source, generated_data, import_data
    from flows.evaluate import EvalConfig, run_evaluation
    from flows.resolve import RunConfig
    from flows.train import latest_base_model
    from vljepa.config import VLJepaConfig

    run = RunConfig(state_dir=args.state_dir, tracking_uri=args.tracking_uri, progress=False)
    layout = run.layout().ensure()
    checkpoint = latest_base_model(layout) if args.checkpoint == "base" else Path(args.checkpoint)
    if not (checkpoint / "config.json").is_file():
        raise ConfigError(f"{checkpoint} is not a model directory (no config.json): pass the checkpoint_dir "
                          "that `vljepa train` printed, or 'base'")
    cfg = VLJepaConfig.from_json((checkpoint / "config.json").read_text())
    if args.data is None:
        corpus_dir = prepare_corpus(cfg, layout, progress=False)
        data = generated_data(corpus_dir, None, None)  # imported by the run that trained the checkpoint
    else:
        data = import_data(detect_source(args.data, annotations=args.annotations), layout.manifest)
        print("\n".join(data.summary_lines()))
    test = cache_split_tokens(cfg, layout, "test", progress=False, dataset=data.dataset)
    train = (cache_split_tokens(cfg, layout, "train", progress=False, dataset=data.dataset).path
             if args.decoder_train == "text+predicted" else None)
    summary = run_evaluation(checkpoint, layout.manifest, test.path, data.corpus_dir, args.run_id,
                             tracking_uri=layout.tracking_uri, out_dir=args.out, labels=data.labels,
                             skipped=data.skipped, train_cache=train,
                             cfg=EvalConfig(register=not args.no_register, registered_model=args.registered_model,
                                            tasks=data.tasks, dataset=data.dataset, decoder_train=args.decoder_train,
                                            num_beams=args.num_beams))
    print(Path(summary["out_dir"], "summary.md").read_text())
    print(json.dumps({"out_dir": summary["out_dir"], "mlflow": summary.get("mlflow"), "n_test": summary["n_test"]},
                     indent=2, default=str))
    return 0
