"""Token caching's decode stage: one ffmpeg process a file against several files a process.

``run_local`` decodes in 2 threads. One ffmpeg start costs ~0.13 s of CPU here, most of the cost of a
2-second clip or an image, so ``decode_items`` hands 16 files to one process. This bench decodes the
same files both ways through the same 2-thread pool, interleaved over repeats, and checks that the
frames are equal. Ratio = files/s batched / files/s one a process, for short clips (uniform sample,
the embedded default's 4 frames at 160²) and for images.

    python bench/bench_decode_batch.py [--clips 64] [--images 64] [--repeats 2]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from bench._media import make_corpus  # noqa: E402
from preprocessing.decode import probe_video  # noqa: E402
from preprocessing.encode import ClipRef  # noqa: E402
from preprocessing.pipeline import DECODE_CHUNK, decode_item, decode_items  # noqa: E402
from preprocessing.sampling import SamplingConfig  # noqa: E402


def _images(root: Path, n: int) -> list[Path]:
    root.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(n):
        path = root / f"img{i:03d}.png"
        subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-f", "lavfi", "-i",
                        f"testsrc=size=192x144:rate=1,hue=h={i * 7}", "-frames:v", "1", str(path)], check=True)
        out.append(path)
    return out


def _alone(clips: list[ClipRef], sampling: SamplingConfig, size: int, frames: int) -> list:
    with ThreadPoolExecutor(max_workers=2) as pool:
        return list(pool.map(lambda c: decode_item(c, sampling, size=size, num_frames=frames), clips))


def _batched(clips: list[ClipRef], sampling: SamplingConfig, size: int, frames: int) -> list:
    chunks = [clips[at:at + DECODE_CHUNK] for at in range(0, len(clips), DECODE_CHUNK)]
    with ThreadPoolExecutor(max_workers=2) as pool:
        done = pool.map(lambda c: decode_items(c, sampling, size=size, num_frames=frames), chunks)
        return [item for chunk in done for item in chunk]


def main(argv: list[str] | None = None) -> dict:
    """Files/s each way per kind; ratio = batched / one a process."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=64)
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--size", type=int, default=160)
    parser.add_argument("--frames", type=int, default=4)
    args = parser.parse_args(argv)
    sampling = SamplingConfig(num_frames=args.frames)
    out: dict = {"chunk": DECODE_CHUNK, "size": args.size, "frames": args.frames, "repeats": args.repeats}
    with tempfile.TemporaryDirectory() as tmp:
        probed = [probe_video(p) for p in make_corpus(Path(tmp) / "clips", args.clips, seconds=2.0)]
        kinds = {"clips": [ClipRef(Path(i.path).stem, i.path, "-", duration=i.duration, fps=i.fps) for i in probed],
                 "images": [ClipRef(p.stem, str(p), "-") for p in _images(Path(tmp) / "images", args.images)]}
        for kind, clips in kinds.items():
            seconds: dict[str, list[float]] = {"alone": [], "batched": []}
            results = {}
            for _ in range(args.repeats):
                for name, fn in (("alone", _alone), ("batched", _batched)):
                    start = time.perf_counter()
                    results[name] = fn(clips, sampling, args.size, args.frames)
                    seconds[name].append(time.perf_counter() - start)
            equal = all(a[1] is None and b[1] is None and np.array_equal(a[0][0].frames, b[0][0].frames)
                        for a, b in zip(results["alone"], results["batched"]))
            alone, batched = (len(clips) / statistics.median(seconds[k]) for k in ("alone", "batched"))
            out[kind] = {"n": len(clips), "alone_files_per_s": alone, "batched_files_per_s": batched,
                         "ratio": batched / alone, "equal": equal}
            print(f"{kind:<7} one a process {alone:6.1f} files/s, {DECODE_CHUNK} a process {batched:6.1f} files/s, "
                  f"ratio {batched / alone:.2f}   frames equal: {equal}")
    return out


if __name__ == "__main__":
    main()
