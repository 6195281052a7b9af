"""The data a training flow reads: the generated corpus, or a dataset of the user's own
(``vljepa run --data DIR``, ``pretrain/full``'s ``data`` parameter).

``detect_source`` tells which layout a path is in, ``import_data`` imports it into the manifest
under a dataset name of its own, and ``DataInfo`` says what the flows need to know of it: its
dataset name, its image source, its class names, and which evaluation tasks its annotations
support (with the reason for each task it cannot run). Layouts read:

- the generator's layout: ``annotations.jsonl`` + ``corpus.json`` (every task);
- a folder of videos and/or images with one CSV or JSONL of annotations (``path``, ``caption``,
  optional ``clip_id``, ``split``, ``label``, ``question`` + ``answer``);
- video2dataset / WebDataset tars (``<key>.mp4`` + ``<key>.txt`` / ``.json``), one tar or a folder;
- an MSR-VTT-style JSON (``videos`` + ``sentences``) beside ``<video_id>.mp4`` files.

Rows without a split get one from a hash of their clip id (``preprocessing.importers.hash_split``).
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from flows.preprocess import ImportCounts, SourceKind, import_source
from vljepa.config import VLJepaConfig
from vljepa.files import content_key

LAYOUTS = ("a generated corpus (annotations.jsonl + corpus.json); a folder of videos/images with one CSV or "
           "JSONL of annotations (path, caption[, split, label, question, answer]); video2dataset tars; an "
           "MSR-VTT-style JSON (videos + sentences) beside <video_id>.mp4 files")
# Tasks that read the generated corpus' closed vocabulary (corpus.json: colours, shapes, motions).
VOCABULARY_TASKS = ("hard_negatives", "world_prediction")


@dataclass(frozen=True, kw_only=True)
class DataSource:
    """Where a dataset is and how to read it (``flows.preprocess.import_source``'s arguments)."""

    kind: SourceKind
    source: str  # the corpus / media folder, or a tar
    dataset: str  # its name in the manifest
    annotations: str | None = None  # folder: the CSV / JSONL; msrvtt: the JSON
    media_dir: str | None = None  # video2dataset: where videos are extracted


def dataset_name(path: str | Path) -> str:
    """``user-<folder name>-<8 hex of its absolute path>``: two folders of one name stay apart."""
    path = Path(path).resolve()
    slug = re.sub(r"[^a-z0-9]+", "-", path.stem.lower()).strip("-") or "data"
    return f"user-{slug[:40]}-{content_key(str(path))[:8]}"


def _is_msrvtt(path: Path) -> bool:
    try:
        meta = json.loads(path.read_text(encoding="utf-8", errors="replace"))
    except (OSError, ValueError):
        return False
    return isinstance(meta, dict) and isinstance(meta.get("videos"), list) and "sentences" in meta


def detect_source(path: str | Path, *, annotations: str | Path | None = None, media_dir: str | Path | None = None,
                  dataset: str | None = None) -> DataSource:
    """The layout of ``path`` (module docstring); ``annotations`` names the annotation file when a
    folder holds several. Raises ``FileNotFoundError`` / ``ValueError`` saying what was expected."""
    root = Path(path).resolve()
    if not root.exists():
        raise FileNotFoundError(f"--data {path}: no such file or folder")
    name = dataset or dataset_name(root)
    extract = str(media_dir) if media_dir else None
    if root.is_file() and root.suffix == ".tar":
        return DataSource(kind="video2dataset", source=str(root), dataset=name,
                          media_dir=extract or str(root.parent / f"{root.stem}-media"))
    if not root.is_dir():
        raise ValueError(f"--data {path}: expected a folder or a .tar, in one of these layouts: {LAYOUTS}")
    if annotations is not None:
        ann = Path(annotations).resolve()
        if not ann.is_file():
            raise FileNotFoundError(f"--annotations {annotations}: no such file")
        if ann.suffix.lower() == ".json" and _is_msrvtt(ann):
            return DataSource(kind="msrvtt", source=str(root), dataset=name, annotations=str(ann))
        return DataSource(kind="folder", source=str(root), dataset=name, annotations=str(ann))
    if (root / "annotations.jsonl").is_file() and (root / "corpus.json").is_file():
        return DataSource(kind="corpus", source=str(root), dataset=name)
    tars = sorted(root.glob("*.tar"))
    if tars:
        return DataSource(kind="video2dataset", source=str(root), dataset=name,
                          media_dir=extract or str(root / "_extracted"))
    msrvtt = [p for p in sorted(root.glob("*.json")) if _is_msrvtt(p)]
    if len(msrvtt) == 1:
        return DataSource(kind="msrvtt", source=str(root), dataset=name, annotations=str(msrvtt[0]))
    tables = sorted(p for p in root.iterdir() if p.is_file() and p.suffix.lower() in (".csv", ".jsonl"))
    if len(tables) == 1:
        return DataSource(kind="folder", source=str(root), dataset=name, annotations=str(tables[0]))
    if len(tables) + len(msrvtt) > 1:
        names = ", ".join(p.name for p in [*tables, *msrvtt])
        raise ValueError(f"--data {path}: several annotation files ({names}); name one with --annotations FILE")
    raise ValueError(f"--data {path}: found no annotations. Expected one of: {LAYOUTS}")


@dataclass(frozen=True, kw_only=True)
class DataInfo:
    """What the training flows need to know of their data, whichever layout it came in."""

    dataset: str
    stills_dataset: str | None  # the image source of phase 1A; None = the dataset's own sources
    corpus_dir: str | None  # a corpus with corpus.json (labels + vocabulary), else None
    labels: tuple[str, ...] | None  # class names; None = no classification
    tasks: tuple[str, ...]  # the evaluation tasks the annotations support
    skipped: dict[str, str] = field(default_factory=dict)  # task -> why it does not run
    clips: dict[str, int] = field(default_factory=dict)  # split -> clips in the manifest
    counts: ImportCounts | None = None
    n_long_captions: int = 0  # captions longer than the y-encoder reads (kept, cut at training; noted)

    def summary_lines(self) -> list[str]:
        splits = ", ".join(f"{split} {n}" for split, n in sorted(self.clips.items()))
        lines = [f"data {self.dataset}: {splits or 'no clips'}; tasks: {', '.join(self.tasks)}"]
        if self.counts is not None and self.counts.n_failed:
            lines.append(f"  {self.counts.n_failed} row(s) failed to import: `vljepa data failures`")
        if self.n_long_captions:
            lines.append(f"  {self.n_long_captions} caption(s) longer than the y-encoder reads: kept, cut at "
                         "training (`vljepa data notes`)")
        lines += [f"  skipped {task}: {why}" for task, why in self.skipped.items()]
        return lines


def generated_data(corpus_dir: str | Path, counts: ImportCounts | None, stills_dataset: str | None,
                   dataset: str = "synthetic") -> DataInfo:
    """The generated corpus: every task, its labels from ``corpus.json``."""
    from flows.evaluate import ALL_TASKS
    from flows.loaders import corpus_labels

    return DataInfo(dataset=dataset, stills_dataset=stills_dataset, corpus_dir=str(corpus_dir),
                    labels=tuple(corpus_labels(corpus_dir)), tasks=ALL_TASKS, counts=counts)


def import_data(source: DataSource, manifest: str | Path, *, allow_outside_root: bool = False,
                cfg: VLJepaConfig | None = None) -> DataInfo:
    """Import ``source`` into ``manifest`` (idempotent, row-isolated), then read what its annotations support.

    cfg: the model config; its y-encoder's tokenizer counts each caption, and captions longer than
    ``y_encoder.max_length`` are noted in the manifest (``vljepa data notes``): kept, cut at training.
    """
    counts = import_source(manifest, source.source, kind=source.kind, dataset=source.dataset,
                           annotations=source.annotations, media_dir=source.media_dir,
                           allow_outside_root=allow_outside_root)
    corpus_dir = source.source if source.kind == "corpus" else None
    info = describe(manifest, source.dataset, corpus_dir=corpus_dir, counts=counts)
    if cfg is None:
        return info
    return dataclasses.replace(info, n_long_captions=flag_long_captions(manifest, info, cfg))


LONG_CAPTION_NOTE = " (caption length)"  # suffix of the note's key: a file may have a UTF-8 note too


def flag_long_captions(manifest: str | Path, info: DataInfo, cfg: VLJepaConfig) -> int:
    """Note each caption of ``info``'s dataset longer than ``cfg.y_encoder.max_length`` tokens; their count."""
    from flows.loaders import split_rows
    from preprocessing.manifest import load_sql, open_manifest
    from vljepa.model import target_tokenizer

    rows = [r for split in info.clips for r in split_rows(manifest, split, info.dataset) if r["caption"]]
    if not rows:
        return 0
    limit = cfg.y_encoder.max_length
    lengths = target_tokenizer(cfg).lengths([r["caption"] for r in rows])
    long = [(r["path"], n) for r, n in zip(rows, lengths) if n > limit]
    if long:
        con = open_manifest(manifest)
        try:
            con.executemany(load_sql("upsert_import_note"), [
                {"path": f"{path}{LONG_CAPTION_NOTE}",
                 "note": f"caption is {n} tokens; the y-encoder ({cfg.y_encoder.name}) reads {limit} "
                         "(y_encoder.max_length): kept, the rest is cut at training"} for path, n in long])
        finally:
            con.close()
    return len(long)


def describe(manifest: str | Path, dataset: str, *, corpus_dir: str | None = None,
             counts: ImportCounts | None = None) -> DataInfo:
    """``DataInfo`` of a dataset in the manifest: which tasks its train and test annotations support."""
    from flows.evaluate import ALL_TASKS
    from flows.loaders import corpus_labels, dataset_profile

    profile = {row["split"]: row for row in dataset_profile(manifest, dataset)}
    clips = {split: int(row["n_clips"]) for split, row in profile.items()}
    train, test = profile.get("train"), profile.get("test")
    if not train or not test:
        missing = [s for s, row in (("train", train), ("test", test)) if not row]
        raise ValueError(f"dataset {dataset!r} has no {' and no '.join(missing)} clips ({clips or 'nothing imported'}): "
                         "give rows a split column, or add clips (a row without a split goes to train/val/test "
                         "80/10/10 by a hash of its clip id); see `vljepa data failures` for rows that failed")
    skipped: dict[str, str] = {}
    labels: tuple[str, ...] | None = None
    if corpus_dir is not None:
        labels = tuple(corpus_labels(corpus_dir))
    else:
        for task in VOCABULARY_TASKS:
            skipped[task] = "needs the generated corpus' closed vocabulary (corpus.json: colours, shapes, motions)"
        names = sorted(set(train["labels"] or []) | set(test["labels"] or []))
        if test["n_labelled"] < test["n_clips"]:
            skipped["classification"] = (f"{test['n_clips'] - test['n_labelled']} of {test['n_clips']} test clips "
                                         "have no label (give every clip a label column to turn it on)")
        elif len(names) < 2:
            skipped["classification"] = f"needs at least 2 class names, the data has {len(names)}"
        else:
            labels = tuple(names)
    if int(test["n_clips"]) < 2:
        skipped["retrieval"] = f"needs at least 2 test clips, the data has {test['n_clips']}"
    if not test["n_vqa"]:
        skipped["vqa"] = "no test clip has a question and answer"
    if not test["n_events"] and "world_prediction" not in skipped:
        skipped["world_prediction"] = "no test clip has timed events"
    tasks = tuple(t for t in ALL_TASKS if t not in skipped)
    return DataInfo(dataset=dataset, stills_dataset=None, corpus_dir=corpus_dir, labels=labels, tasks=tasks,
                    skipped=skipped, clips=clips, counts=counts)
