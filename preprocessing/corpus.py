"""The embedded default dataset: a deterministic procedural video-language corpus.

Each clip is 1..``max_events`` consecutive events; each event shows a new group of 1-3 identical
objects (size, colour, shape) doing one motion, captioned like "two large blue squares move up".
Some (colour, shape) pairs are held out of train/val and appear in event 0 of every test clip, so
the test split measures compositional generalisation. Clips are H.264 mp4 made by the ffmpeg
binary (see ``corpus_render``); annotations are written last and atomically:

    OUT/videos/clip_000000.mp4 ...
    OUT/annotations.jsonl   one object per clip, sorted by clip_id
    OUT/annotations.csv     clip_id,path,split,duration,caption,label
    OUT/corpus.json         config, config_hash, counts, vocabulary, held_out_pairs, labels

Usage: ``python -m preprocessing.corpus --out data/corpus`` (``--help`` for the knobs).
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import io
import json
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from preprocessing.corpus_render import PALETTE, SHAPES, Background, RenderJob, plan_group, render_clip
from vljepa.files import atomic_write_text, content_key_sha256, remove_stale_temps

FORMAT_VERSION = 1  # bump when rendering or annotation semantics change: it invalidates old corpora
COLOURS: tuple[str, ...] = tuple(PALETTE)
SIZES: tuple[str, ...] = ("small", "large")
MOTIONS: tuple[str, ...] = ("moves left", "moves right", "moves up", "moves down", "grows", "shrinks")
COUNT_WORDS = {1: "a", 2: "two", 3: "three"}
COUNT_ANSWERS = {1: "one", 2: "two", 3: "three"}
PLURAL_SHAPES = {"circle": "circles", "square": "squares", "triangle": "triangles", "diamond": "diamonds", "cross": "crosses"}
PLURAL_MOTIONS = {"moves left": "move left", "moves right": "move right", "moves up": "move up",
                  "moves down": "move down", "grows": "grow", "shrinks": "shrink"}
MOTION_ANSWERS = {"moves left": "left", "moves right": "right", "moves up": "up", "moves down": "down",
                  "grows": "grows", "shrinks": "shrinks"}
SPLITS = ("train", "val", "test")
_MARKER = ".corpus_inprogress.json"  # says which config a half-finished OUT belongs to


@dataclass(frozen=True, kw_only=True)
class CorpusConfig:
    """What corpus to generate. Everything but ``workers`` determines the content (and the hash)."""

    n_videos: int = 1200
    seed: int = 0
    width: int = 192  # 4:3 on purpose: the pipeline's decoder scales and centre-crops
    height: int = 144
    fps: int = 10
    event_seconds: float = 2.0  # mean event length; each event is jittered by ±25 %
    max_events: int = 4
    multi_event_fraction: float = 0.3  # clips with 2..max_events events; the rest have one
    held_out_fraction: float = 0.2  # of the 35 (colour, shape) pairs, kept out of train/val
    val_fraction: float = 0.1
    test_fraction: float = 0.1
    workers: int = 2  # render processes; does not change the output

    def __post_init__(self) -> None:
        problems = []
        if self.n_videos < 1:
            problems.append(f"n_videos must be >= 1, got {self.n_videos}")
        if self.width % 2 or self.height % 2 or min(self.width, self.height) < 32:
            problems.append(f"width and height must be even and >= 32 (yuv420p), got {self.width}x{self.height}")
        if self.fps < 1 or round(0.75 * self.event_seconds * self.fps) < 2:
            problems.append(f"events need >= 2 frames: fps={self.fps}, event_seconds={self.event_seconds}")
        if self.max_events < 1:
            problems.append(f"max_events must be >= 1, got {self.max_events}")
        for name in ("multi_event_fraction", "held_out_fraction", "val_fraction", "test_fraction"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                problems.append(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if self.workers < 1:
            problems.append(f"workers must be >= 1, got {self.workers}")
        if self.test_fraction > 0 and n_held_out(self) == 0:
            problems.append("test clips need held-out pairs: raise held_out_fraction or set test_fraction=0")
        if split_sizes(self)["train"] < 1:
            problems.append(f"no training clips left: val_fraction + test_fraction = {self.val_fraction + self.test_fraction}")
        if problems:
            raise ValueError("invalid CorpusConfig: " + "; ".join(problems))

    def content_dict(self) -> dict[str, Any]:
        """The fields that determine the corpus (all but ``workers``), as saved in corpus.json."""
        return {k: v for k, v in dataclasses.asdict(self).items() if k != "workers"}

    def config_hash(self) -> str:
        """sha256 over the content fields and ``FORMAT_VERSION``: equal hashes mean equal corpora."""
        # Not canonical_json (whose separators differ): corpora on disk carry this hash.
        payload = json.dumps({"format_version": FORMAT_VERSION, **self.content_dict()}, sort_keys=True)
        return content_key_sha256(payload)



@dataclass(frozen=True, kw_only=True)
class Event:
    """One event of a clip: the group shown and what it does, from ``start_frame`` to ``end_frame``."""

    start_frame: int
    end_frame: int  # exclusive
    colour: str
    shape: str
    size: str
    count: int
    motion: str


@dataclass(frozen=True, kw_only=True)
class ClipPlan:
    """A fully decided clip: its words (``events``) and its pixels (``job``)."""

    index: int
    split: str
    events: tuple[Event, ...]
    job: RenderJob

    @property
    def clip_id(self) -> str:
        return f"clip_{self.index:06d}"

    @property
    def path(self) -> str:
        return f"videos/{self.clip_id}.mp4"


@dataclass(frozen=True, kw_only=True)
class CorpusSummary:
    """What ``generate_corpus`` did."""

    out_dir: Path
    counts: dict[str, int]
    n_generated: int
    n_reused: int
    config_hash: str


def n_held_out(cfg: CorpusConfig) -> int:
    """How many of the 35 (colour, shape) pairs are held out."""
    return round(cfg.held_out_fraction * len(COLOURS) * len(SHAPES))


def split_sizes(cfg: CorpusConfig) -> dict[str, int]:
    """Exact number of clips per split (val and test rounded, train takes the rest)."""
    n_test, n_val = round(cfg.n_videos * cfg.test_fraction), round(cfg.n_videos * cfg.val_fraction)
    return {"train": cfg.n_videos - n_val - n_test, "val": n_val, "test": n_test}


PRESETS: dict[str, CorpusConfig] = {
    "small": CorpusConfig(),  # the embedded default
    "tiny": CorpusConfig(n_videos=24, width=96, height=72, fps=8, event_seconds=1.0, max_events=3,
                         multi_event_fraction=0.5, val_fraction=0.125, test_fraction=0.125, workers=1),
}


def held_out_pairs(cfg: CorpusConfig) -> list[tuple[str, str]]:
    """The (colour, shape) pairs never shown in train/val, in vocabulary order.

    Drawn from ``seed`` and redrawn until every colour and every shape keeps a training pair.
    """
    pairs = [(c, s) for c in COLOURS for s in SHAPES]
    rng = np.random.default_rng([cfg.seed, 1])
    for _ in range(1000):
        chosen = set(rng.choice(len(pairs), size=n_held_out(cfg), replace=False).tolist())
        train = [p for i, p in enumerate(pairs) if i not in chosen]
        if {c for c, _ in train} == set(COLOURS) and {s for _, s in train} == set(SHAPES):
            return [p for i, p in enumerate(pairs) if i in chosen]
    raise ValueError(f"held_out_fraction={cfg.held_out_fraction} leaves some colour or shape without a "
                     "training pair; lower it")


def assign_splits(cfg: CorpusConfig) -> list[str]:
    """Split of each clip index: a seeded permutation, exact sizes from ``split_sizes``."""
    sizes = split_sizes(cfg)
    order = np.random.default_rng([cfg.seed, 2]).permutation(cfg.n_videos)
    splits = ["train"] * cfg.n_videos
    for position, index in enumerate(order.tolist()):
        splits[index] = "test" if position < sizes["test"] else "val" if position < sizes["test"] + sizes["val"] else "train"
    return splits


def plan_clip(cfg: CorpusConfig, index: int, split: str, held_out: list[tuple[str, str]]) -> ClipPlan:
    """Decide clip ``index`` from its own RNG (seeded by (seed, index)), independent of any other clip."""
    rng = np.random.default_rng([cfg.seed, 3, index])
    all_pairs = [(c, s) for c in COLOURS for s in SHAPES]
    held_out_set = set(held_out)
    train_pairs = [p for p in all_pairs if p not in held_out_set]
    n_events = 1
    if cfg.max_events > 1 and rng.random() < cfg.multi_event_fraction:
        n_events = int(rng.integers(2, cfg.max_events + 1))
    events, groups, frame, previous = [], [], 0, None
    for e in range(n_events):
        pool = (held_out if e == 0 else all_pairs) if split == "test" else train_pairs
        while True:  # a new group each event: never the same (colour, shape) twice in a row
            colour, shape = pool[int(rng.integers(len(pool)))]
            if (colour, shape) != previous or len(pool) == 1:
                break
        previous = (colour, shape)
        size, motion = SIZES[int(rng.integers(len(SIZES)))], MOTIONS[int(rng.integers(len(MOTIONS)))]
        count = int(rng.integers(1, 4))
        n_frames = max(2, round(cfg.event_seconds * rng.uniform(0.75, 1.25) * cfg.fps))
        events.append(Event(start_frame=frame, end_frame=frame + n_frames, colour=colour, shape=shape,
                            size=size, count=count, motion=motion))
        groups.append(plan_group(rng, width=cfg.width, height=cfg.height, n_frames=n_frames, colour=colour,
                                 shape=shape, size=size, count=count, motion=motion))
        frame += n_frames
    tint = tuple(int(v) for v in rng.integers(5, 36, size=3))
    background = Background(tint=tint, ramp=int(rng.integers(0, 16)), noise_seed=int(rng.integers(2**31)))
    job = RenderJob(width=cfg.width, height=cfg.height, fps=cfg.fps, background=background, groups=tuple(groups))
    return ClipPlan(index=index, split=split, events=tuple(events), job=job)


def plan_corpus(cfg: CorpusConfig) -> list[ClipPlan]:
    """Plan every clip of the corpus, in clip_id order."""
    held_out, splits = held_out_pairs(cfg), assign_splits(cfg)
    return [plan_clip(cfg, i, splits[i], held_out) for i in range(cfg.n_videos)]


def event_caption(ev: Event) -> str:
    """E.g. "a small red circle moves left", "three large white crosses grow"."""
    if ev.count == 1:
        return f"a {ev.size} {ev.colour} {ev.shape} {ev.motion}"
    return f"{COUNT_WORDS[ev.count]} {ev.size} {ev.colour} {PLURAL_SHAPES[ev.shape]} {PLURAL_MOTIONS[ev.motion]}"


def qa_pairs(ev: Event) -> list[dict[str, str]]:
    """Questions about ``ev`` with one-word answers; verbs and nouns agree with its count."""
    one = ev.count == 1
    noun = ev.shape if one else PLURAL_SHAPES[ev.shape]
    be, do, obj = ("is", "does", "object") if one else ("are", "do", "objects")
    return [
        {"question": f"what colour {be} the {noun}?", "answer": ev.colour},
        {"question": f"what shape {be} the {ev.colour} {obj}?", "answer": ev.shape},
        {"question": f"how many {ev.colour} {PLURAL_SHAPES[ev.shape]} are there?", "answer": COUNT_ANSWERS[ev.count]},
        {"question": f"which way {do} the {ev.colour} {noun} move?", "answer": MOTION_ANSWERS[ev.motion]},
    ]


def clip_record(plan: ClipPlan, fps: int) -> dict[str, Any]:
    """The annotations.jsonl object for one clip (times in seconds, events contiguous over [0, duration])."""
    events = [{"start": round(ev.start_frame / fps, 4), "end": round(ev.end_frame / fps, 4),
               "caption": event_caption(ev), "colour": ev.colour, "shape": ev.shape, "size": ev.size,
               "count": ev.count, "motion": ev.motion} for ev in plan.events]
    first = plan.events[0]
    return {
        "clip_id": plan.clip_id, "path": plan.path, "split": plan.split,
        "duration": round(plan.events[-1].end_frame / fps, 4), "fps": fps,
        "width": plan.job.width, "height": plan.job.height,
        "caption": ", then ".join(e["caption"] for e in events), "label": f"{first.colour} {first.shape}",
        "events": events, "qa": qa_pairs(first),
    }


def _claim_out_dir(out_dir: Path, cfg: CorpusConfig) -> None:
    """Make sure ``out_dir`` is empty or holds (part of) this very corpus; fail loudly otherwise."""
    digest = cfg.config_hash()
    for name in ("corpus.json", _MARKER):
        if (out_dir / name).exists():
            found = json.loads((out_dir / name).read_text()).get("config_hash")
            if found != digest:
                raise ValueError(f"{out_dir} already holds a corpus made with a different config (config_hash "
                                 f"{found} in {name}, this config has {digest}); pass an empty --out or delete it")
            return
    if out_dir.exists() and any(out_dir.iterdir()):
        raise ValueError(f"{out_dir} is not empty and holds no corpus.json; pass an empty or new --out")
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out_dir / _MARKER, json.dumps({"config": cfg.content_dict(), "config_hash": digest}))


def generate_corpus(cfg: CorpusConfig, out_dir: str | Path, *, progress: bool = True) -> CorpusSummary:
    """Render the corpus ``cfg`` into ``out_dir`` (layout in the module docstring); idempotent.

    Clips already present are kept (each mp4 appears only by rename after ffmpeg succeeded), so a
    re-run or a resumed run renders only what is missing. A directory made with another config is
    an error. Annotation files are written last, atomically, byte-identical for equal configs.
    """
    out_dir = Path(out_dir)
    _claim_out_dir(out_dir, cfg)
    videos = out_dir / "videos"
    videos.mkdir(exist_ok=True)
    remove_stale_temps(videos, "clip_*.mp4")  # left by an interrupted run, unless its writer is alive
    plans = plan_corpus(cfg)
    todo = [p for p in plans if not (out_dir / p.path).is_file()]
    bar = tqdm(total=len(todo), desc=f"rendering {out_dir.name}", unit="clip", disable=not progress or not todo)
    if cfg.workers == 1 or len(todo) <= 1:
        for plan in todo:
            render_clip(plan.job, str(out_dir / plan.path))
            bar.update()
    else:  # spawn: the caller may hold threads (torch) that fork would copy in a broken state
        with ProcessPoolExecutor(max_workers=cfg.workers, mp_context=get_context("spawn")) as pool:
            futures = [pool.submit(render_clip, p.job, str(out_dir / p.path)) for p in todo]
            try:
                for future in as_completed(futures):
                    future.result()  # re-raises a worker's ffmpeg error here
                    bar.update()
            except BaseException:
                pool.shutdown(wait=True, cancel_futures=True)  # stop at the first failure, not after all
                raise
    bar.close()

    records = [clip_record(p, cfg.fps) for p in plans]
    counts = {s: sum(p.split == s for p in plans) for s in SPLITS}
    table = io.StringIO()
    writer = csv.writer(table, lineterminator="\n")
    writer.writerow(["clip_id", "path", "split", "duration", "caption", "label"])
    writer.writerows([r["clip_id"], r["path"], r["split"], r["duration"], r["caption"], r["label"]] for r in records)
    corpus = {
        "config": cfg.content_dict(), "config_hash": cfg.config_hash(), "counts": counts,
        "colours": list(COLOURS), "shapes": list(SHAPES), "sizes": list(SIZES), "motions": list(MOTIONS),
        "held_out_pairs": [list(p) for p in held_out_pairs(cfg)],
        "labels": [f"{c} {s}" for c in COLOURS for s in SHAPES],
    }
    atomic_write_text(out_dir / "annotations.jsonl", "".join(json.dumps(r) + "\n" for r in records))
    atomic_write_text(out_dir / "annotations.csv", table.getvalue())
    atomic_write_text(out_dir / "corpus.json", json.dumps(corpus, indent=2) + "\n")
    (out_dir / _MARKER).unlink(missing_ok=True)
    return CorpusSummary(out_dir=out_dir, counts=counts, n_generated=len(todo),
                         n_reused=len(plans) - len(todo), config_hash=cfg.config_hash())


def build_parser(prog: str = "python -m preprocessing.corpus") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Generate the procedural video-language corpus: H.264 clips of coloured shapes that move, "
                    "grow or shrink, with captions, labels and VQA pairs. Re-running is idempotent.",
        epilog="writes OUT/videos/clip_NNNNNN.mp4, OUT/annotations.jsonl, OUT/annotations.csv and OUT/corpus.json; "
               "clips already rendered for the same config are reused",
    )
    parser.add_argument("--out", required=True, type=Path, help="output directory (new, empty, or this corpus)")
    parser.add_argument("--preset", choices=sorted(PRESETS), default="small",
                        help="base config, 'small' by default; the flags below override it")
    help_text = {
        "n_videos": "number of clips", "seed": "seed for held-out pairs, splits and every clip",
        "width": "frame width in pixels (even)", "height": "frame height in pixels (even)", "fps": "frames per second",
        "event_seconds": "mean event length in seconds (jittered ±25%%)", "max_events": "most events in one clip",
        "multi_event_fraction": "fraction of clips with 2..max_events events",
        "held_out_fraction": "fraction of the 35 (colour, shape) pairs kept for test only",
        "val_fraction": "fraction of clips in val", "test_fraction": "fraction of clips in test",
        "workers": "render processes",
    }
    for field in dataclasses.fields(CorpusConfig):
        parser.add_argument(f"--{field.name.replace('_', '-')}", type=type(field.default), default=None,
                            help=f"{help_text[field.name]} (small: {field.default}, tiny: {getattr(PRESETS['tiny'], field.name)})")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return parser


def main(argv: list[str] | None = None, *, prog: str = "python -m preprocessing.corpus") -> int:
    """CLI: parse flags into a ``CorpusConfig``, run ``generate_corpus`` and print a summary.

    ``prog`` names the command in usage and error lines (``vljepa corpus`` when run through ``flows.cli``).
    """
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    overrides = {f.name: getattr(args, f.name) for f in dataclasses.fields(CorpusConfig) if getattr(args, f.name) is not None}
    started = time.perf_counter()
    try:  # a bad config or a foreign --out is the user's to fix: say so without a traceback
        cfg = dataclasses.replace(PRESETS[args.preset], **overrides)
        summary = generate_corpus(cfg, args.out, progress=not args.no_progress)
    except ValueError as err:
        parser.error(str(err))
    seconds = time.perf_counter() - started
    counts = ", ".join(f"{k} {v}" for k, v in summary.counts.items())
    print(f"corpus at {summary.out_dir} ({counts}): rendered {summary.n_generated}, reused {summary.n_reused} "
          f"in {seconds:.1f}s; config_hash {summary.config_hash[:12]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
