"""Decode + sample throughput against raw ffmpeg at the same fps and size, on the real clips.

For each clip and rate: ``sample_fps`` (ffmpeg-python, showinfo timestamps, numpy frames)
against ``ffmpeg -i CLIP -vf fps=F,scale,crop -f rawvideo -pix_fmt rgb24 - > /dev/null``;
and ``sample_uniform`` (16 frames, select pre-filter) against the raw command at the rate that
gives 16 frames. Ratio = raw seconds / ours (1.0 = no overhead; goal >= 0.85). Best of N runs.

    python bench/decode_throughput.py [--size 224] [--repeats 3] [--clips N]

``--clips N`` times only the first N real clips (default: all of them).
"""

from __future__ import annotations

import argparse
import math
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._media import real_clips  # noqa: E402
from preprocessing.decode import probe_video, resize_short_edge  # noqa: E402
from preprocessing.sampling import sample_fps, sample_uniform  # noqa: E402


def raw_ffmpeg(path: Path, fps: float, size: int) -> None:
    short = resize_short_edge(size)
    vf = (f"fps={fps},scale={short}:{short}:force_original_aspect_ratio=increase:flags=bilinear,"
          f"crop={size}:{size}")
    with open("/dev/null", "wb") as sink:
        subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-i", str(path), "-vf", vf, "-f", "rawvideo",
                        "-pix_fmt", "rgb24", "-"], stdout=sink, check=True)


def best(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main(argv: list[str] | None = None) -> dict:
    """Time every (real clip, mode); returns the per-row seconds and ratios and their geometric mean."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--clips", type=int, default=None, help="only the first N real clips (default: all)")
    args = parser.parse_args(argv)
    if args.clips is not None and args.clips < 1:
        parser.error("--clips must be >= 1 (the geometric mean needs a row)")
    print(f"{'clip':<18}{'mode':<14}{'frames':>7}{'raw s':>8}{'ours s':>8}{'ratio':>7}")
    rows = []
    for path in real_clips()[:args.clips]:
        info = probe_video(path)
        for mode, fps in (("fps=2", 2.0), ("fps=8", 8.0), ("uniform16", 16 / info.duration)):
            if mode == "uniform16":
                # duration/fps as the manifest has them from import (the pipeline passes them).
                ours = best(lambda: sample_uniform(path, num_frames=16, size=args.size,
                                                   duration=info.duration, fps=info.fps), args.repeats)
                n = 16
            else:
                ours = best(lambda: sample_fps(path, fps=fps, size=args.size), args.repeats)
                n = len(sample_fps(path, fps=fps, size=args.size).frames)
            raw = best(lambda: raw_ffmpeg(path, fps, args.size), args.repeats)
            rows.append({"clip": path.name, "mode": mode, "frames": n, "raw_s": raw, "ours_s": ours, "ratio": raw / ours})
            print(f"{path.name:<18}{mode:<14}{n:>7}{raw:>8.3f}{ours:>8.3f}{raw / ours:>7.2f}")
    geomean = math.prod(r["ratio"] for r in rows) ** (1 / len(rows))
    print(f"geometric mean ratio (raw/ours): {geomean:.2f}  (goal >= 0.85)")
    return {"rows": rows, "geomean_ratio": geomean, "size": args.size, "repeats": args.repeats}


if __name__ == "__main__":
    main()
