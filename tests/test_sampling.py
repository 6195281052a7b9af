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


@pytest.fixture(scope="module")
def mixed(tmp_path_factory, clips):
    """Files of every kind the cache meets, good and bad, for sample_clips against sample_clip."""
    import subprocess

    from tests.media import VTEST

    root = tmp_path_factory.mktemp("mixed")
    rotated = root / "rotated.mp4"  # a phone clip: display matrix, decoded upright by ffmpeg
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-i", str(make_h264(root / "upright.mp4", 2.0, "64x48")),
                    "-c", "copy", "-metadata:s:v:0", "rotate=90", str(rotated)], check=True)
    corrupt = root / "corrupt.mp4"
    corrupt.write_bytes(b"not a video at all " * 64)
    files = [clips["long"], clips["short"], clips["vfr"], clips["image"], rotated,
             make_h264(root / "wide.mp4", 2.0, "96x40"), ffmpeg_make(root / "j.jpg", "testsrc=size=40x30", "-frames:v", "1"),
             corrupt, root / "missing.mp4"]
    return files + ([VTEST] if VTEST.is_file() else [])


@pytest.mark.parametrize("num_frames, allow_repeat", [(4, False), (16, False), (16, True)])
def test_sample_clips_equals_sample_clip_file_by_file(mixed, monkeypatch, num_frames, allow_repeat):
    """Several files through one ffmpeg process give each file's samples, or its error, exactly."""
    import subprocess

    from preprocessing import decode_many
    from preprocessing.decode import probe_video
    from preprocessing.sampling import sample_clips

    def known(path):  # duration / fps as the manifest holds them (None where ffprobe fails)
        try:
            info = probe_video(path)
        except DecodeError:
            return None, None
        return (info.duration, info.fps) if not info.is_image else (None, None)

    items = [(path, *known(path)) for path in mixed]
    cfg = SamplingConfig(num_frames=num_frames, allow_repeat=allow_repeat)
    starts = []
    real_run = subprocess.run
    monkeypatch.setattr(decode_many.subprocess, "run", lambda args, **kw: starts.append(args) or real_run(args, **kw))
    many = sample_clips(items, cfg, size=24, repeat_to=num_frames)
    assert starts and len(starts) < len(mixed) / 2  # batched for real: a few processes, not one a file
    assert starts[0].count("-i") > 2
    for (path, duration, fps), got in zip(items, many):
        try:
            alone = sample_clip(path, cfg, size=24, repeat_to=num_frames, duration=duration, fps=fps)
        except DecodeError as err:
            assert isinstance(got, DecodeError) and str(got) == str(err), path
            continue
        assert not isinstance(got, Exception), (path, got)
        assert len(got) == len(alone) == 1
        np.testing.assert_array_equal(got[0].frames, alone[0].frames, err_msg=str(path))
        np.testing.assert_array_equal(got[0].timestamps, alone[0].timestamps, err_msg=str(path))
    kinds = [type(g).__name__ for g in many]
    assert kinds.count("DecodeError") >= 2  # the corrupt and the missing file (and short clips at 16 frames)
