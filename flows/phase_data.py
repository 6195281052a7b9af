"""Each phase's data, from the manifest: a DuckDB data mix → cached tokens → a ``StreamPlan``.

The recipe's phases read different data (paper Sec. 3.2): phase ``image`` (1A) image sources only
at 1 frame (mix preset ``pretrain-image``), phase ``video`` (1B) a weighted mixture of image and
video sources at the preset's frames (``pretrain-video``), ``sft`` the SFT mix in the paper's
proportions (``sft-paper``) or a mix the user named. ``phase_plan`` runs before the launch, in the
launching process: it creates the mix in the manifest, caches the tokens of every component's
(dataset, split) (content-addressed, reused), writes each component's items (query, target per
source) to a Parquet file and returns the plan. Ranks read only the plan's files: they never open
the manifest for their training data.

The embedded default corpus has videos only; ``prepare_stills`` derives its still-image caption
set (``preprocessing.stills``: one frame of each train clip, captioned without the motion) and
imports it as dataset ``synthetic-stills``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from flows.data import SplitCache, cache_split_tokens
from flows.env import StateLayout
from vljepa.config import VLJepaConfig
from vljepa.files import atomic_write, content_key, content_key_sha256

STILLS_DATASET = "synthetic-stills"
PHASE_MIX = {"image": "pretrain-image", "video": "pretrain-video", "sft": "sft-paper"}  # preprocessing.mix presets


def prepare_stills(layout: StateLayout, corpus_dir: Path, *, progress: bool = True) -> str:
    """The still-image caption set of a generated corpus, imported as ``synthetic-stills``; its dataset name."""
    from preprocessing.manifest import import_corpus, open_manifest
    from preprocessing.stills import generate_stills

    out = layout.data_dir / f"{Path(corpus_dir).name}-stills"
    generate_stills(corpus_dir, out, progress=progress)
    con = open_manifest(layout.manifest)
    try:  # not probed: the records hold the images' sizes, and ffprobe would take ~60 ms an image
        import_corpus(con, out, dataset=STILLS_DATASET, probe=False)
    finally:
        con.close()
    return STILLS_DATASET


@dataclass(frozen=True)
class PhaseData:
    """What one phase trains on: the plan the ranks read, and where it came from."""

    mix: str
    plan: object  # preprocessing.stream.StreamPlan
    key: str  # content key of the plan (caches, items, weights): part of the model's address
    caches: dict[str, SplitCache]  # "<dataset>/<split>" -> its token cache

    @property
    def n_samples(self) -> int:
        return self.plan.n_samples  # type: ignore[attr-defined]


def mix_name_for(stage: str, phase: str | None) -> str:
    return PHASE_MIX["sft" if stage == "sft" else (phase or "video")]


def phase_plan(cfg: VLJepaConfig, layout: StateLayout, *, mix: str | None = None, preset: bool = True,
               dataset: str = "synthetic", stills_dataset: str | None = STILLS_DATASET, split: str = "train",
               progress: bool = True, engine: str = "local") -> PhaseData:
    """Create mix ``mix`` (default: this stage / phase's preset) in the manifest, cache its data, write its plan.

    Args:
        preset: ``mix`` names a preset of ``preprocessing.mix.MIX_PRESETS`` (created, or replaced, in the
            manifest over ``dataset`` / ``stills_dataset``); False: a mix the user created.
        stills_dataset: the image source; None = the dataset's own sources (a corpus with no images).
    """
    from preprocessing.manifest import open_manifest
    from preprocessing.mix import component_samples, create_preset_mix, mix_components
    from preprocessing.stream import StreamComponent, StreamPlan

    from flows.loaders import CLASSIFICATION_QUERY

    mix = mix or mix_name_for(cfg.train.stage, cfg.train.phase)
    con = open_manifest(layout.manifest)
    try:
        if preset:
            components = create_preset_mix(con, mix, dataset=dataset, stills_dataset=stills_dataset or dataset,
                                           split=split)
        else:
            components = mix_components(con, mix)
        samples = {c.name: component_samples(con, c, classification_query=CLASSIFICATION_QUERY) for c in components}
    finally:
        con.close()
    caches: dict[str, SplitCache] = {}
    for c in components:
        where = f"{c.dataset}/{c.split}"
        if where not in caches:
            caches[where] = cache_split_tokens(cfg, layout, c.split, progress=progress, engine=engine, dataset=c.dataset)
    streamed, shapes = [], set()
    for c in components:
        cache = caches[f"{c.dataset}/{c.split}"]
        index = _index(cache)
        shapes.add(tuple(index["shape"]))
        cached = set(index["config"]["cached_source_ids"])
        rows = [(s, q, t) for s, _, q, t in samples[c.name] if s in cached]
        if not rows:
            raise ValueError(f"mix {mix!r}: component {c.name!r} ({c.task} of {c.dataset}/{c.split}) has no sample "
                             f"with cached tokens ({len(samples[c.name])} annotations, {len(cached)} cached sources)")
        streamed.append(StreamComponent(
            name=c.name, weight=c.weight, items=str(_write_items(layout, rows)), n_items=len(rows),
            shards=tuple(str(Path(cache.path) / s["name"]) for s in index["shards"]),
            shard_sizes=tuple(int(s["n_samples"]) for s in index["shards"])))
    if len(shapes) != 1:
        raise ValueError(f"mix {mix!r}: its caches hold tokens of different shapes {sorted(shapes)}: one batch "
                         "needs one shape (cache every component with the same x-encoder and frames)")
    plan = StreamPlan(components=tuple(streamed), token_shape=tuple(shapes.pop()))  # type: ignore[arg-type]
    key = content_key(mix, *[f"{c.name}:{c.weight!r}:{Path(c.items).stem}:{caches[f'{m.dataset}/{m.split}'].cache_key}"
                             for c, m in zip(streamed, components)])
    return PhaseData(mix=mix, plan=plan, key=key, caches=caches)


def live_plan(cfg: VLJepaConfig, layout: StateLayout, phase: PhaseData) -> object:
    """``train.mode = "live"``: the same components over their videos, decoded in the DataLoader workers."""
    import dataclasses

    from flows.loaders import split_rows
    from preprocessing.stream import FrameSpec, StreamPlan
    from vljepa.encoders import build_x_encoder

    spec = build_x_encoder(cfg.x_encoder).spec
    components = []
    for component, where in zip(phase.plan.components, _component_sources(phase)):  # type: ignore[attr-defined]
        dataset, split = where.split("/")
        videos = tuple((r["source_id"], r["path"]) for r in split_rows(layout.manifest, split, dataset))
        components.append(dataclasses.replace(component, shards=(), shard_sizes=(), videos=videos))
    frames = FrameSpec(num_frames=spec.num_frames, image_size=spec.image_size, mean=tuple(spec.mean),
                       std=tuple(spec.std))
    return StreamPlan(components=tuple(components), frames=frames)


def _component_sources(phase: PhaseData) -> list[str]:
    by_path = {c.path: where for where, c in phase.caches.items()}
    return [by_path[str(Path(c.shards[0]).parent)] for c in phase.plan.components]  # type: ignore[attr-defined]


def _index(cache: SplitCache) -> dict:
    import json

    return json.loads((Path(cache.path) / "index.json").read_text())


def _write_items(layout: StateLayout, rows: list[tuple[str, str, str]]) -> Path:
    """A component's items as Parquet (source_id, query, target), content-addressed under the data dir."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    key = content_key_sha256(*[f"{s}\x1f{q}\x1f{t}" for s, q, t in rows])
    path = layout.data_dir / "items" / f"{key}.parquet"
    if not path.is_file():
        table = pa.table({"source_id": [r[0] for r in rows], "query": [r[1] for r in rows],
                          "target": [r[2] for r in rows]})
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, lambda handle: pq.write_table(table, handle))
    return path
