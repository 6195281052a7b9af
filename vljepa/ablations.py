"""The paper's ablation axes as data: which config changes each sweep makes, and what the paper found.

Paper (final version, Table 4 in shared/paper/003; submission §4.7): each ablation is reported as
classification accuracy, retrieval R@1 and VQA accuracy, with the change in points against the
default row. ``PAPER`` holds those deltas so our runs can be printed next to the direction the
paper saw. A sweep is a list of ``Variant``s (a name and dotted config changes, as
``vljepa.config.replace`` takes them); exactly one is the default, the preset unchanged.

Sweeps: ``loss`` (in the paper's setting: frozen y-encoder, no projection head), ``loss-trainable``
(the same losses with the default trainable y-encoder), ``y-lr`` (y-encoder learning-rate multiplier), ``depth`` (how many of the LM's
last layers, and where in the LM), ``attention`` (bidirectional vs causal), ``init`` (pretrained
LM layers vs random) and ``y-encoder`` (the packaged one plus any local HF text encoder given).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from vljepa.config import VLJepaConfig, replace

# The metrics a sweep compares, in the paper's order: (key in our results, paper's column).
METRICS = (("classification/top1", "classification"), ("retrieval/t2v_r1", "retrieval"), ("vqa/accuracy", "vqa"))


@dataclass(frozen=True, kw_only=True)
class Variant:
    name: str
    changes: dict[str, Any] = field(default_factory=dict)
    default: bool = False
    paper_row: str | None = None  # the paper's row this variant corresponds to (default: its name)


@dataclass(frozen=True, kw_only=True)
class Sweep:
    name: str
    axis: str  # the config field (or idea) that varies: an MLflow tag
    variants: tuple[Variant, ...]
    note: str = ""
    setting: dict[str, Any] = field(default_factory=dict)  # changes every variant shares (the paper's setting)

    def __post_init__(self) -> None:
        if sum(v.default for v in self.variants) != 1:
            raise ValueError(f"sweep {self.name!r} needs exactly one default variant")
        names = [v.name for v in self.variants]
        if len(set(names)) != len(names):
            raise ValueError(f"sweep {self.name!r} has duplicate variant names {names}")

    @property
    def default(self) -> Variant:
        return next(v for v in self.variants if v.default)

    def select(self, names: list[str] | None) -> "Sweep":
        """The sweep restricted to ``names`` (the default is always kept: deltas are against it)."""
        if not names:
            return self
        unknown = sorted(set(names) - {v.name for v in self.variants})
        if unknown:
            raise KeyError(f"sweep {self.name!r} has no variant(s) {unknown}; it has {[v.name for v in self.variants]}")
        return Sweep(name=self.name, axis=self.axis, note=self.note, setting=self.setting,
                     variants=tuple(v for v in self.variants if v.default or v.name in names))


# Paper deltas in points against the default row: (classification acc, retrieval R@1, VQA acc).
# Table 4 (b)-(d) of the final version; (c) was run "with no projection head on top of a frozen
# text encoder", so its default differs from the others'.
PAPER: dict[str, dict[str, tuple[float, float, float]]] = {
    "loss": {"infonce": (0.0, 0.0, 0.0), "cosine": (-6.8, -10.1, +2.3), "l1": (-8.5, -14.8, -2.4),
             "l2": (-9.8, -18.6, -0.6)},
    "y-lr": {"0.05": (0.0, 0.0, 0.0), "1.0": (-3.6, -1.4, -1.8), "0.1": (-0.4, 0.0, +0.4),
             "0.01": (-1.7, -2.5, -1.5), "0.0": (-7.3, -4.3, -1.1)},
    # Default: layers 8-16 of Llama-3.2-1B (the last 8). "first-k": layers 0-k; "all": 0-16.
    "depth": {"last-8": (0.0, 0.0, 0.0), "first-2": (-3.0, -2.4, -2.4), "first-4": (-2.2, -1.3, +1.1),
              "first-8": (-0.1, -0.9, +0.9), "all": (+0.1, +0.8, +3.0)},
    "attention": {"bidirectional": (0.0, 0.0, 0.0), "causal": (-0.6, +1.0, -1.9)},
    "init": {"pretrained": (0.0, 0.0, 0.0), "random": (+0.8, +0.2, -1.9)},
}


def paper_delta(sweep: Sweep, variant: Variant) -> tuple[str, tuple[float, float, float]] | None:
    """(the paper's row, its deltas) for a variant, or None where the paper has no such row."""
    row = variant.paper_row or variant.name
    deltas_ = PAPER.get(sweep.name, {}).get(row)
    return (row, deltas_) if deltas_ is not None else None


def sweeps(cfg: VLJepaConfig, *, y_encoder_paths: dict[str, str] | None = None) -> dict[str, Sweep]:
    """Every sweep for a preset. ``y_encoder_paths``: extra y-encoders (name -> local HF dir) to compare."""
    n_layers, total = cfg.predictor.num_layers, cfg.predictor.lm.num_hidden_layers
    # Our depth rows map onto the paper's by role (its LM has 16 layers, default the last 8):
    # half the layers -> "first-4", twice -> "all" (0-16), the same count at the bottom -> "first-8".
    depth = [Variant(name=f"last-{n_layers}", default=True, paper_row="last-8")]
    if n_layers >= 2:
        depth.append(Variant(name=f"last-{n_layers // 2}", changes={"predictor.num_layers": n_layers // 2},
                             paper_row="first-4"))
    if 2 * n_layers <= total:
        depth.append(Variant(name=f"last-{2 * n_layers}", changes={"predictor.num_layers": 2 * n_layers},
                             paper_row="all"))
    if total >= 3 * n_layers:  # the same number of layers taken lower in the LM
        depth.append(Variant(name=f"middle-{n_layers}",
                             changes={"predictor.layer_offset_from_top": (total - n_layers) // 2}))
        depth.append(Variant(name=f"first-{n_layers}", changes={"predictor.layer_offset_from_top": total - n_layers},
                             paper_row="first-8"))
    y_lr_default = cfg.y_encoder.lr_multiplier
    y_lrs = sorted({0.0, 0.01, 0.05, 0.1, 1.0, y_lr_default})
    y_encoders = [Variant(name=cfg.y_encoder.name, default=True)]
    for name, path in sorted((y_encoder_paths or {}).items()):
        y_encoders.append(Variant(name=name, changes={"y_encoder.name": "hf", "y_encoder.path": path}))
    losses = tuple(Variant(name=loss, changes={} if loss == cfg.train.loss else {"train.loss": loss},
                           default=loss == cfg.train.loss) for loss in ("infonce", "cosine", "l1", "l2"))
    out = [
        # Paper Table 4(c): "with no projection head on top of a frozen text encoder".
        Sweep(name="loss", axis="train.loss", variants=losses,
              setting={"y_encoder.lr_multiplier": 0.0, "y_encoder.projection": False,
                       "shared_dim": cfg.y_encoder.hidden_size},
              note="the paper's setting for this table: frozen y-encoder, no projection head"),
        # The same losses with the default trainable y-encoder + projection: the regression losses
        # have a collapsed solution there (both sides constant), which InfoNCE's negatives rule out.
        Sweep(name="loss-trainable", axis="train.loss", variants=losses,
              note="trainable y-encoder (lr ×0.05) and projection head, as the default model"),
        Sweep(name="y-lr", axis="y_encoder.lr_multiplier", variants=tuple(
            Variant(name=str(m), changes={} if m == y_lr_default else {"y_encoder.lr_multiplier": m},
                    default=m == y_lr_default) for m in y_lrs),
              note="0.0 freezes the y-encoder (the submission's frozen-SONAR setting)"),
        Sweep(name="depth", axis="predictor.num_layers", variants=tuple(depth),
              note=f"layers of the {total}-layer LM the predictor is cut from"),
        Sweep(name="attention", axis="predictor.attention", variants=(
            Variant(name="bidirectional", default=True),
            Variant(name="causal", changes={"predictor.attention": "causal"}))),
        Sweep(name="init", axis="predictor.pretrained", variants=(
            Variant(name="pretrained", default=True),
            Variant(name="random", changes={"predictor.pretrained": False}))),
        Sweep(name="y-encoder", axis="y_encoder.name", variants=tuple(y_encoders),
              note="only the packaged y-encoder ships here; pass local HF text encoders to compare more"),
    ]
    if not cfg.predictor.pretrained:  # a randomly initialised preset (tiny): "init" compares nothing
        out = [s for s in out if s.name != "init"]
    return {s.name: s for s in out}


def variant_config(cfg: VLJepaConfig, variant: Variant, sweep: Sweep | None = None) -> VLJepaConfig:
    """The preset with the sweep's shared setting and the variant's own changes applied."""
    changes = {**(sweep.setting if sweep else {}), **variant.changes}
    return replace(cfg, **changes) if changes else cfg


def deltas(results: dict[str, dict[str, float]], default: str) -> dict[str, dict[str, float]]:
    """Per variant and metric: the change against the default, in points (×100) as the paper prints."""
    base = results[default]
    return {name: {k: 100.0 * (m[k] - base[k]) for k in m if k in base} for name, m in results.items()}


def summary_markdown(sweep: Sweep, results: dict[str, dict[str, float]]) -> str:
    """Table: our value (Δ points vs default) per metric, next to the paper's Δ for that row."""
    d = deltas(results, sweep.default.name)
    header = "| variant | " + " | ".join(col for _, col in METRICS) + " | paper row: Δ (cls, ret, vqa) |"
    lines = [f"### Ablation `{sweep.name}` ({sweep.axis})", "", header, "|" + "---|" * (len(METRICS) + 2)]
    for v in sweep.variants:
        if v.name not in results:
            continue
        cells = []
        for key, _ in METRICS:
            value = results[v.name].get(key)
            if value is None:
                cells.append("–")
            elif v.default:
                cells.append(f"{100 * value:.1f}")
            else:
                cells.append(f"{100 * value:.1f} ({d[v.name][key]:+.1f})")
        paper = paper_delta(sweep, v)
        paper_cell = "–" if paper is None else (
            f"{paper[0]}: default" if v.default else f"{paper[0]}: " + ", ".join(f"{x:+.1f}" for x in paper[1]))
        lines.append(f"| {v.name}{' (default)' if v.default else ''} | " + " | ".join(cells) + f" | {paper_cell} |")
    if sweep.note:
        lines += ["", sweep.note]
    return "\n".join(lines)


def agreement(sweep: Sweep, results: dict[str, dict[str, float]], *, tolerance: float = 1.0) -> dict[str, dict[str, str]]:
    """Per variant and metric: "agrees" / "disagrees" / "flat" with the paper's direction of effect.

    A change within ±``tolerance`` points (ours or the paper's) counts as flat; two flats agree.
    """
    d = deltas(results, sweep.default.name)
    out: dict[str, dict[str, str]] = {}
    for v in sweep.variants:
        paper = paper_delta(sweep, v)
        if v.default or paper is None or v.name not in d:
            continue
        row = {}
        for (key, col), theirs in zip(METRICS, paper[1]):
            ours = d[v.name].get(key)
            if ours is None:
                continue
            sign = lambda x: 0 if abs(x) <= tolerance else (1 if x > 0 else -1)  # noqa: E731
            row[col] = "agrees" if sign(ours) == sign(theirs) else "disagrees"
        out[v.name] = row
    return out
