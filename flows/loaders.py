"""Manifest → dataset: every join of cached tokens with annotations from the DuckDB manifest.

The one home of these loaders (training, SFT, live frames, the task suite, the y-decoder's texts,
the selective-decoding streams). Each query is a ``sql/*.sql`` file run with bound parameters
through ``_query``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from vljepa.config import VLJepaConfig, XEncoderConfig

CLASSIFICATION_QUERY = "what object is this?"  # SFT's query for a class-label target


def _query(db_path: str | Path, sql_name: str, params: dict[str, Any]) -> list[dict[str, Any]]:
    """Rows of ``sql/<sql_name>.sql`` as dicts (column name → value)."""
    from preprocessing.manifest import load_sql, open_manifest

    con = open_manifest(db_path, read_only=True)  # ranks read at once: never lock
    try:
        result = con.execute(load_sql(sql_name), params)
        columns = [c[0] for c in result.description]
        return [dict(zip(columns, row)) for row in result.fetchall()]
    finally:
        con.close()


def split_rows(db_path: str | Path, split: str, dataset: str = "synthetic") -> list[dict[str, Any]]:
    """The split's sources (``sql/split_rows.sql``): source_id, path, content_hash, caption, label, ..."""
    return _query(db_path, "split_rows", {"split": split, "dataset": dataset})


def dataset_profile(db_path: str | Path, dataset: str) -> list[dict[str, Any]]:
    """Per split of ``dataset``: n_clips, n_labelled, labels, n_vqa, n_events (``sql/dataset_profile.sql``)."""
    return _query(db_path, "dataset_profile", {"dataset": dataset})


def foreign_sources(db_path: str | Path, dataset: str, folder: str | Path) -> tuple[int, str | None]:
    """(count, an example path) of ``dataset``'s sources not in a folder named as ``folder`` is
    (``sql/foreign_sources.sql``; a generated corpus's folder name is its config hash)."""
    import os

    marker = f"{os.sep}{Path(folder).name}{os.sep}"
    row = _query(db_path, "foreign_sources", {"dataset": dataset, "folder_marker": marker})[0]
    return int(row["n"]), row["example"]


def load_split(db_path: str | Path, cache_path: str, split: str, dataset: str = "synthetic"):
    """A split's cached tokens joined with its captions and labels (``vljepa.data.TokenTextDataset``)."""
    from preprocessing.shards import read_cache
    from vljepa.data import TokenTextDataset

    cache = read_cache(cache_path)
    rows = {r["source_id"]: r for r in split_rows(db_path, split, dataset)}
    missing = [sid for sid in cache.sample_ids if sid not in rows]
    if missing:
        raise KeyError(f"{len(missing)} cached samples are not in split {split!r}, e.g. {missing[:3]}")
    return TokenTextDataset(sample_ids=list(cache.sample_ids), tokens=cache.tokens,
                            texts=[rows[s]["caption"] for s in cache.sample_ids],
                            labels=[rows[s]["label"] for s in cache.sample_ids])


def load_sft_split(db_path: str | Path, cache_path: str, split: str, *, mix: str | None = None,
                   n_draws: int | None = None, seed: int = 0, dataset: str = "synthetic"):
    """SFT samples (query, target) over a split's cached tokens (``vljepa.data.QueryTargetDataset``).

    Default: every VQA pair, caption (query-free) and class label of the split's cached clips
    (``sql/sft_annotations.sql``). With ``mix``: ``n_draws`` seeded draws of that named DuckDB mix
    (``preprocessing.mix.draw``), in draw order.
    """
    from preprocessing.shards import read_cache
    from preprocessing.manifest import load_sql, open_manifest
    from vljepa.data import QueryTargetDataset

    cache = read_cache(cache_path)
    row_of = {sid: i for i, sid in enumerate(cache.sample_ids)}
    con = open_manifest(db_path, read_only=True)  # draw(run_id=None) writes nothing
    try:
        result = con.execute(load_sql("sft_annotations"), {"split": split, "dataset": dataset,
                                                           "classification_query": CLASSIFICATION_QUERY})
        rows = {(r[0], r[1], r[2]): (r[3], r[4]) for r in result.fetchall()}
        if mix is not None:
            from preprocessing.mix import draw

            keys = [(d.source_id, d.task, d.idx) for d in draw(con, mix, n_draws or len(rows), seed=seed)]
        else:
            keys = list(rows)
    finally:
        con.close()
    missing = [k for k in keys if k not in rows]
    if missing:
        raise KeyError(f"{len(missing)} drawn samples are not SFT annotations of split {split!r}, e.g. {missing[:3]}")
    keys = [k for k in keys if k[0] in row_of and rows[k][1]]  # clips that failed to encode are skipped
    if not keys:
        raise ValueError(f"no SFT samples for split {split!r} in cache {cache_path}")
    return QueryTargetDataset(sample_ids=[f"{s}/{t}/{i}" for s, t, i in keys], tokens=cache.tokens,
                              token_row=np.array([row_of[k[0]] for k in keys]), queries=[rows[k][0] for k in keys],
                              texts=[rows[k][1] for k in keys], tasks=[k[1] for k in keys])


def load_live_split(cfg: VLJepaConfig, db_path: str | Path, split: str):
    """``train.mode = "live"``: decoded frames of a split for the frozen x-encoder in the loop."""
    import torch

    from preprocessing.decode import decode_frames, frames_to_tensor
    from vljepa.data import LiveFrames
    from vljepa.encoders import build_x_encoder

    encoder = build_x_encoder(cfg.x_encoder)
    rows = split_rows(db_path, split)
    spec = encoder.spec
    frames = [frames_to_tensor(decode_frames(r["path"], num_frames=spec.num_frames, size=spec.image_size).frames,
                               spec.mean, spec.std) for r in rows]
    return LiveFrames(frames=torch.stack(frames), texts=[r["caption"] for r in rows], encode=encoder.encode)


def annotations(db_path: str | Path, split: str, dataset: str = "synthetic") -> dict[str, dict]:
    """source_id → {"caption", "label", "events", "qa"} for one split (``sql/task_annotations.sql``)."""
    from vljepa.tasks.common import Event

    out: dict[str, dict] = {}
    for row in _query(db_path, "task_annotations", {"split": split, "dataset": dataset}):
        entry = out.setdefault(row["source_id"], {"caption": None, "label": None, "events": [], "qa": []})
        if row["task"] == "caption" and row["idx"] == 0:
            entry["caption"] = row["text"]
        elif row["task"] == "classification" and row["idx"] == 0:
            entry["label"] = row["label"]
        elif row["task"] == "event":
            entry["events"].append(Event(text=row["text"] or "", start_s=row["start_s"], end_s=row["end_s"],
                                         attributes=json.loads(row["attributes"] or "{}")))
        elif row["task"] == "vqa":
            entry["qa"].append((row["question"], row["answer"]))
    return out


def load_task_data(db_path: str | Path, cache_path: str | Path, split: str, *, num_frames: int,
                   tubelet_size: int = 1, dataset: str = "synthetic", limit: int | None = None):
    """A split's cached tokens joined with all its annotations (``vljepa.tasks.common.TaskData``).

    tubelet_size: frames per cached token group (``vljepa.tasks.common.frames_per_token_group``).
    limit: only the cache's first ``limit`` samples.
    """
    from preprocessing.shards import read_cache
    from vljepa.tasks.common import TaskData

    cache = read_cache(cache_path, limit=limit)
    notes = annotations(db_path, split, dataset)
    missing = [s for s in cache.sample_ids if s not in notes or not notes[s]["caption"]]
    if missing:
        raise KeyError(f"{len(missing)} cached samples have no caption in split {split!r}, e.g. {missing[:3]}")
    ids = list(cache.sample_ids)
    return TaskData(sample_ids=ids, tokens=cache.tokens, captions=[notes[s]["caption"] for s in ids],
                    labels=[notes[s]["label"] for s in ids], events=[notes[s]["events"] for s in ids],
                    qa=[notes[s]["qa"] for s in ids], num_frames=num_frames, tubelet_size=tubelet_size)


def load_state_tokens(x_encoder: XEncoderConfig, db_path: str | Path, split: str, sample_ids: list[str], *,
                      dataset: str = "synthetic", batch_size: int = 8, device: str = "cpu") -> np.ndarray:
    """World-prediction state tokens ``(S, N_state, D)`` float16 of a split's clips, from decoded frames.

    Each clip is sampled as the main job caches it (uniform, ``x_encoder.num_frames`` frames); its
    first and last frames, each duplicated to fill a tubelet (``world_prediction.state_pixels``:
    [first, first, last, last] for V-JEPA 2), go through the frozen x-encoder. For tubelet
    x-encoders, whose cached tokens mix frames (``TaskData.state_tokens``).
    """
    import torch

    from preprocessing.decode import frames_to_tensor
    from preprocessing.sampling import SamplingConfig, sample_clip
    from vljepa.encoders import build_x_encoder
    from vljepa.tasks.common import frames_per_token_group
    from vljepa.tasks.world_prediction import state_pixels

    rows = {r["source_id"]: r for r in split_rows(db_path, split, dataset)}
    missing = [s for s in sample_ids if s not in rows]
    if missing:
        raise KeyError(f"{len(missing)} samples are not sources of split {split!r}, e.g. {missing[:3]}")
    encoder = build_x_encoder(x_encoder).to(device)
    spec, tubelet = encoder.spec, frames_per_token_group(x_encoder)
    sampling = SamplingConfig(strategy="uniform", num_frames=spec.num_frames)
    out = []
    for start in range(0, len(sample_ids), batch_size):
        pixels = []
        for sample_id in sample_ids[start:start + batch_size]:
            row = rows[sample_id]
            frames = sample_clip(row["path"], sampling, size=spec.image_size, repeat_to=spec.num_frames,
                                 duration=row["duration"], fps=row["fps"])[0].frames  # (T, S, S, 3) uint8
            pixels.append(state_pixels(frames_to_tensor(frames, spec.mean, spec.std), tubelet))  # (2c, 3, S, S)
        with torch.inference_mode():
            tokens = encoder.encode(torch.stack(pixels).to(device))  # (b, N_state, D)
        out.append(tokens.float().cpu().numpy().astype(np.float16))
    return np.concatenate(out)


def decoder_texts(db_path: str | Path, split: str = "train", dataset: str = "synthetic") -> list[str]:
    """The y-decoder's training texts: captions, event captions and VQA answers of a split."""
    texts = []
    for entry in annotations(db_path, split, dataset).values():
        texts += [entry["caption"]] if entry["caption"] else []
        texts += [e.text for e in entry["events"] if e.text]
        texts += [a for _, a in entry["qa"]]
    return texts


def caption_bank(db_path: str | Path, split: str = "train", dataset: str = "synthetic") -> list[str]:
    """A split's event captions (``sql/split_texts.sql``): what the retrieval decoder can say."""
    texts = [row["text"] for row in _query(db_path, "split_texts", {"dataset": dataset, "split": split})]
    if not texts:
        raise ValueError(f"no {split} captions of dataset {dataset!r} in {db_path} for the retrieval decoder: "
                         "import a corpus first (`vljepa run`, or `vljepa data import`)")
    return texts


def event_clips(db_path: str | Path, split: str, *, dataset: str = "synthetic", min_events: int = 2,
                max_clips: int | None = None) -> list[dict]:
    """Clips with their event captions: ``[{source_id, path, duration, events: [(start, end, text)]}]``."""
    rows = _query(db_path, "split_events", {"dataset": dataset, "split": split, "min_events": min_events})
    clips: dict[str, dict] = {}
    for row in rows:
        clip = clips.setdefault(row["source_id"], {"source_id": row["source_id"], "path": row["path"],
                                                   "duration": row["duration"], "events": []})
        clip["events"].append((float(row["start_s"]), float(row["end_s"]), str(row["text"])))
    out = list(clips.values())
    return out[:max_clips] if max_clips else out


def load_vocabulary(corpus_dir: str | Path):
    """(labels, ``vljepa.tasks.hard_negatives.Vocabulary``) of a generated corpus (``corpus.json``)."""
    from vljepa.tasks.hard_negatives import Vocabulary

    meta = json.loads((Path(corpus_dir) / "corpus.json").read_text())
    return meta["labels"], Vocabulary(colours=tuple(meta["colours"]), shapes=tuple(meta["shapes"]),
                                      motions=tuple(meta["motions"]))


def corpus_labels(corpus_dir: str | Path) -> list[str]:
    """The label set of a generated corpus."""
    return json.loads((Path(corpus_dir) / "corpus.json").read_text())["labels"]
