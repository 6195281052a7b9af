"""Named data mixes in the DuckDB manifest: create, describe, draw from (reproducibly), record.

A mix is a set of components, each the annotations of one task in one dataset's split, with a
weight: its expected share of draws. The paper's SFT stage mixes VQA, captions,
classification and pretraining data this way. ``draw`` picks a component for each draw with
probability weight / sum(weights) and then walks a per-component permutation (re-shuffled at
each pass: a pass is one epoch of that component), all from one numpy seed, so the same
(mix, seed, n) always gives the same draws; the draws are written to ``mix_draws``.
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
