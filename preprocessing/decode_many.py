"""Several files through one ffmpeg process: the same frames as ``decode._decode_all`` on each.

Starting ffmpeg costs ~0.13 s of CPU here (it links ~200 shared libraries), about 80 % of decoding
a 2-second clip or an image. One process with N inputs, N filter chains and N outputs pays it once.
Each chain is the single-file chain (``select``, the short-edge ``scale``, the centre ``crop``, a
``showinfo`` named after its input so its timestamps can be told apart), each output a raw RGB
file in a temporary directory. Any trouble (the process fails, an output's bytes or timestamps do
not add up) returns None for the files concerned: the caller decodes them alone, so errors are
reported exactly as for a single file. A file that ffmpeg cannot open fails the whole process;
the batch is then halved until that file is alone (about 2 log2(N) starts instead of N).
"""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from preprocessing.decode import resize_short_edge

# "[showinfo@in3 @ 0x...] n:   0 pts:   1024 pts_time:0.1 ..."
_NAMED_PTS = re.compile(r"\[showinfo@in(\d+) @ [^\]]*\]\s*n:\s*\d+\s+pts:\s*-?\d+\s+pts_time:(-?[0-9.eE+-]+)")


def _escape(expr: str) -> str:
    """A filter option value inside -filter_complex: commas and colons would split it."""
    return expr.replace("\\", "\\\\").replace(",", "\\,").replace(":", "\\:")


def _chain(index: int, size: int, select_expr: str | None) -> str:
    short = resize_short_edge(size)
    steps = [f"select={_escape(select_expr)}"] if select_expr is not None else []
    # As decode._decode_all: both sides >= short (aspect kept), bilinear, centre crop, then showinfo.
    steps += [f"scale={short}:{short}:flags=bilinear:force_original_aspect_ratio=increase",
              f"crop={size}:{size}", f"showinfo@in{index}=checksum=0"]
    return f"[{index}]" + ",".join(steps) + f"[out{index}]"


def _scratch_dir() -> str | None:
    shm = Path("/dev/shm")
    return str(shm) if shm.is_dir() and os.access(shm, os.W_OK) else None  # RAM, where there is one


def decode_all_many(jobs: Sequence[tuple[Path, str | None]], size: int) -> list[tuple[np.ndarray, np.ndarray] | None]:
    """``(path, select_expr)`` jobs -> each file's (frames uint8 (F, size, size, 3), pts float64 (F,)), or None.

    None: this file (or, if the process failed, every file) must be decoded alone.
    """
    if not jobs:
        return []
    with tempfile.TemporaryDirectory(prefix="vljepa-decode-", dir=_scratch_dir()) as tmp:
        outputs = [Path(tmp) / f"{k}.rgb" for k in range(len(jobs))]
        args = ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "info"]
        for path, _ in jobs:
            args += ["-i", str(path)]
        args += ["-filter_complex", ";".join(_chain(k, size, select) for k, (_, select) in enumerate(jobs))]
        for k, out in enumerate(outputs):
            args += ["-map", f"[out{k}]", "-f", "rawvideo", "-fps_mode", "passthrough", "-pix_fmt", "rgb24", str(out)]
        proc = subprocess.run(args, capture_output=True, check=False)
        if proc.returncode != 0:  # a file ffmpeg cannot open fails the process: halve until it is alone
            if len(jobs) == 1:
                return [None]
            half = len(jobs) // 2
            return decode_all_many(jobs[:half], size) + decode_all_many(jobs[half:], size)
        pts: dict[int, list[float]] = {k: [] for k in range(len(jobs))}
        for match in _NAMED_PTS.finditer(proc.stderr.decode("utf-8", "replace")):
            pts[int(match.group(1))].append(float(match.group(2)))
        frame_bytes = size * size * 3
        results: list[tuple[np.ndarray, np.ndarray] | None] = []
        for k, out in enumerate(outputs):
            raw = out.read_bytes() if out.is_file() else b""
            if len(raw) % frame_bytes or len(raw) // frame_bytes != len(pts[k]):
                results.append(None)
                continue
            frames = np.frombuffer(raw, dtype=np.uint8).reshape(-1, size, size, 3)
            results.append((frames, np.asarray(pts[k], dtype=np.float64)))
        return results
