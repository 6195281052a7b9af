"""The paper's ablations as data: each row's config change, the protocol they train under, and
what the paper found (final version §4.7, Table 5, in ``shared/paper/003``; explained in 001 §4.7).

The paper's protocol: every variant trained on the **SFT-stage data** for 10k steps × batch 512
(5M samples) with a **constant** learning rate, reported as classification top-1, text→video R@1
and VQA accuracy. ``Protocol`` scales that budget to a preset and adds seeds; ``protocol_config``
turns a preset into one variant's training config.

Initialisation: every variant starts from the stage-1 BASE model (the main job's), except row
(a)'s "none", which starts from the LM and text encoder: the setting without stage-1 pretraining. A variant
takes from BASE every tensor whose role it keeps (``flows.ablate.init_checkpoint``): a different
block of LM layers or random init gets its own predictor layers, another text encoder its own
weights, a missing projection head nothing. A deviation to know: Table 5's rows (b)-(d) share one
default, 27.3 / 30.2 / 42.5, which is (a)'s "w/o Pretraining" row, so the paper appears to have
trained those rows from the LM, not from BASE; at this CPU's budget (768 samples) a model trained
from the LM stays near chance (row (a) "none", measured), so rows from scratch could not tell the
variants apart.

Rows (``sweeps``):
- ``pretraining`` (a): from the stage-1 BASE model (the paper's default) vs from the LM;
- ``y-lr`` (b): the y-encoder learning-rate multiplier 0.05 / 1.0 / 0.1 / 0.01 / 0;
- ``loss`` (c): InfoNCE / cosine / L1 / L2 on a **frozen** text encoder with no projection head;
- ``predictor`` (d): LM layers, attention, init. The paper's predictor is layers 8-16 of the
  16-layer Llama-3.2-1B; its rows take layers 0-2, 0-4, 0-8, 0-16 counted **from the bottom**.
  Our predictor is the last ``n`` layers of its LM (``small``: 4 of SmolLM2-135M's 30), so the
  top ``2n`` layers stand for the paper's 16 (each of ours for two of its), the default is the
  upper half of them as the paper's 8-16 is, and the rows count from the bottom of those ``2n``:
  ``layers-0-2`` is its lowest ``n/4`` layer(s), ``layers-0-16`` all ``2n``. Then causal instead
  of bidirectional attention, and random instead of pretrained LM init;
- ``y-encoder`` (e): frozen text encoders, each with a trainable linear projection (the packaged
  one, plus any local HF text encoder given).
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
    from_base: bool = True  # start from the stage-1 BASE model (all but row (a)'s "none"), not from the LM


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


@dataclass(frozen=True, kw_only=True)
class Protocol:
    """The paper's ablation protocol at one preset's scale: SFT-stage data, a constant lr, a fixed
    number of samples per variant, several seeds (data order and the init of new heads)."""

    samples: int  # per variant (paper: 10k steps × 512 = 5.12M)
    batch_size: int
    seeds: tuple[int, ...] = (0, 1, 2)
    warmup_steps: int = 0  # linear warmup before the constant rate (paper: none stated)

    @property
    def steps(self) -> int:
        return max(1, self.samples // self.batch_size)

    def record(self) -> dict:
        """The protocol as a sweep's record holds it (``flows.ablate`` writes it, ``flows.ablate_report``
        reads it back from the runs' tags)."""
        return {"samples": self.samples, "batch_size": self.batch_size, "steps": self.steps,
                "seeds": list(self.seeds), "schedule": "constant", "data": "sft-paper mix (stage-2 data)"}


PROTOCOLS: dict[str, Protocol] = {
    "paper": Protocol(samples=5_120_000, batch_size=512),
    # ~35 s of training per variant on 2 CPU cores (0.045 s per SFT sample at batch 32): 17 variants
    # × 3 seeds fit in about an hour. 768 samples is 0.015 % of the paper's budget.
    "small": Protocol(samples=768, batch_size=32, warmup_steps=3),
    "tiny": Protocol(samples=32, batch_size=8),
    "rehearsal": Protocol(samples=16, batch_size=8),
}


def protocol_config(sft: VLJepaConfig, protocol: Protocol, seed: int) -> VLJepaConfig:
    """The preset's SFT-stage config trained the ablation way: a constant lr (the SFT stage's rate),
    ``protocol.steps`` steps of ``protocol.batch_size``, this seed, no validation-driven choice."""
    return replace(sft, **{"train.schedule": "constant", "train.warmup_steps": protocol.warmup_steps,
                           "train.batch_size": protocol.batch_size, "train.max_steps": protocol.steps,
                           "train.seed": seed, "train.init_from": None, "train.eval_every": None})


# Paper deltas in points against each table's default: (classification acc, retrieval R@1, VQA acc).
PAPER: dict[str, dict[str, tuple[float, float, float]]] = {
    "pretraining": {"base": (0.0, 0.0, 0.0), "none": (-21.7, -17.3, -3.6)},
    "y-lr": {"0.05": (0.0, 0.0, 0.0), "1.0": (-3.6, -1.4, -1.8), "0.1": (-0.4, 0.0, +0.4),
             "0.01": (-1.7, -2.5, -1.5), "0.0": (-7.3, -4.3, -1.1)},
    "loss": {"infonce": (0.0, 0.0, 0.0), "cosine": (-6.8, -10.1, +2.3), "l1": (-8.5, -14.8, -2.4),
             "l2": (-9.8, -18.6, -0.6)},
    "predictor": {"layers-8-16": (0.0, 0.0, 0.0), "layers-0-2": (-3.0, -2.4, -2.4), "layers-0-4": (-2.2, -1.3, +1.1),
                  "layers-0-8": (-0.1, -0.9, +0.9), "layers-0-16": (+0.1, +0.8, +3.0),
                  "causal": (-0.6, +1.0, -1.9), "random": (+0.8, +0.2, -1.9)},
}


def paper_delta(sweep: Sweep, variant: Variant) -> tuple[str, tuple[float, float, float]] | None:
    """(the paper's row, its deltas) for a variant, or None where the paper has no such row."""
    row = variant.paper_row or variant.name
    deltas_ = PAPER.get(sweep.name, {}).get(row)
    return (row, deltas_) if deltas_ is not None else None


def predictor_rows(cfg: VLJepaConfig) -> list[Variant]:
    """Row (d): the paper's layer ranges of its 16-layer LM on the top ``2n`` layers of ours (module doc)."""
    n, total = cfg.predictor.num_layers, cfg.predictor.lm.num_hidden_layers
    block = min(2 * n, total)  # our stand-in for the paper's 16 layers
    rows = [Variant(name="layers-8-16", default=True)]
    for hi in (2, 4, 8, 16):  # paper: layers 0..hi of 16, from the bottom
        count = max(1, round(hi * block / 16))
        rows.append(Variant(name=f"layers-0-{hi}", changes={"predictor.num_layers": count,
                                                            "predictor.layer_offset_from_top": block - count}))
    rows.append(Variant(name="causal", changes={"predictor.attention": "causal"}))
    if cfg.predictor.pretrained:  # a randomly initialised preset (tiny) has no pretrained init to drop
        rows.append(Variant(name="random", changes={"predictor.pretrained": False}))
    return rows


def sweeps(cfg: VLJepaConfig, *, y_encoder_paths: dict[str, str] | None = None) -> dict[str, Sweep]:
    """Every sweep for a preset. ``y_encoder_paths``: extra y-encoders (name -> local HF dir) for row (e)."""
    y_lr_default = cfg.y_encoder.lr_multiplier
    y_lrs = sorted({0.0, 0.01, 0.05, 0.1, 1.0, y_lr_default})
    y_encoders = [Variant(name=cfg.y_encoder.name, default=True)]
    for name, path in sorted((y_encoder_paths or {}).items()):
        y_encoders.append(Variant(name=name, changes={"y_encoder.name": "hf", "y_encoder.path": path}))
    losses = tuple(Variant(name=loss, changes={} if loss == cfg.train.loss else {"train.loss": loss},
                           default=loss == cfg.train.loss) for loss in ("infonce", "cosine", "l1", "l2"))
    n, total = cfg.predictor.num_layers, cfg.predictor.lm.num_hidden_layers
    out = [
        Sweep(name="pretraining", axis="train.init_from", variants=(
            Variant(name="base", default=True, from_base=True, paper_row="base"),
            Variant(name="none", paper_row="none", from_base=False)),
              note="base: from the stage-1 BASE model (the main job's); none: from the LM and text encoder"),
        Sweep(name="y-lr", axis="y_encoder.lr_multiplier", variants=tuple(
            Variant(name=str(m), changes={} if m == y_lr_default else {"y_encoder.lr_multiplier": m},
                    default=m == y_lr_default) for m in y_lrs),
              note="0.0 freezes the y-encoder (its projection head still trains)"),
        # Table 5(c): "with no projection head on top of a frozen text encoder".
        Sweep(name="loss", axis="train.loss", variants=losses,
              setting={"y_encoder.lr_multiplier": 0.0, "y_encoder.projection": False,
                       "shared_dim": cfg.y_encoder.hidden_size},
              note="the paper's setting for this table: frozen y-encoder, no projection head"),
        Sweep(name="predictor", axis="predictor", variants=tuple(predictor_rows(cfg)),
              note=f"layers: the top {min(2 * n, total)} of the {total}-layer LM stand for the paper's 16; "
                   "counted from their bottom"),
        # Table 5(e): "trainable linear projection on top of frozen text encoder".
        Sweep(name="y-encoder", axis="y_encoder.name", variants=tuple(y_encoders),
              setting={"y_encoder.lr_multiplier": 0.0},
              note="frozen text encoder + trainable linear projection; only the packaged one ships here, "
                   "pass local HF text encoders to compare more"),
    ]
    return {s.name: s for s in out}


def variant_config(cfg: VLJepaConfig, variant: Variant, sweep: Sweep | None = None) -> VLJepaConfig:
    """The preset with the sweep's shared setting and the variant's own changes applied."""
    changes = {**(sweep.setting if sweep else {}), **variant.changes}
    return replace(cfg, **changes) if changes else cfg
