"""``vljepa preprocess``: import a dataset, then decode, sample, encode and cache its tokens per split
(``flows.preprocess.run_preprocess``, the ``preprocess/full`` deployment's stage, in this process)."""

from __future__ import annotations

import argparse
import json

from flows.cli.common import add_config_arguments, add_state_arguments, emit, run_config
from flows.resolve import ENGINES

HELP = ("import a dataset into the manifest and cache its frozen x-encoder tokens per split (a progress bar "
        "with clips/s and ETA; a summary of cached / failed by reason)")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("source", help="a corpus directory, a folder of videos/images with a CSV or JSONL of "
                                  "annotations, video2dataset tars, or the video folder of an MSR-VTT-style JSON")
    p.add_argument("--kind", choices=["corpus", "folder", "video2dataset", "msrvtt"], default=None,
                   help="default: read from the source's layout (as `vljepa run --data`)")
    p.add_argument("--annotations", default=None, help="folder: CSV or JSONL (path, caption[, split, label, "
                                                        "question, answer])")
    p.add_argument("--media-dir", default=None, help="video2dataset: where the videos are extracted")
    p.add_argument("--dataset", default=None,
                   help="dataset name in the manifest (default: 'synthetic' for a corpus, else the name "
                        "`vljepa run --data` gives the same folder, so its caches are reused)")
    p.add_argument("--splits", nargs="+", default=["train", "val", "test"])
    p.add_argument("--format", choices=["parquet", "webdataset"], default="parquet", dest="cache_format")
    p.add_argument("--shard-size", type=int, default=None, help="samples per shard (default 512)")
    p.add_argument("--sampling", choices=["uniform", "fps", "sliding"], default="uniform",
                   help="uniform: the x-encoder's frames per clip (paper: 16)")
    p.add_argument("--engine", choices=ENGINES, default="local")
    p.add_argument("--allow-outside-root", action="store_true",
                   help="let annotation rows name files outside the source folder")
    add_config_arguments(p)
    add_state_arguments(p, tracking=False)
    p.add_argument("--json", action="store_true", help="print the summary as JSON")


def main(args: argparse.Namespace) -> int:
    from flows.preprocess import cache_summary, preprocess_job, run_preprocess, summary_lines
    from flows.user_data import DataSource, dataset_name, detect_source

    if args.kind is None:
        found = detect_source(args.source, annotations=args.annotations, media_dir=args.media_dir)
    else:
        found = DataSource(kind=args.kind, source=args.source, dataset=dataset_name(args.source),
                           annotations=args.annotations, media_dir=args.media_dir)
    dataset = args.dataset or ("synthetic" if found.kind == "corpus" else found.dataset)
    job = preprocess_job(run_config(args, engine=args.engine), found.source, kind=found.kind, dataset=dataset,
                         annotations=found.annotations, media_dir=found.media_dir, splits=tuple(args.splits),
                         cache_format=args.cache_format, shard_size=args.shard_size, sampling_strategy=args.sampling,
                         allow_outside_root=args.allow_outside_root, progress=not args.json)
    summary = run_preprocess(job)
    if args.json:
        caches = {split: {**cache_summary(r), "failures": [vars(f) for f in r.failures]}
                  for split, r in summary.caches.items()}
        emit(json.dumps({"import": vars(summary.imported), "caches": caches, "empty_splits": summary.empty}, indent=2))
    else:
        emit("\n".join(summary_lines(summary)))
    return 0
