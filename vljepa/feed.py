"""How the training loop gets each micro-batch: from in-memory ``TrainData`` or from a stream.

- ``IndexFeed``: ``TrainData`` addressed by index through the seeded ``BatchStream``; every rank
  draws the same global batch and takes its slice (the original loop, kept for ablations, the
  controlled comparison and tests).
- ``StreamFeed``: ``StreamedData`` (``preprocessing.stream``): each rank reads its own batches from
  its shards; the checkpoint holds every rank's stream state (gathered to rank 0), so a resumed run
  reads the same samples in the same order.

Both give ``(visual (b, N, D), queries or None, texts)`` per micro-step and a JSON-able state.
"""

from __future__ import annotations

from typing import Any

import torch

from vljepa.data import BatchStream, StreamedData, TrainData
from vljepa.distributed import DistContext


class IndexFeed:
    def __init__(self, data: TrainData, *, batch_size: int, seed: int, micro_global: int, micro_local: int,
                 dist: DistContext) -> None:
        self.data, self.dist = data, dist
        self.micro_global, self.micro_local = micro_global, micro_local
        self.stream = BatchStream(len(data), batch_size, seed)
        self.global_index = torch.empty(0, dtype=torch.long)

    def start_step(self) -> None:
        self.global_index = self.stream.next()  # (B,) the same on every rank

    def micro(self, micro: int) -> tuple[torch.Tensor, list[str] | None, list[str]]:
        index = self.global_index[micro * self.micro_global:(micro + 1) * self.micro_global]
        local = index[self.dist.rank * self.micro_local:(self.dist.rank + 1) * self.micro_local]  # (b,)
        return self.data.visual(local), self.data.query(local), self.data.text(local)

    def state_dict(self) -> dict[str, Any]:
        return self.stream.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.stream.load_state_dict(state)

    def summary(self) -> dict[str, Any]:
        return {"loader": "memory", "n_samples": len(self.data)}

    def close(self) -> None:
        pass


class StreamFeed:
    def __init__(self, data: StreamedData, *, micro_local: int, seed: int, dist: DistContext) -> None:
        self.data, self.dist, self.micro_local, self.seed = data, dist, micro_local, seed
        self._resume: dict[str, Any] | None = None
        self._reader = None

    def reader(self):
        if self._reader is None:
            self._reader = self.data.open(rank=self.dist.rank, world_size=self.dist.world_size,
                                          batch_size=self.micro_local, seed=self.seed, state=self._resume)
        return self._reader

    def start_step(self) -> None:
        pass

    @torch.no_grad()
    def _encode(self, visual: torch.Tensor) -> torch.Tensor:
        return self.data.encode(visual).float()  # type: ignore[misc]

    def micro(self, micro: int) -> tuple[torch.Tensor, list[str] | None, list[str]]:
        batch = self.reader().next()
        visual = batch["visual"]  # (b, N, D) tokens, or (b, T, 3, H, W) frames in live mode
        if self.data.encode is not None:
            visual = self._encode(visual)
        queries = batch["queries"]
        return visual, (queries if any(queries) else None), batch["texts"]

    def state_dict(self) -> dict[str, Any]:
        """Every rank's stream state (a collective: all ranks call it together)."""
        return {"kind": "stream", "ranks": self.dist.gather_objects(self.reader().state_dict())}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("kind") != "stream" or len(state.get("ranks", [])) != self.dist.world_size:
            found = f"{len(state['ranks'])} ranks" if state.get("kind") == "stream" else "the in-memory loader"
            raise ValueError(f"the checkpoint's data stream was written by {found}; this run has "
                             f"{self.dist.world_size} stream ranks: resume with the same launch, or a new run dir")
        self._resume = state["ranks"][self.dist.rank]

    def summary(self) -> dict[str, Any]:
        """Samples drawn per component and bad data skipped, summed over ranks (a collective)."""
        reader = self.reader()
        parts = self.dist.gather_objects({"drawn": dict(reader.drawn), "skipped": dict(reader.skipped)})
        drawn: dict[str, int] = {}
        skipped: dict[str, int] = {}
        for part in parts:
            for name, n in part["drawn"].items():
                drawn[name] = drawn.get(name, 0) + n
            for name, n in part["skipped"].items():
                skipped[name] = skipped.get(name, 0) + n
        return {"loader": "stream", "n_samples": self.data.n_samples, "drawn": drawn, "skipped": skipped,
                "shares": dict(self.data.shares)}

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()


def make_feed(data: TrainData | StreamedData, *, batch_size: int, seed: int, micro_global: int, micro_local: int,
              dist: DistContext) -> IndexFeed | StreamFeed:
    if hasattr(data, "open"):
        return StreamFeed(data, micro_local=micro_local, seed=seed, dist=dist)  # type: ignore[arg-type]
    return IndexFeed(data, batch_size=batch_size, seed=seed, micro_global=micro_global,  # type: ignore[arg-type]
                     micro_local=micro_local, dist=dist)


def n_samples(data: TrainData | StreamedData) -> int:
    """Samples in one epoch of ``data``."""
    return data.n_samples if hasattr(data, "open") else len(data)  # type: ignore[union-attr, arg-type]
