"""Named data mixes in the DuckDB manifest: create, describe, draw from (reproducibly), record.

A mix is a set of components, each the annotations of one task in one dataset's split, with a
weight: its expected share of draws. The paper's SFT stage mixes VQA, captions,
classification and pretraining data this way. ``draw`` picks a component for each draw with
probability weight / sum(weights) and then walks a per-component permutation (re-shuffled at
each pass: a pass is one epoch of that component), all from one numpy seed, so the same
(mix, seed, n) always gives the same draws; the draws are written to ``mix_draws``.

``MIX_PRESETS`` are the mixes of the paper's recipe (Sec. 3.2), one per phase: ``pretrain-image``
(1A), ``pretrain-video`` (1B) and ``sft-paper`` (stage 2), over a dataset and its still images
(``preprocessing.stills``); ``component_samples`` lists one component's (query, target) samples.
"""

from __future__ import annotations

from dataclasses import dataclass

import duckdb
import numpy as np

from preprocessing import manifest

TASKS = ("caption", "vqa", "classification", "event")


@dataclass(frozen=True, kw_only=True)
class MixComponent:
    name: str
    task: str
    dataset: str
    split: str
    weight: float

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"component {self.name!r}: task must be one of {TASKS}, got {self.task!r}")
        if not self.weight > 0:
            raise ValueError(f"component {self.name!r}: weight must be > 0, got {self.weight}")

    @classmethod
    def parse(cls, text: str) -> "MixComponent":
        """'name=task:dataset:split:weight', e.g. 'vqa=vqa:synthetic:train:2'."""
        name, sep, rest = text.partition("=")
        parts = rest.split(":")
        if not sep or len(parts) != 4 or not name:
            raise ValueError(f"component {text!r} is not NAME=TASK:DATASET:SPLIT:WEIGHT")
        return cls(name=name, task=parts[0], dataset=parts[1], split=parts[2], weight=float(parts[3]))


@dataclass(frozen=True, kw_only=True)
class ComponentStats:
    component: str
    task: str
    dataset: str
    split: str
    weight: float
    share: float  # weight / sum of weights: expected fraction of draws
    n_items: int  # annotations available
    n_sources: int  # distinct clips behind them
    n_tokens: int | None  # cached tokens of those clips (None: none cached)
    epochs: float | None  # passes over the component in `n_draws` draws (None: no n_draws or no items)


@dataclass(frozen=True)
class Draw:
    component: str
    source_id: str
    task: str
    idx: int


def create_mix(con: duckdb.DuckDBPyConnection, name: str, components: list[MixComponent],
               description: str | None = None) -> None:
    """Create or replace the mix ``name`` with ``components`` (names must be distinct)."""
    if not components:
        raise ValueError(f"mix {name!r} needs at least one component")
    names = [c.name for c in components]
    if len(set(names)) != len(names):
        raise ValueError(f"mix {name!r}: component names repeat: {names}")
    con.begin()
    try:
        con.execute(manifest.load_sql("upsert_mix"), {"mix_name": name, "description": description})
        con.execute(manifest.load_sql("delete_mix_components"), {"mix_name": name})
        con.executemany(manifest.load_sql("insert_mix_component"), [
            {"mix_name": name, "component": c.name, "task": c.task, "dataset": c.dataset,
             "split": c.split, "weight": c.weight} for c in components])
        con.commit()
    except BaseException:
        con.rollback()
        raise


def mix_components(con: duckdb.DuckDBPyConnection, name: str) -> list[MixComponent]:
    rows = con.execute(manifest.load_sql("select_mix_components"), {"mix_name": name}).fetchall()
    if not rows:
        raise KeyError(f"no mix named {name!r} (create it with `vljepa data mix create`)")
    return [MixComponent(name=r[0], task=r[1], dataset=r[2], split=r[3], weight=r[4]) for r in rows]


def mix_stats(con: duckdb.DuckDBPyConnection, name: str, n_draws: int | None = None) -> list[ComponentStats]:
    """Counts per component; with ``n_draws``, the epochs each component would get."""
    mix_components(con, name)  # raises for an unknown mix
    rows = con.execute(manifest.load_sql("component_stats"), {"mix_name": name}).fetchall()
    total = sum(r[4] for r in rows)
    stats = []
    for component, task, dataset, split, weight, n_items, n_sources, n_tokens in rows:
        share = weight / total
        epochs = share * n_draws / n_items if n_draws and n_items else None
        stats.append(ComponentStats(component=component, task=task, dataset=dataset, split=split,
                                    weight=weight, share=share, n_items=n_items, n_sources=n_sources,
                                    n_tokens=None if n_tokens is None else int(n_tokens), epochs=epochs))
    return stats


def draw(con: duckdb.DuckDBPyConnection, name: str, n: int, *, seed: int, run_id: str | None = None) -> list[Draw]:
    """``n`` weighted draws from mix ``name``, reproducible from ``seed``.

    With ``run_id`` the draws are recorded in ``mix_draws`` (replacing that run's earlier ones).
    An empty component is an error: its weight could never be honoured.
    """
    components = mix_components(con, name)
    items = {}
    for c in components:
        rows = con.execute(manifest.load_sql("select_component_items"),
                           {"task": c.task, "dataset": c.dataset, "split": c.split}).fetchall()
        if not rows:
            raise ValueError(f"mix {name!r}: component {c.name!r} ({c.task} in {c.dataset}/{c.split}) is empty")
        items[c.name] = rows
    rng = np.random.default_rng(seed)
    weights = np.array([c.weight for c in components], dtype=np.float64)
    choice = rng.choice(len(components), size=n, p=weights / weights.sum())  # (n,)
    orders = {c.name: rng.permutation(len(items[c.name])) for c in components}
    cursor = dict.fromkeys(items, 0)
    draws = []
    for k in choice:
        c = components[int(k)]
        if cursor[c.name] == len(items[c.name]):  # a pass is over: re-shuffle for the next epoch
            orders[c.name], cursor[c.name] = rng.permutation(len(items[c.name])), 0
        source_id, idx = items[c.name][orders[c.name][cursor[c.name]]]
        cursor[c.name] += 1
        draws.append(Draw(c.name, source_id, c.task, int(idx)))
    if run_id is not None:
        con.begin()
        try:
            con.execute(manifest.load_sql("delete_mix_draws"), {"run_id": run_id})
            if draws:
                con.executemany(manifest.load_sql("insert_mix_draw"), [
                    {"run_id": run_id, "mix_name": name, "seed": seed, "draw_idx": i, "component": d.component,
                     "source_id": d.source_id, "task": d.task, "idx": d.idx} for i, d in enumerate(draws)])
            con.commit()
        except BaseException:
            con.rollback()
            raise
    return draws



def component_samples(con: duckdb.DuckDBPyConnection, component: MixComponent, *,
                      classification_query: str) -> list[tuple[str, int, str, str]]:
    """(source_id, idx, query, target) of every sample of ``component`` (``sql/component_samples.sql``).

    Ordered by (source_id, idx); annotations with no target text are left out. A caption or event
    has the empty query, a class label the query ``classification_query`` and target "a <label>".
    """
    rows = con.execute(manifest.load_sql("component_samples"), {
        "task": component.task, "dataset": component.dataset, "split": component.split,
        "classification_query": classification_query}).fetchall()
    return [(str(s), int(i), str(q), str(t)) for s, i, q, t in rows]


# -- the recipe's mixes -------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class ComponentTemplate:
    """A preset's component before its data is named: ``source`` says which dataset it reads."""

    name: str
    task: str
    source: str  # "dataset": the videos (the corpus); "stills": the image source
    weight: float

    def __post_init__(self) -> None:
        if self.source not in ("dataset", "stills"):
            raise ValueError(f"template {self.name!r}: source must be 'dataset' or 'stills', got {self.source!r}")


@dataclass(frozen=True, kw_only=True)
class MixPreset:
    description: str
    components: tuple[ComponentTemplate, ...]

    def shares(self) -> dict[str, float]:
        """Component name -> weight / sum of weights (expected fraction of draws)."""
        total = sum(c.weight for c in self.components)
        return {c.name: c.weight / total for c in self.components}


MIX_PRESETS: dict[str, MixPreset] = {
    "pretrain-image": MixPreset(
        description="paper phase 1A (Sec. 3.2.1): image-text data only, 1 frame a sample",
        components=(ComponentTemplate(name="stills", task="caption", source="stills", weight=1.0),)),
    # The paper gives no image : video ratio for phase 1B; 0.3 : 0.7 is our choice (videos are
    # what 1B adds, images keep the 1A alignment from drifting).
    "pretrain-video": MixPreset(
        description="paper phase 1B (Sec. 3.2.1): joint image + video captions, images 0.3 : videos 0.7 (our ratio)",
        components=(ComponentTemplate(name="stills", task="caption", source="stills", weight=0.3),
                    ComponentTemplate(name="videos", task="caption", source="dataset", weight=0.7))),
    # Sec. 3.2.2: 25M VQA, 2.8M captioning and 1.8M classification samples, plus "downsampled
    # pretraining data" of a size the paper does not give: we take 10 % of the 29.6M named
    # samples, 2.96M. Weights are millions of samples; shares = weight / 32.56.
    "sft-paper": MixPreset(
        description="paper stage 2 SFT (Sec. 3.2.2): 25M VQA, 2.8M captions, 1.8M classification, "
                    "2.96M pretraining captions (10 % of the rest: our size, the paper gives none)",
        components=(ComponentTemplate(name="vqa", task="vqa", source="dataset", weight=25.0),
                    ComponentTemplate(name="captions", task="caption", source="dataset", weight=2.8),
                    ComponentTemplate(name="classification", task="classification", source="dataset", weight=1.8),
                    ComponentTemplate(name="pretraining", task="caption", source="stills", weight=2.96))),
}


def mix_preset(name: str) -> MixPreset:
    try:
        return MIX_PRESETS[name]
    except KeyError:
        raise KeyError(f"unknown mix preset {name!r}; known presets: {', '.join(sorted(MIX_PRESETS))}") from None


def preset_components(name: str, *, dataset: str = "synthetic", stills_dataset: str = "synthetic-stills",
                      split: str = "train") -> list[MixComponent]:
    """The components of preset ``name`` over ``dataset`` (videos) and ``stills_dataset`` (images), one split."""
    datasets = {"dataset": dataset, "stills": stills_dataset}
    return [MixComponent(name=t.name, task=t.task, dataset=datasets[t.source], split=split, weight=t.weight)
            for t in mix_preset(name).components]


def create_preset_mix(con: duckdb.DuckDBPyConnection, name: str, *, mix_name: str | None = None,
                      dataset: str = "synthetic", stills_dataset: str = "synthetic-stills",
                      split: str = "train") -> list[MixComponent]:
    """Create (or replace) the mix ``mix_name`` (default: the preset's name) from preset ``name``."""
    components = preset_components(name, dataset=dataset, stills_dataset=stills_dataset, split=split)
    create_mix(con, mix_name or name, components, mix_preset(name).description)
    return components
