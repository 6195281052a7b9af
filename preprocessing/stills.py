"""Still-image caption set derived from a generated corpus: the image source of phase 1A.

The paper's pretraining starts on image-text pairs only, one frame per sample (Sec. 3.2.1,
phase 1A), then mixes images and videos (1B). The embedded corpus (``preprocessing.corpus``)
has only videos, so this module derives its images: for each clip of the chosen splits, the
middle frame of its event 0, captioned with that event's description without the motion
("two large blue squares"), since a single frame cannot show a motion. Layout, the same as a
corpus so ``preprocessing.manifest.import_corpus`` imports it unchanged (kind 'image')::

    OUT/images/still_000000.png ...  index = the source clip's index
    OUT/annotations.jsonl   one object per still, sorted by clip_id: clip_id, path, split,
                            duration 0, fps 0, width, height, caption, label, events [], qa []
    OUT/corpus.json         the source corpus' config and vocabulary, source_corpus (its
                            config_hash), counts, labels (read by flows.loaders.load_vocabulary)

PNGs are written by a small pure-python encoder (no PIL / cv2) with a fixed zlib level, so equal
corpora give byte-identical stills. Idempotent: images already present are kept; the annotation
files are written last, atomically.

Usage: ``python -m preprocessing.stills CORPUS_DIR --out OUT_DIR``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import struct
import sys
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from preprocessing.corpus import COUNT_WORDS, PLURAL_SHAPES, ClipPlan, CorpusConfig, Event, plan_corpus
from preprocessing.corpus_render import draw_group, render_background
from vljepa.files import atomic_write, atomic_write_text

FORMAT_VERSION = 1  # bump when the choice of frame, the PNG bytes or the captions change
PNG_COMPRESSION = 6  # zlib level: fixed, so the bytes depend on the pixels only
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_VOCABULARY_KEYS = ("colours", "shapes", "sizes", "motions", "labels", "held_out_pairs")


@dataclass(frozen=True, kw_only=True)
class StillsSummary:
    """What ``generate_stills`` did."""

    out_dir: Path
    counts: dict[str, int]  # stills per split
    n_generated: int
    n_reused: int


def png_bytes(image: np.ndarray) -> bytes:
    """Encode an (H, W, 3) uint8 RGB image as PNG (8-bit truecolour, filter 0 on every row)."""
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) uint8 image, got {image.dtype} {image.shape}")
    height, width = image.shape[:2]
    rows = np.zeros((height, 1 + 3 * width), dtype=np.uint8)  # (H, 1 + 3W): a filter byte, then RGB
    rows[:, 1:] = image.reshape(height, 3 * width)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    # IHDR: width, height, bit depth 8, colour type 2 (RGB), compression 0, filter 0, no interlace.
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (_PNG_SIGNATURE + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(rows.tobytes(), PNG_COMPRESSION)) + chunk(b"IEND", b""))


def write_png(path: str | Path, image: np.ndarray) -> Path:
    """Write ``image`` (H, W, 3) uint8 RGB as a PNG at ``path``, atomically."""
    data = png_bytes(image)
    return atomic_write(path, lambda handle: handle.write(data))


def still_frame(plan: ClipPlan) -> np.ndarray:
    """The middle frame of the clip's event 0, (H, W, 3) uint8: what the still shows."""
    job, group = plan.job, plan.job.groups[0]
    image = render_background(job.background, job.width, job.height).copy()  # (H, W, 3)
    draw_group(image, group, group.n_frames // 2)
    return image


def still_caption(event: Event) -> str:
    """E.g. "a small red circle", "two large blue squares": the event's caption less its motion."""
    if event.count == 1:
        return f"a {event.size} {event.colour} {event.shape}"
    return f"{COUNT_WORDS[event.count]} {event.size} {event.colour} {PLURAL_SHAPES[event.shape]}"


def still_id(plan: ClipPlan) -> str:
    return f"still_{plan.index:06d}"


def still_record(plan: ClipPlan) -> dict[str, Any]:
    """The annotations.jsonl object of one still (corpus layout; no events, no QA)."""
    first = plan.events[0]
    return {
        "clip_id": still_id(plan), "path": f"images/{still_id(plan)}.png", "split": plan.split,
        "duration": 0.0, "fps": 0.0, "width": plan.job.width, "height": plan.job.height,
        "caption": still_caption(first), "label": f"{first.colour} {first.shape}", "events": [], "qa": [],
    }


def _source_config(meta: dict[str, Any]) -> CorpusConfig:
    """The source corpus' ``CorpusConfig`` from its corpus.json (keys the class does not take are dropped)."""
    if "config" not in meta:
        raise ValueError("corpus.json has no 'config': is this a corpus made by preprocessing.corpus?")
    fields = {f.name for f in dataclasses.fields(CorpusConfig)}
    return CorpusConfig(**{k: v for k, v in meta["config"].items() if k in fields})


def _check_out_dir(out_dir: Path, source_hash: str | None) -> None:
    """``out_dir`` must be new, or hold stills of this very source corpus."""
    meta_path = out_dir / "corpus.json"
    if meta_path.is_file():
        found = json.loads(meta_path.read_text()).get("source_corpus")
        if found != source_hash:
            raise ValueError(f"{out_dir} holds stills of another corpus (source_corpus {found}, this one is "
                             f"{source_hash}); pass a new --out or delete it")


def generate_stills(corpus_dir: str | Path, out_dir: str | Path, *, splits: Sequence[str] = ("train",),
                    progress: bool = True) -> StillsSummary:
    """Derive the still-image caption set of the corpus at ``corpus_dir`` into ``out_dir`` (layout above).

    Args:
        corpus_dir: a corpus written by ``preprocessing.corpus.generate_corpus`` (only its
            corpus.json is read: the stills are re-rendered from the plan, not decoded).
        splits: the splits whose clips give a still each.
    """
    corpus_dir, out_dir = Path(corpus_dir), Path(out_dir)
    meta_path = corpus_dir / "corpus.json"
    if not meta_path.is_file():
        raise FileNotFoundError(f"{meta_path} not found: generate the corpus first (python -m preprocessing.corpus)")
    meta = json.loads(meta_path.read_text())
    cfg = _source_config(meta)
    source_hash = meta.get("config_hash", cfg.config_hash())
    _check_out_dir(out_dir, source_hash)
    plans = [p for p in plan_corpus(cfg) if p.split in splits]
    images = out_dir / "images"
    images.mkdir(parents=True, exist_ok=True)
    records = [still_record(p) for p in plans]
    todo = [(p, r) for p, r in zip(plans, records) if not (out_dir / r["path"]).is_file()]
    for plan, record in tqdm(todo, desc=f"stills of {corpus_dir.name}", unit="image", disable=not progress or not todo):
        write_png(out_dir / record["path"], still_frame(plan))

    counts = {s: sum(p.split == s for p in plans) for s in splits}
    stills_meta = {
        "config": meta["config"], "source_corpus": source_hash, "stills_format_version": FORMAT_VERSION,
        "frame": "middle frame of event 0", "splits": list(splits), "counts": counts,
        **{k: meta[k] for k in _VOCABULARY_KEYS if k in meta},
    }
    atomic_write_text(out_dir / "annotations.jsonl", "".join(json.dumps(r) + "\n" for r in records))
    atomic_write_text(out_dir / "corpus.json", json.dumps(stills_meta, indent=2) + "\n")
    return StillsSummary(out_dir=out_dir, counts=counts, n_generated=len(todo), n_reused=len(plans) - len(todo))


def main(argv: list[str] | None = None) -> int:
    """CLI: ``generate_stills`` and a one-line summary."""
    parser = argparse.ArgumentParser(prog="python -m preprocessing.stills",
                                     description="Derive one captioned still image per clip of a generated corpus.")
    parser.add_argument("corpus_dir", type=Path)
    parser.add_argument("--out", required=True, type=Path, help="output directory (new, or these stills)")
    parser.add_argument("--split", action="append", dest="splits", help="repeat per split (default: train)")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    try:
        summary = generate_stills(args.corpus_dir, args.out, splits=tuple(args.splits or ("train",)),
                                  progress=not args.no_progress)
    except (ValueError, FileNotFoundError) as err:
        parser.error(str(err))
    counts = ", ".join(f"{k} {v}" for k, v in summary.counts.items())
    print(f"stills at {summary.out_dir} ({counts}): rendered {summary.n_generated}, reused {summary.n_reused}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
