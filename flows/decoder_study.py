"""Which y-decoder reads predicted embeddings best: variants trained for one checkpoint,
chosen on the val split, each reported on val and test.

The default y-decoder trains text-only on the y-encoder's embeddings of the training texts, with
CapDec noise of a fixed norm (0.3); the predictor's outputs sit off that manifold. Variants:

- ``text``: the default;
- ``text-matched-noise``: text-only, with noise of the norm of the predictor's own error on the
  training clips (mean ``||predicted - y-encoder(caption)||`` of unit vectors);
- ``text+predicted``: the texts (default noise) plus the predictor's embeddings of the training
  clips paired with their captions (no noise);

and, for each, greedy and beam-3 decoding. Scores: captioning CIDEr from the predicted embeddings
(val and test clips) and the round trip text → y-encoder → y-decoder on the val captions.

``python -m flows.decoder_study CHECKPOINT [--dataset NAME] [--state-dir DIR] [--out DIR]``
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

VARIANTS = ("text", "text-matched-noise", "text+predicted")


def _split(model, layout, split: str, dataset: str):
    from flows.loaders import load_task_data
    from flows.data import cache_split_tokens
    from vljepa.tasks.common import frames_per_token_group

    cache = cache_split_tokens(model.cfg, layout, split, progress=False, dataset=dataset)
    return load_task_data(layout.manifest, cache.path, split, num_frames=model.cfg.x_encoder.num_frames,
                          tubelet_size=frames_per_token_group(model.cfg.x_encoder), dataset=dataset)


def run_decoder_study(checkpoint: str | Path, *, state_dir: str | None = None, dataset: str = "synthetic",
                      out_dir: str | Path | None = None, steps: int | None = None) -> dict:
    from flows.env import StateLayout
    from flows.evaluate import predicted_pairs
    from flows.loaders import decoder_texts
    from vljepa.checkpoint import load_checkpoint
    from vljepa.decoder import decoder_preset
    from vljepa.decoder_train import train_decoder
    from vljepa.evaluate import round_trip, text_embeddings
    from vljepa.tasks import captioning

    started = time.perf_counter()
    checkpoint = Path(checkpoint)
    layout = StateLayout.resolve(state_dir)
    model = load_checkpoint(checkpoint)
    splits = {s: _split(model, layout, s, dataset) for s in ("train", "val", "test")}
    train = splits["train"]
    predicted, captions = predicted_pairs(model, train)
    targets = text_embeddings(model, captions)
    error = float((predicted - targets).norm(dim=1).mean())
    base = decoder_preset(model.cfg.preset if model.cfg.preset in ("tiny", "rehearsal") else "small",
                          shared_dim=model.cfg.shared_dim)
    if steps is not None:
        base = dataclasses.replace(base, steps=steps)
    texts = decoder_texts(layout.manifest, "train", dataset)
    val_captions = sorted(set(splits["val"].captions))
    rows = []
    for name in VARIANTS:
        cfg = dataclasses.replace(base, noise_norm=error) if name == "text-matched-noise" else base
        extra = (predicted, captions) if name == "text+predicted" else None
        t0 = time.perf_counter()
        decoder = train_decoder(model, texts, cfg, extra=extra).decoder
        row = {"variant": name, "noise_norm": cfg.noise_norm, "train_seconds": round(time.perf_counter() - t0, 1),
               "round_trip_cider_val": round_trip(model, decoder, val_captions)["metrics"]["cider"]}
        for beams in (1, 3):
            for split in ("val", "test"):
                row[f"cider_{split}_beam{beams}"] = captioning.run(model, decoder, splits[split],
                                                                   num_beams=beams).metrics["cider"]
        rows.append(row)
        print(f"[decoder-study] {json.dumps(row)}", flush=True)
    best = max(((r, b) for r in rows for b in (1, 3)), key=lambda rb: rb[0][f"cider_val_beam{rb[1]}"])
    result = {"checkpoint": str(checkpoint), "dataset": dataset, "predictor_error_norm": error,
              "n": {s: len(d) for s, d in splits.items()}, "decoder_steps": base.steps, "rows": rows,
              "chosen_on_val": {"variant": best[0]["variant"], "num_beams": best[1],
                                "cider_val": best[0][f"cider_val_beam{best[1]}"],
                                "cider_test": best[0][f"cider_test_beam{best[1]}"]},
              "seconds": round(time.perf_counter() - started, 1)}
    out = Path(out_dir) if out_dir else checkpoint.parent / f"{checkpoint.name}-decoder-study"
    out.mkdir(parents=True, exist_ok=True)
    (out / "decoder_study.json").write_text(json.dumps(result, indent=1) + "\n")
    result["out_dir"] = str(out)
    return result


def markdown(result: dict) -> list[str]:
    lines = [f"Predictor error on the training clips: mean ‖predicted − y-encoder(caption)‖ = "
             f"{result['predictor_error_norm']:.3f} (unit vectors); {result['n']['val']} val and {result['n']['test']} "
             f"test clips; decoders trained {result['decoder_steps']} steps.", "",
             "| variant | noise norm | round trip CIDEr (val) | from prediction, val: greedy / beam 3 | "
             "test: greedy / beam 3 |", "|---|---|---|---|---|"]
    for r in result["rows"]:
        lines.append(f"| {r['variant']} | {r['noise_norm']:.3f} | {r['round_trip_cider_val']:.2f} | "
                     f"{r['cider_val_beam1']:.3f} / {r['cider_val_beam3']:.3f} | "
                     f"{r['cider_test_beam1']:.3f} / {r['cider_test_beam3']:.3f} |")
    chosen = result["chosen_on_val"]
    lines += ["", f"Chosen on val: **{chosen['variant']}**, beam {chosen['num_beams']} (val CIDEr "
              f"{chosen['cider_val']:.3f}; test {chosen['cider_test']:.3f})."]
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m flows.decoder_study", description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", help="a model dir (model.safetensors + config.json)")
    parser.add_argument("--dataset", default="synthetic", help="its dataset in the manifest (default synthetic)")
    parser.add_argument("--state-dir", default=None)
    parser.add_argument("--out", default=None, help="default: <checkpoint>-decoder-study")
    parser.add_argument("--steps", type=int, default=None, help="decoder training steps (default: the preset's)")
    args = parser.parse_args(argv)
    result = run_decoder_study(args.checkpoint, state_dir=args.state_dir, dataset=args.dataset, out_dir=args.out,
                               steps=args.steps)
    print("\n".join(markdown(result)) + f"\n\n{result['out_dir']}/decoder_study.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
