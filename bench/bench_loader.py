"""The streaming reader vs the in-memory path on the same cache, side by side in one run (ratios).

One token cache (random float16 tokens (N, D), shards of ``--shard-size``) is written twice from
the same samples, as Parquet and as WebDataset shards. On each, one epoch of batches of
``--batch`` is read by:

- **in-memory**: ``read_cache`` -> ``TokenTextDataset`` -> ``BatchStream`` batches, ``visual()``
  (float32) and ``text()`` of each: what ``train`` reads from a ``TrainData``. Timed with and
  without the load (reading the cache into memory);
- **stream**: ``StreamData(...).open(...)`` ``next()`` batches (float32 visual, texts), with
  ``--workers`` DataLoader workers (0: read in the measuring process) and the training default
  shuffle buffer.

Each reader runs in a fresh subprocess, so its peak RSS is that run's ``VmHWM`` (``/proc``).
With workers, the batches are read in worker processes: their private memory (USS: private
clean + dirty pages, from ``smaps_rollup`` at the end of the epoch) is reported beside the
main process's peak and added to it in the memory ratio. Ratios, no thresholds: stream
samples/s / in-memory samples/s (load included, and excluded), stream peak memory / in-memory.

    .venv/bin/python -m bench.bench_loader [--quick] [--n-samples 4096] [--workers 0 2]

About 35 s at the default 4096 samples (512 MiB per cache), 15 s with ``--quick`` (512), on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

MIB = 2**20


def _status(field: str, pid: int | str = "self") -> int:
    """A ``/proc/<pid>/status`` field in bytes (VmRSS: resident now, VmHWM: peak resident)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(field)


def _private_bytes(pid: int) -> int:
    """Pages only this process holds (USS): what a forked worker adds to the machine's memory."""
    total = 0
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith(("Private_Clean:", "Private_Dirty:")):
            total += int(line.split()[1]) * 1024
    return total


def _children() -> list[int]:
    pids = []
    for task in Path("/proc/self/task").iterdir():
        try:
            pids += [int(p) for p in (task / "children").read_text().split()]
        except OSError:  # a thread that ended meanwhile
            pass
    return pids


def write_caches(root: Path, *, n: int, shape: tuple[int, int], shard_size: int) -> dict:
    """The same ``n`` samples as a Parquet and a WebDataset cache, and their items file."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from preprocessing.shards import ShardWriter, TokenRecord

    writers = {}
    for fmt in ("parquet", "webdataset"):
        (root / fmt).mkdir(parents=True)
        writers[fmt] = ShardWriter(root / fmt, fmt=fmt, shard_size=shard_size, encoder_id="bench")
    rng = np.random.default_rng(0)
    for i in range(n):
        record = TokenRecord(f"s{i}", f"s{i}", rng.standard_normal(shape, dtype=np.float32).astype(np.float16),
                             np.zeros(1))
        for writer in writers.values():
            writer.add(record)
    items = root / "items.parquet"
    pq.write_table(pa.table({"source_id": [f"s{i}" for i in range(n)], "query": [""] * n,
                             "target": [f"a clip numbered {i}" for i in range(n)]}), items)
    caches = {}
    for fmt, writer in writers.items():
        writer.close({})
        caches[fmt] = {"dir": str(root / fmt), "items": str(items), "n": n, "shape": list(shape),
                       "shards": [str(root / fmt / s["name"]) for s in writer.shards],
                       "shard_sizes": [s["n_samples"] for s in writer.shards],
                       "bytes": sum(s["bytes"] for s in writer.shards)}
    return caches


def measure(spec: dict) -> dict:
    """One epoch of batches by one reader, in this (fresh) process: seconds and memory."""
    import torch

    from preprocessing.shards import read_cache
    from preprocessing.stream import StreamComponent, StreamData, StreamPlan, load_items
    from vljepa.data import BatchStream, TokenTextDataset

    torch.set_num_threads(1)
    cache, batch = spec["cache"], spec["batch"]
    n_batches = cache["n"] // batch
    plan = StreamPlan(components=(StreamComponent(name="bench", weight=1.0, items=cache["items"], n_items=cache["n"],
                                                  shards=tuple(cache["shards"]),
                                                  shard_sizes=tuple(cache["shard_sizes"])),),
                      token_shape=tuple(cache["shape"]))
    items = load_items(plan)  # both paths need the texts: read before measuring
    rss_before = _status("VmRSS")
    try:
        Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS, so the set-up does not count
    except OSError:
        pass
    workers: list[int] = []
    start = time.perf_counter()
    if spec["kind"] == "memory":
        loaded = read_cache(cache["dir"])
        data = TokenTextDataset(loaded.sample_ids, loaded.tokens, [items[0][s][0][1] for s in loaded.sample_ids])
        order = BatchStream(len(data), batch, seed=0)
        load_end = time.perf_counter()
        for _ in range(n_batches):
            index = order.next()
            visual, texts = data.visual(index), data.text(index)  # (b, N, D) float32
        assert visual.shape == (batch, *cache["shape"]) and len(texts) == batch
    else:
        stream = StreamData(plan, items, num_workers=spec["workers"], shuffle_buffer=spec["shuffle_buffer"]).open(
            rank=0, world_size=1, batch_size=batch, seed=0, state=None)
        load_end = start  # nothing is loaded up front
        for _ in range(n_batches):
            got = stream.next()
        assert got["visual"].shape == (batch, *cache["shape"]) and len(got["texts"]) == batch
        workers = _children()
    end = time.perf_counter()
    worker_private = sum(_private_bytes(pid) for pid in workers)
    if spec["kind"] == "stream":
        stream.close()
    samples = n_batches * batch
    return {"kind": spec["kind"], "workers": spec.get("workers"), "samples": samples,
            "load_s": load_end - start, "total_s": end - start,
            "samples_per_s": samples / (end - start), "samples_per_s_after_load": samples / (end - load_end),
            "rss_before_mib": rss_before / MIB, "peak_rss_mib": _status("VmHWM") / MIB,
            "growth_mib": (_status("VmHWM") - rss_before) / MIB, "worker_processes": len(workers),
            "worker_private_mib": worker_private / MIB}


def run_child(spec: dict, tmp: Path) -> dict:
    """``measure(spec)`` in a fresh interpreter (its VmHWM is this measurement's alone)."""
    spec_path, out_path = tmp / "spec.json", tmp / "out.json"
    spec_path.write_text(json.dumps(spec))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-m", "bench.bench_loader", "--child", str(spec_path), str(out_path)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    if done.returncode:
        raise RuntimeError(f"{spec['kind']} reader failed: {done.stderr.strip()[-2000:]}")
    return json.loads(out_path.read_text())


def table(rows: list[dict]) -> str:
    head = ["cache", "reader", "load s", "samples/s", "samples/s after load", "peak RSS MiB", "RSS growth MiB",
            "workers' private MiB"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        reader = "in-memory" if r["kind"] == "memory" else f"stream, {r['workers']} workers"
        lines.append(f"| {r['format']} | {reader} | {r['load_s']:.2f} | {r['samples_per_s']:.0f} | "
                     f"{r['samples_per_s_after_load']:.0f} | {r['peak_rss_mib']:.0f} | {r['growth_mib']:.0f} | "
                     f"{r['worker_private_mib']:.0f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    """Write the two caches, run each reader on each in its own subprocess; rows and ratios."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="512 samples (64 MiB per cache)")
    parser.add_argument("--n-samples", type=int, default=4096, help="samples per cache (128 KiB each at 64 x 1024)")
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--dim", type=int, default=1024)
    parser.add_argument("--shard-size", type=int, default=64)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2], help="DataLoader workers of the stream")
    parser.add_argument("--shuffle-buffer", type=int, default=None, help="default: train.shuffle_buffer's default")
    parser.add_argument("--child", nargs=2, metavar=("SPEC", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        Path(args.child[1]).write_text(json.dumps(measure(json.loads(Path(args.child[0]).read_text()))))
        return {}
    from vljepa.config import TrainConfig

    n = 512 if args.quick else args.n_samples
    buffer = TrainConfig().shuffle_buffer if args.shuffle_buffer is None else args.shuffle_buffer
    out: dict = {"n_samples": n, "token_shape": [args.tokens, args.dim], "shard_size": args.shard_size,
                 "batch": args.batch, "shuffle_buffer": buffer, "rows": []}
    with tempfile.TemporaryDirectory(prefix="bench-loader-") as tmp:
        start = time.perf_counter()
        caches = write_caches(Path(tmp) / "caches", n=n, shape=(args.tokens, args.dim), shard_size=args.shard_size)
        out["write_s"] = time.perf_counter() - start
        for fmt, cache in caches.items():
            out[f"{fmt}_cache_mib"] = cache["bytes"] / MIB
            specs = [{"kind": "memory"}] + [{"kind": "stream", "workers": w} for w in args.workers]
            for spec in specs:
                row = run_child({**spec, "cache": cache, "batch": args.batch, "shuffle_buffer": buffer}, Path(tmp))
                out["rows"].append({"format": fmt, **row})
    out["ratios"] = []  # stream / in-memory, per cache format and worker count
    for fmt in caches:
        memory = next(r for r in out["rows"] if r["format"] == fmt and r["kind"] == "memory")
        for r in (r for r in out["rows"] if r["format"] == fmt and r["kind"] == "stream"):
            out["ratios"].append({
                "format": fmt, "workers": r["workers"],
                "samples_per_s": r["samples_per_s"] / memory["samples_per_s"],
                "samples_per_s_vs_after_load": r["samples_per_s"] / memory["samples_per_s_after_load"],
                "peak_memory": (r["peak_rss_mib"] + r["worker_private_mib"]) / memory["peak_rss_mib"],
                "rss_growth": (r["growth_mib"] + r["worker_private_mib"]) / memory["growth_mib"]})
    print(f"{n} samples of {args.tokens} x {args.dim} float16 ({out['parquet_cache_mib']:.0f} MiB Parquet, "
          f"{out['webdataset_cache_mib']:.0f} MiB WebDataset), shards of {args.shard_size}, batches of {args.batch}, "
          f"stream shuffle buffer {buffer}\n")
    print(table(out["rows"]))
    print("\nstream / in-memory | samples/s (load included) | samples/s (vs in-memory after load) | peak memory¹ "
          "| RSS growth¹\n---|---|---|---|---")
    for r in out["ratios"]:
        print(f"{r['format']}, {r['workers']} workers | {r['samples_per_s']:.3f} | "
              f"{r['samples_per_s_vs_after_load']:.3f} | {r['peak_memory']:.3f} | {r['rss_growth']:.3f}")
    print("\n¹ the stream's peak RSS (VmHWM) plus its workers' private memory, over the in-memory reader's peak RSS")
    return out


if __name__ == "__main__":
    main()
