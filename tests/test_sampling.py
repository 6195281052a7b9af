"""Sampling strategies: uniform (select pre-filter == full decode), fixed fps, sliding windows, images."""

from __future__ import annotations

import numpy as np
import pytest

from preprocessing.decode import DecodeError, decode_frames
from preprocessing.sampling import SamplingConfig, sample_clip, sample_fps, sample_uniform, sliding_windows
from tests.media import ffmpeg_make, make_h264, make_vfr


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    root = tmp_path_factory.mktemp("sampling")
    return {"long": make_h264(root / "long.mp4", 6.0, "96x64", 25), "short": make_h264(root / "short.mp4", 0.3),
            "vfr": make_vfr(root / "vfr.mp4"), "image": ffmpeg_make(root / "i.png", "color=red:size=30x20", "-frames:v", "1")}


def test_uniform_with_select_prefilter_equals_full_decode(clips):
    fast = sample_uniform(clips["long"], num_frames=16, size=32)  # 150 frames: the select path
    full = decode_frames(clips["long"], num_frames=16, size=32)  # decodes every frame
    np.testing.assert_array_equal(fast.timestamps, full.timestamps)
    np.testing.assert_array_equal(fast.frames, full.frames)
    assert fast.frames.shape == (16, 32, 32, 3)
    # Segment centres of a 6 s clip at 25 fps: (k + 0.5) * 6 / 16, to the nearest 0.04 s frame.
    np.testing.assert_allclose(fast.timestamps, (np.arange(16) + 0.5) * 6 / 16, atol=0.02 + 1e-9)


def test_uniform_on_variable_frame_rate_picks_existing_frames(clips):
    from preprocessing.decode import _decode_all, probe_video

    clip = sample_uniform(clips["vfr"], num_frames=4, size=16)
    frames, pts = _decode_all(clips["vfr"], 16)  # every frame the file has
    assert np.all(np.diff(clip.timestamps) > 0)
    duration = probe_video(clips["vfr"]).duration
    targets = (np.arange(4) + 0.5) * duration / 4
    for t, target, picked in zip(clip.timestamps, targets, clip.frames):
        nearest = np.abs(pts - target).argmin()  # the frame a full decode would pick
        assert t == pts[nearest]
        np.testing.assert_array_equal(picked, frames[nearest])


def test_too_short_clip_fails_unless_repeat_allowed(clips):
    with pytest.raises(DecodeError, match="too short"):
        sample_uniform(clips["short"], num_frames=8, size=16)
    clip = sample_uniform(clips["short"], num_frames=8, size=16, allow_repeat=True)
    assert clip.frames.shape[0] == 8 and clip.n_decoded == 3


def test_fixed_fps_timestamps_are_on_the_output_grid(clips):
    clip = sample_fps(clips["long"], fps=2, size=16)
    np.testing.assert_allclose(clip.timestamps, np.arange(12) * 0.5)
    assert sample_fps(clips["long"], fps=2, size=16, max_frames=5).frames.shape[0] == 5


def test_sliding_windows_cover_the_clip_with_stride(clips):
    samples = sample_clip(clips["long"], SamplingConfig(strategy="sliding", fps=4, window=8, stride=4), size=16)
    assert [s.index for s in samples] == [0, 1, 2, 3, 4]  # 24 frames: starts 0, 4, ..., 16
    for a, b in zip(samples, samples[1:]):
        np.testing.assert_array_equal(a.timestamps[4:], b.timestamps[:4])  # half-window overlap
        np.testing.assert_array_equal(a.frames[4:], b.frames[:4])
    with pytest.raises(DecodeError, match="sliding window"):
        sample_clip(clips["short"], SamplingConfig(strategy="sliding", fps=10, window=8, stride=4), size=16)
    with pytest.raises(ValueError):
        SamplingConfig(stride=0)


def test_image_is_a_one_frame_clip_repeated_on_request(clips):
    (one,) = sample_clip(clips["image"], SamplingConfig(), size=8)
    assert one.frames.shape == (1, 8, 8, 3) and one.timestamps.tolist() == [0.0]
    (rep,) = sample_clip(clips["image"], SamplingConfig(), size=8, repeat_to=4)
    assert rep.frames.shape == (4, 8, 8, 3) and (rep.frames == rep.frames[:1]).all()


def test_known_duration_and_fps_skip_the_probe_with_the_same_result(clips, monkeypatch):
    import preprocessing.sampling as sampling_module
    from preprocessing.decode import probe_video

    info = probe_video(clips["long"])
    expected = sample_uniform(clips["long"], num_frames=8, size=16)

    def no_probe(path):
        raise AssertionError("probed although duration and fps were given")

    monkeypatch.setattr(sampling_module, "probe_video", no_probe)
    got = sample_uniform(clips["long"], num_frames=8, size=16, duration=info.duration, fps=info.fps)
    np.testing.assert_array_equal(got.frames, expected.frames)
    np.testing.assert_array_equal(got.timestamps, expected.timestamps)
