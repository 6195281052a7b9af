"""``vljepa data ...`` (a sub-command with its own sub-commands): import data, define and inspect data mixes, list failures.

Examples::

    vljepa data --manifest .vljepa/manifest.duckdb import folder DIR --annotations DIR/ann.csv --dataset mine
    vljepa data import video2dataset shard-0000.tar shard-0001.tar --media-dir media --dataset web
    vljepa data import corpus CORPUS_DIR
    vljepa data import msrvtt MSRVTT/train_val_videodatainfo.json --videos MSRVTT/TrainValVideo --dataset msrvtt
    vljepa data mix create sft --component vqa=vqa:synthetic:train:1 --component cap=caption:synthetic:train:1
    vljepa data mix presets
    vljepa data mix create sft --preset sft-paper --dataset synthetic --stills-dataset synthetic-stills
    vljepa data mix show sft --n-draws 10000
    vljepa data failures --stage decode
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence


def build_parser(prog: str = "vljepa data") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog, description="Manage the DuckDB data manifest: imports, data mixes, failures.",
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("Examples::", 1)[1])
    parser.add_argument("--manifest", default=None, help="DuckDB manifest file (default: the state dir's, $VLJEPA_STATE_DIR or <repo>/.vljepa)")
    sub = parser.add_subparsers(dest="command", required=True)

    imp = sub.add_parser("import", help="import media and annotations into the manifest")
    kinds = imp.add_subparsers(dest="kind", required=True)
    folder = kinds.add_parser("folder", help="a folder of videos/images + a CSV or JSONL of annotations")
    folder.add_argument("folder")
    folder.add_argument("--annotations", required=True, help="CSV or JSONL: path, caption[, clip_id, split, label, question, answer]")
    folder.add_argument("--dataset", required=True)
    folder.add_argument("--split", default=None,
                        help="split of rows without one (default: from a hash of the clip id, 80/10/10 "
                             "train/val/test; adding clips never moves the old ones)")
    folder.add_argument("--allow-outside-root", action="store_true",
                        help="let rows name files outside FOLDER (../x, /abs/path, symlinks out); by default "
                             "such a row is a recorded failure and its file is never opened")
    v2d = kinds.add_parser("video2dataset", help="WebDataset tars as video2dataset writes them (mp4 + txt/json per key)")
    v2d.add_argument("tars", nargs="+")
    v2d.add_argument("--media-dir", required=True, help="where the videos are extracted")
    v2d.add_argument("--dataset", required=True)
    v2d.add_argument("--split", default=None, help="every key's split (default: the key's JSON 'split', else a "
                                                   "hash of the clip id, 80/10/10)")
    msrvtt = kinds.add_parser("msrvtt", help="an MSR-VTT-style JSON (videos + sentences) and its video folder")
    msrvtt.add_argument("annotations", help="the JSON (videos: video_id[, split]; sentences: video_id, caption)")
    msrvtt.add_argument("--videos", required=True, help="the folder of <video_id>.mp4 files")
    msrvtt.add_argument("--dataset", required=True)
    msrvtt.add_argument("--allow-outside-root", action="store_true",
                        help="let video files resolve outside --videos (symlinks out)")
    corpus = kinds.add_parser("corpus", help="a generated corpus (annotations.jsonl + videos/)")
    corpus.add_argument("corpus_dir")
    corpus.add_argument("--dataset", default="synthetic")
    corpus.add_argument("--allow-outside-root", action="store_true",
                        help="let records name files outside CORPUS_DIR (by default a recorded failure)")

    mix = sub.add_parser("mix", help="data mixes: named, weighted components")
    mixes = mix.add_subparsers(dest="mix_command", required=True)
    create = mixes.add_parser("create", help="create or replace a mix: from --component's, or from a --preset")
    create.add_argument("name")
    given = create.add_mutually_exclusive_group(required=True)
    given.add_argument("--component", action="append", metavar="NAME=TASK:DATASET:SPLIT:WEIGHT",
                       help="repeat per component; TASK is caption, vqa, classification or event")
    given.add_argument("--preset", help="a preset of `vljepa data mix presets` (the paper recipe's mixes)")
    create.add_argument("--dataset", help="with --preset: the videos' dataset (default synthetic)")
    create.add_argument("--stills-dataset", help="with --preset: the images' dataset (default synthetic-stills)")
    create.add_argument("--split", help="with --preset: the split of every component (default train)")
    create.add_argument("--description", help="with --component (a preset has its own)")
    create.set_defaults(create_parser=create)
    mixes.add_parser("presets", help="the preset mixes: components and shares")
    show = mixes.add_parser("show", help="component counts, shares, token totals and epochs")
    show.add_argument("name")
    show.add_argument("--n-draws", type=int, help="training draws, to compute epochs per component")
    show.add_argument("--json", action="store_true")

    failures = sub.add_parser("failures", help="recorded failures, grouped by reason with counts")
    failures.add_argument("--stage", help="only this stage (import, decode, encode)")
    failures.add_argument("--all", action="store_true", help="every failure with its full error, not the groups")
    failures.add_argument("--json", action="store_true", help="every failure as JSON (with its reason)")
    failures.add_argument("--retry", action="store_true",
                          help="re-import only the rows that failed at import (after you fixed them in place), "
                               "from the annotation files they came from; the others are not read again")
    notes = sub.add_parser("notes", help="rows kept with a note: invalid UTF-8 replaced, captions longer than the "
                                         "y-encoder reads")
    notes.add_argument("--json", action="store_true")
    return parser


def main(argv: Sequence[str] | None = None, *, prog: str = "vljepa data") -> int:
    """Run `vljepa data` with ``argv``; returns the exit code (``prog`` names it in usage lines)."""
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    from flows.cli.common import json_mode

    with json_mode(bool(getattr(args, "json", False))):
        return _main(parser, args)


def _main(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    if args.command == "mix" and args.mix_command == "presets":
        return _print_presets()
    if args.command == "mix" and args.mix_command == "create":
        _check_create_args(args.create_parser, args)
    from flows.cli.common import emit
    from flows.env import StateLayout
    from preprocessing.manifest import list_failures, open_manifest

    read_only = (args.command == "notes" or (args.command == "failures" and not args.retry)
                 or (args.command == "mix" and args.mix_command == "show"))
    try:
        con = open_manifest(args.manifest or StateLayout.resolve().manifest, read_only=read_only)
    except FileNotFoundError as err:  # nothing imported yet: say what to run, no traceback
        parser.exit(2, f"vljepa data: error: {err}\n")
    try:
        if args.command == "import":
            if args.kind == "folder":
                from preprocessing.importers import import_folder

                summary = import_folder(con, args.folder, args.annotations, dataset=args.dataset, default_split=args.split,
                                        allow_outside_root=args.allow_outside_root)
            elif args.kind == "video2dataset":
                from preprocessing.importers import import_video2dataset

                summary = import_video2dataset(con, args.tars, args.media_dir, dataset=args.dataset, split=args.split)
            elif args.kind == "msrvtt":
                from preprocessing.importers import import_msrvtt

                summary = import_msrvtt(con, args.annotations, args.videos, dataset=args.dataset,
                                        allow_outside_root=args.allow_outside_root)
            else:
                from preprocessing.manifest import import_corpus

                summary = import_corpus(con, args.corpus_dir, dataset=args.dataset,
                                        allow_outside_root=args.allow_outside_root)
            print(f"in {summary.n_in}: imported {summary.n_imported}, unchanged {summary.n_skipped}, "
                  f"failed {summary.n_failed}" + (" (see `vljepa data failures`)" if summary.n_failed else ""))
            return 0
        if args.command == "mix":
            from preprocessing.mix import MixComponent, create_mix, create_preset_mix, mix_stats

            if args.mix_command == "create":
                if args.preset:
                    components = create_preset_mix(con, args.preset, mix_name=args.name, **_preset_data(args))
                else:
                    components = [MixComponent.parse(text) for text in args.component]
                    create_mix(con, args.name, components, args.description)
                print(f"mix {args.name!r}: {len(components)} components")
                return 0
            stats = mix_stats(con, args.name, args.n_draws)
            if args.json:
                emit(json.dumps([s.__dict__ for s in stats], indent=2))
                return 0
            print("share: expected fraction of draws; epochs: passes over the component's items in "
                  + (f"{args.n_draws:,} draws" if args.n_draws else "N draws (give --n-draws N)"))
            print(f"{'component':<16}{'task':<16}{'data':<24}{'share':>7}{'items':>8}{'clips':>8}{'tokens':>12}{'epochs':>9}")
            for s in stats:
                tokens = "-" if s.n_tokens is None else f"{s.n_tokens:,}"
                epochs = "-" if s.epochs is None else f"{s.epochs:.2f}"
                print(f"{s.component:<16}{s.task:<16}{s.dataset + '/' + s.split:<24}{s.share:>7.3f}"
                      f"{s.n_items:>8}{s.n_sources:>8}{tokens:>12}{epochs:>9}")
            return 0
        if args.command == "notes":
            from preprocessing.manifest import list_import_notes

            notes = list_import_notes(con)
            if args.json:
                emit(json.dumps(notes, indent=2, default=str))
            for note in [] if args.json else notes:
                print(f"{note['path']}\n        {note['note']}")
            print(f"{len(notes)} note(s)", file=sys.stderr if args.json else sys.stdout)
            return 0
        if args.retry:
            from preprocessing.retry import retry_import_failures

            for line in retry_import_failures(con).lines():
                print(line)
        from preprocessing.manifest import failure_reason

        rows = [{**row, "reason": failure_reason(row["error"])} for row in list_failures(con, args.stage)]
        if args.json:
            emit(json.dumps(rows, indent=2, default=str))
        elif args.all:
            for row in rows:
                print(f"{row['stage']:<8}{row['path']}\n        {row['error']}")
        else:
            groups: dict[tuple[str, str], list[dict]] = {}
            for row in rows:
                groups.setdefault((row["stage"], row["reason"]), []).append(row)
            for (stage, reason), members in sorted(groups.items(), key=lambda g: (-len(g[1]), g[0])):
                print(f"{len(members):>6}  {stage:<7} {reason}")
                for row in members[:3]:
                    print(f"{'':>16}{row['path']}")
                if len(members) > 3:
                    print(f"{'':>16}… {len(members) - 3} more (--all lists every one, with its error)")
        print(f"{len(rows)} failure(s)", file=sys.stderr if args.json else sys.stdout)
        return 0
    finally:
        con.close()


def _preset_data(args: argparse.Namespace) -> dict[str, str]:
    """create_preset_mix's dataset arguments that were given (the rest keep its defaults)."""
    given = {"dataset": args.dataset, "stills_dataset": args.stills_dataset, "split": args.split}
    return {k: v for k, v in given.items() if v is not None}


def _check_create_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.preset:
        from preprocessing.mix import MIX_PRESETS

        if args.preset not in MIX_PRESETS:
            parser.error(f"unknown --preset {args.preset!r}; known: {', '.join(sorted(MIX_PRESETS))}")
        if args.description is not None:
            parser.error("--description goes with --component: a preset has its own")
    elif _preset_data(args):
        parser.error("--dataset, --stills-dataset and --split go with --preset; a --component names its own")


def _print_presets() -> int:
    from preprocessing.mix import MIX_PRESETS

    for name, preset in MIX_PRESETS.items():
        print(f"{name}: {preset.description}")
        shares = preset.shares()
        for c in preset.components:
            data = "DATASET" if c.source == "dataset" else "STILLS_DATASET"
            print(f"    {c.name:<16}{c.task:<16}{data:<16}weight {c.weight:<8g}share {shares[c.name]:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
