"""A procedural stream benchmark for selective decoding, shaped after the paper's EgoExo4D set.

The paper's benchmark (final version §4.5; EgoExo4D validation, procedural domains) has 218
videos of ~6 minutes, each with ~143 atomic action descriptions (one every ~2.5 s) inside longer
keysteps, so neighbouring annotations are related ("C stirs the pot", "C adds salt to the pot").
The main corpus is the wrong testbed for it: each 2 s event there is a fresh random draw.

Here a **stream** is a procedure of **keysteps** of tens of seconds. A keystep is a setting (a
backdrop) and a composition of ``objects_per_keystep`` objects (size, colour, shape) that stay on
screen through it; inside it, **atomic actions** of ``action_seconds`` on average (±40 %) follow each
other without gaps, each one object of the keystep doing one motion ("the large red circle moves
left"); objects stay where their last action left them. Annotations are the atomic captions
stamped at each action's midpoint, with the keystep labels. Keystep compositions are split: test
and val streams use only compositions no training stream shows (the objects are all seen in
training, their combination is not). Everything is drawn from ``seed``; equal configs give
byte-identical files.

Layout (``python -m preprocessing.streams --out DIR``)::

    DIR/streams/stream_NNN.mp4    val and test streams, whole (train streams exist as clips only)
    DIR/streams.jsonl             per stream: id, split, duration, keysteps, annotations
    DIR/clips/videos/*.mp4        one clip per atomic action of every stream (train/val/test)
    DIR/clips/annotations.jsonl   clip_id, path, split, caption, label (the keystep), duration
    DIR/stream_corpus.json        config, config_hash, counts and the statistics beside the paper's
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import subprocess
import sys
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path
from typing import Any

import numpy as np

from preprocessing.corpus import COLOURS, MOTIONS, SIZES
from preprocessing.corpus_render import (H264_ARGS, PALETTE, SCALING, SHAPES, SIZE_RADIUS, TRANSLATION, Background,
                                         render_background, safe_box, shape_mask)
from vljepa.files import atomic_write_text, content_key_sha256

FORMAT_VERSION = 1
# The paper's benchmark (EgoExo4D validation, procedural domains), as its final version reports it.
PAPER = {"streams": 218, "stream_seconds": 6 * 60, "annotations_per_stream": 143, "spacing_seconds": 2.5}
STEP = 0.25  # how far one translation moves an object, as a fraction of min(W, H)


@dataclass(frozen=True, kw_only=True)
class StreamCorpusConfig:
    n_train: int = 48
    n_val: int = 8
    n_test: int = 16
    stream_seconds: float = 180.0  # mean length (±20 %)
    keystep_seconds: float = 30.0  # mean keystep length (±33 %)
    action_seconds: float = 2.5  # mean atomic action length (±40 %)
    objects_per_keystep: int = 3
    held_out_fraction: float = 0.3  # of keystep compositions: never in a training stream
    width: int = 192
    height: int = 144
    fps: int = 10
    seed: int = 0

    def __post_init__(self) -> None:
        problems = []
        if min(self.n_train, self.n_test) < 1 or self.n_val < 0:
            problems.append("n_train and n_test must be >= 1, n_val >= 0")
        if not self.action_seconds * 0.6 * self.fps >= 2:
            problems.append(f"actions need >= 2 frames: action_seconds={self.action_seconds}, fps={self.fps}")
        if not self.action_seconds < self.keystep_seconds < self.stream_seconds:
            problems.append("need action_seconds < keystep_seconds < stream_seconds")
        if not 1 <= self.objects_per_keystep <= 4:
            problems.append("objects_per_keystep must be 1..4")
        if not 0 < self.held_out_fraction < 1:
            problems.append("held_out_fraction must be in (0, 1)")
        if problems:
            raise ValueError("invalid StreamCorpusConfig: " + "; ".join(problems))

    def config_hash(self) -> str:
        return content_key_sha256(json.dumps({"format_version": FORMAT_VERSION, **dataclasses.asdict(self)},
                                             sort_keys=True))


PRESETS = {"small": StreamCorpusConfig(),
           "tiny": StreamCorpusConfig(n_train=3, n_val=1, n_test=2, stream_seconds=30.0, keystep_seconds=10.0,
                                      action_seconds=2.0, width=96, height=72, fps=8)}


@dataclass(frozen=True)
class Obj:
    size: str
    colour: str
    shape: str

    @property
    def name(self) -> str:
        return f"{self.size} {self.colour} {self.shape}"


@dataclass(frozen=True)
class Action:
    start_frame: int
    end_frame: int  # exclusive
    actor: int  # index into the keystep's objects
    motion: str
    # per object, (x, y, scale) at the start and at the end of the action
    before: tuple[tuple[float, float, float], ...]
    after: tuple[tuple[float, float, float], ...]


@dataclass(frozen=True)
class Keystep:
    start_frame: int
    end_frame: int
    objects: tuple[Obj, ...]
    background: Background
    actions: tuple[Action, ...]

    @property
    def label(self) -> str:
        names = [o.name for o in self.objects]
        return "with the " + (", the ".join(names[:-1]) + " and the " + names[-1] if len(names) > 1 else names[0])


def caption(obj: Obj, motion: str) -> str:
    return f"the {obj.name} {motion}"


def compositions(cfg: StreamCorpusConfig) -> tuple[list[tuple[tuple[str, str], ...]], list[tuple[tuple[str, str], ...]]]:
    """(training, held-out) keystep compositions: sets of distinct (colour, shape) pairs, split by seed."""
    pairs = [(c, s) for c in COLOURS for s in SHAPES]
    every = [combo for combo in combinations(pairs, cfg.objects_per_keystep)
             if len({c for c, _ in combo}) == len(combo)]  # distinct colours: captions name one object each
    held = np.random.default_rng([cfg.seed, 11]).random(len(every)) < cfg.held_out_fraction
    return [c for c, h in zip(every, held) if not h], [c for c, h in zip(every, held) if h]


def splits(cfg: StreamCorpusConfig) -> list[str]:
    return ["train"] * cfg.n_train + ["val"] * cfg.n_val + ["test"] * cfg.n_test


def _jitter(rng: np.random.Generator, mean: float, spread: float) -> float:
    return mean * rng.uniform(1 - spread, 1 + spread)


def plan_stream(cfg: StreamCorpusConfig, index: int, split: str) -> list[Keystep]:
    """Decide stream ``index`` from its own RNG (seed, index): keysteps, their objects and actions."""
    rng = np.random.default_rng([cfg.seed, 12, index])
    train, held = compositions(cfg)
    pool = train if split == "train" else held
    side = min(cfg.width, cfg.height)
    x0, y0, x1, y1 = safe_box(cfg.width, cfg.height)
    total = round(_jitter(rng, cfg.stream_seconds, 0.2) * cfg.fps)
    keysteps, frame = [], 0
    while frame < total:
        length = min(round(_jitter(rng, cfg.keystep_seconds, 0.33) * cfg.fps), total - frame)
        if total - frame - length < cfg.action_seconds * cfg.fps * 2:  # no sliver of a keystep at the end
            length = total - frame
        combo = pool[int(rng.integers(len(pool)))]
        objects = tuple(Obj(SIZES[int(rng.integers(len(SIZES)))], c, s) for c, s in combo)
        # Start positions: one column of the safe box per object, so they start apart.
        state = []
        for k, obj in enumerate(objects):
            reach = SIZE_RADIUS[obj.size] * side * 1.4
            lo = x0 + (x1 - x0) * k / len(objects) + reach
            hi = x0 + (x1 - x0) * (k + 1) / len(objects) - reach
            x = min(max(float(rng.uniform(lo, max(lo, hi))), x0 + reach), x1 - reach)  # a narrow column: in view
            state.append((x, float(rng.uniform(y0 + reach, y1 - reach)), 1.0))
        actions, at, previous = [], frame, None
        while at < frame + length:
            n = max(2, round(_jitter(rng, cfg.action_seconds, 0.4) * cfg.fps))
            if frame + length - (at + n) < 0.6 * cfg.action_seconds * cfg.fps:
                n = frame + length - at  # the keystep's last action takes what is left
            actor = int(rng.integers(len(objects)))
            if len(objects) > 1 and actor == previous and rng.random() < 0.5:
                actor = (actor + 1) % len(objects)
            x, y, s = state[actor]
            reach = SIZE_RADIUS[objects[actor].size] * side
            feasible = []
            for motion in MOTIONS:
                if motion in TRANSLATION:
                    dx, dy = TRANSLATION[motion]
                    nx, ny = x + dx * STEP * side, y + dy * STEP * side
                    if x0 + reach * s <= nx <= x1 - reach * s and y0 + reach * s <= ny <= y1 - reach * s:
                        feasible.append((motion, (nx, ny, s)))
                else:
                    factor = SCALING[motion][1] / SCALING[motion][0]
                    ns = s * math.sqrt(factor)
                    if 0.55 <= ns <= 1.45 and x0 + reach * ns <= x <= x1 - reach * ns and \
                            y0 + reach * ns <= y <= y1 - reach * ns:
                        feasible.append((motion, (x, y, ns)))
            motion, after_actor = feasible[int(rng.integers(len(feasible)))]
            after = list(state)
            after[actor] = after_actor
            actions.append(Action(at, at + n, actor, motion, tuple(state), tuple(after)))
            state, at, previous = after, at + n, actor
        tint = tuple(int(v) for v in rng.integers(5, 50, size=3))
        background = Background(tint=tint, ramp=int(rng.integers(0, 20)), noise_seed=int(rng.integers(2**31)))
        keysteps.append(Keystep(frame, frame + length, objects, background, tuple(actions)))
        frame += length
    return keysteps


def stream_record(cfg: StreamCorpusConfig, index: int, split: str, keysteps: list[Keystep]) -> dict[str, Any]:
    fps = cfg.fps
    annotations = [{"time": round((a.start_frame + a.end_frame) / 2 / fps, 4), "start": round(a.start_frame / fps, 4),
                    "end": round(a.end_frame / fps, 4), "caption": caption(k.objects[a.actor], a.motion),
                    "keystep": n}
                   for n, k in enumerate(keysteps) for a in k.actions]
    return {"stream_id": f"stream_{index:03d}", "split": split,
            "path": f"streams/stream_{index:03d}.mp4" if split != "train" else None,
            "duration": round(keysteps[-1].end_frame / fps, 4), "fps": fps,
            "keysteps": [{"start": round(k.start_frame / fps, 4), "end": round(k.end_frame / fps, 4),
                          "label": k.label} for k in keysteps],
            "annotations": annotations}


def _frame(cfg: StreamCorpusConfig, keystep: Keystep, action: Action, k: int, backdrop: np.ndarray) -> np.ndarray:
    """Frame ``k`` (0-based) of ``action``: every object of the keystep, the actor part-way."""
    image = backdrop.copy()
    alpha = k / (action.end_frame - action.start_frame - 1) if action.end_frame - action.start_frame > 1 else 1.0
    side = min(cfg.width, cfg.height)
    for i, obj in enumerate(keystep.objects):
        (bx, by, bs), (ax, ay, as_) = action.before[i], action.after[i]
        cx, cy, s = bx + alpha * (ax - bx), by + alpha * (ay - by), bs + alpha * (as_ - bs)
        r = SIZE_RADIUS[obj.size] * side * s
        xa, xb = max(0, math.floor(cx - r)), min(cfg.width, math.ceil(cx + r) + 1)
        ya, yb = max(0, math.floor(cy - r)), min(cfg.height, math.ceil(cy + r) + 1)
        x = np.arange(xa, xb, dtype=np.float64)[None, :] + 0.5 - cx
        y = np.arange(ya, yb, dtype=np.float64)[:, None] + 0.5 - cy
        image[ya:yb, xa:xb][shape_mask(obj.shape, x, y, r)] = np.asarray(PALETTE[obj.colour], dtype=np.uint8)
    return image


def render_stream(cfg: StreamCorpusConfig, out_dir: Path, record: dict, keysteps: list[Keystep]) -> list[dict]:
    """Write one clip per atomic action and, for val/test, the whole stream; returns the clip records.

    One ffmpeg process per stream: the frames go in once; the segment muxer cuts them at the action
    boundaries (key frames forced there), and a second output writes the whole stream.
    """
    import os
    import shutil
    import tempfile

    actions = [(n, a, k, action) for n, k in enumerate(keysteps) for a, action in enumerate(k.actions)]
    cuts = ",".join(f"{action.start_frame / cfg.fps:.6f}" for _, _, _, action in actions[1:])
    scratch = Path(tempfile.mkdtemp(prefix=f".{record['stream_id']}-", dir=out_dir / "clips"))
    command = ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-y", "-f", "rawvideo", "-pix_fmt", "rgb24",
               "-s", f"{cfg.width}x{cfg.height}", "-r", str(cfg.fps), "-i", "-",
               *H264_ARGS, "-force_key_frames", cuts or "0", "-f", "segment", "-segment_times", cuts or "1e9",
               "-reset_timestamps", "1", "-segment_format", "mp4", "-segment_format_options", "movflags=+faststart",
               str(scratch / "%05d.mp4")]
    whole = out_dir / record["path"] if record["path"] else None
    if whole is not None:
        command += [*H264_ARGS, "-movflags", "+faststart", "-f", "mp4", str(scratch / "whole.mp4")]
    proc = subprocess.Popen(command, stdin=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        for n, a, keystep, action in actions:
            if a == 0:
                backdrop = render_background(keystep.background, cfg.width, cfg.height)
            for k in range(action.end_frame - action.start_frame):
                proc.stdin.write(_frame(cfg, keystep, action, k, backdrop).tobytes())
        proc.stdin.close()
        err = proc.stderr.read()
        if proc.wait() != 0:
            raise RuntimeError(f"ffmpeg failed rendering {record['stream_id']}: {err.decode(errors='replace')}")
        parts = sorted(scratch.glob("[0-9]*.mp4"))
        if len(parts) != len(actions):
            raise RuntimeError(f"{record['stream_id']}: ffmpeg cut {len(parts)} clips, expected {len(actions)}")
        clips = []
        for part, (n, a, keystep, action) in zip(parts, actions):
            clip_id = f"{record['stream_id']}_k{n:02d}_a{a:02d}"
            os.replace(part, out_dir / "clips" / "videos" / f"{clip_id}.mp4")
            clips.append({"clip_id": clip_id, "path": f"videos/{clip_id}.mp4", "split": record["split"],
                          "caption": caption(keystep.objects[action.actor], action.motion), "label": keystep.label,
                          "duration": round((action.end_frame - action.start_frame) / cfg.fps, 4)})
        if whole is not None:
            os.replace(scratch / "whole.mp4", whole)
        return clips
    finally:
        if proc.poll() is None:
            proc.kill()
        shutil.rmtree(scratch, ignore_errors=True)


def statistics(records: list[dict]) -> dict[str, float]:
    """What the README puts beside the paper's numbers: lengths, annotation counts and spacing."""
    gaps = [b["time"] - a["time"] for r in records for a, b in zip(r["annotations"], r["annotations"][1:])]
    keys = [k["end"] - k["start"] for r in records for k in r["keysteps"]]
    return {"streams": len(records), "stream_seconds": float(np.mean([r["duration"] for r in records])),
            "annotations_per_stream": float(np.mean([len(r["annotations"]) for r in records])),
            "spacing_seconds": float(np.mean(gaps)), "keystep_seconds": float(np.mean(keys)),
            "keysteps_per_stream": float(np.mean([len(r["keysteps"]) for r in records]))}


def generate_streams(cfg: StreamCorpusConfig, out_dir: str | Path, *, progress: bool = True) -> dict:
    """Render the benchmark into ``out_dir`` (layout in the module docstring); reuses a finished one."""
    from tqdm import tqdm

    out_dir = Path(out_dir)
    marker = out_dir / "stream_corpus.json"
    if marker.is_file():
        saved = json.loads(marker.read_text())
        if saved.get("config_hash") == cfg.config_hash():
            return saved
        raise ValueError(f"{out_dir} holds a stream benchmark of another config (config_hash "
                         f"{saved.get('config_hash')}); pass an empty --out")
    (out_dir / "streams").mkdir(parents=True, exist_ok=True)
    (out_dir / "clips" / "videos").mkdir(parents=True, exist_ok=True)
    records, clips = [], []
    for index, split in enumerate(tqdm(splits(cfg), desc="rendering streams", unit="stream", disable=not progress)):
        keysteps = plan_stream(cfg, index, split)
        record = stream_record(cfg, index, split, keysteps)
        clips += render_stream(cfg, out_dir, record, keysteps)
        records.append(record)
    atomic_write_text(out_dir / "streams.jsonl", "".join(json.dumps(r) + "\n" for r in records))
    atomic_write_text(out_dir / "clips" / "annotations.jsonl", "".join(json.dumps(c) + "\n" for c in clips))
    summary = {"config": dataclasses.asdict(cfg), "config_hash": cfg.config_hash(), "format_version": FORMAT_VERSION,
               "counts": {s: sum(r["split"] == s for r in records) for s in ("train", "val", "test")},
               "clips": {s: sum(c["split"] == s for c in clips) for s in ("train", "val", "test")},
               "statistics": {s: statistics([r for r in records if r["split"] == s]) for s in ("train", "val", "test")
                              if any(r["split"] == s for r in records)},
               "paper": PAPER}
    atomic_write_text(marker, json.dumps(summary, indent=2) + "\n")
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m preprocessing.streams", description=__doc__.split("\n\n")[0],
                                     epilog="writes DIR/streams/, DIR/streams.jsonl, DIR/clips/ and "
                                            "DIR/stream_corpus.json (see the module docstring)")
    parser.add_argument("--out", required=True, type=Path, help="output directory (new, empty, or this benchmark)")
    parser.add_argument("--preset", choices=sorted(PRESETS), default="small", help="base config (default small)")
    for field in dataclasses.fields(StreamCorpusConfig):
        parser.add_argument(f"--{field.name.replace('_', '-')}", type=type(field.default), default=None,
                            help=f"(small: {field.default}, tiny: {getattr(PRESETS['tiny'], field.name)})")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    overrides = {f.name: getattr(args, f.name) for f in dataclasses.fields(StreamCorpusConfig)
                 if getattr(args, f.name) is not None}
    try:
        summary = generate_streams(dataclasses.replace(PRESETS[args.preset], **overrides), args.out,
                                   progress=not args.no_progress)
    except ValueError as err:
        parser.error(str(err))
    test = summary["statistics"]["test"]
    print(f"stream benchmark at {args.out}: {summary['counts']} streams, {summary['clips']} action clips; test "
          f"streams {test['stream_seconds']:.0f} s, {test['annotations_per_stream']:.0f} annotations each, one every "
          f"{test['spacing_seconds']:.2f} s, keysteps {test['keystep_seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
