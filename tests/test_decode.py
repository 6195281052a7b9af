"""Decoding, frame sampling and resizing of preprocessing.decode on tiny ffmpeg-made clips."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from preprocessing.decode import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    DecodeError,
    decode_frames,
    frames_to_tensor,
    probe_video,
    resize_short_edge,
    uniform_timestamps,
)


def ffmpeg_make(out: Path, lavfi: str, *args: str) -> Path:
    """Render a lavfi source graph into `out` (all clips here are tiny and take ~0.1 s)."""
    subprocess.run(
        ["ffmpeg", "-nostdin", "-v", "error", "-y", "-f", "lavfi", "-i", lavfi, *args, str(out)],
        check=True,
    )
    return out


def make_h264(out: Path, lavfi: str, seconds: float) -> Path:
    return ffmpeg_make(out, lavfi, "-t", str(seconds), "-c:v", "libx264", "-pix_fmt", "yuv420p")


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("media")
    files = {
        "testsrc": make_h264(root / "testsrc.mp4", "testsrc=size=192x144:rate=10", 4),
        # Luma rises 5 per frame, so a frame's brightness tells which frame it is.
        "ramp": make_h264(root / "ramp.mp4", "color=black:size=64x48:rate=10,geq=lum='16+N*5':cb=128:cr=128", 4),
        # Left 20 % red, right 20 % blue, green between (x in pixels of the 192-wide frame).
        "bands": make_h264(
            root / "bands.mp4",
            "color=green:size=192x144:rate=10,"
            "drawbox=x=0:y=0:w=38:h=144:color=red:t=fill,"
            "drawbox=x=154:y=0:w=38:h=144:color=blue:t=fill",
            1,
        ),
        "portrait": make_h264(root / "portrait.mp4", "testsrc=size=144x192:rate=10", 1),
        "three_frames": make_h264(root / "three.mp4", "testsrc=size=64x48:rate=10", 0.3),
        "image": ffmpeg_make(root / "still.png", "color=orange:size=80x60", "-frames:v", "1"),
        "audio": ffmpeg_make(root / "tone.m4a", "sine=frequency=440:duration=1"),
    }
    (root / "empty.mp4").write_bytes(b"")
    (root / "text.mp4").write_text("this is not a video\n")
    files["empty"] = root / "empty.mp4"
    files["text"] = root / "text.mp4"
    files["missing"] = root / "missing.mp4"
    return files


def test_uniform_timestamps_are_segment_centres():
    np.testing.assert_allclose(uniform_timestamps(4.0, 4), [0.5, 1.5, 2.5, 3.5])
    np.testing.assert_allclose(uniform_timestamps(1.0, 1), [0.5])
    with pytest.raises(ValueError):
        uniform_timestamps(1.0, 0)
    with pytest.raises(ValueError):
        uniform_timestamps(-1.0, 4)


def test_probe_video_reads_stream_properties(media):
    info = probe_video(media["testsrc"])
    assert (info.width, info.height, info.codec) == (192, 144, "h264")
    assert info.fps == pytest.approx(10.0)
    assert info.duration == pytest.approx(4.0, abs=0.05)
    assert info.n_frames == 40
    assert not info.is_image
    image = probe_video(media["image"])
    assert image.is_image and (image.width, image.height, image.n_frames) == (80, 60, 1)


def test_decode_shapes_and_dtypes(media):
    clip = decode_frames(media["testsrc"], num_frames=8, size=64)
    assert clip.frames.shape == (8, 64, 64, 3) and clip.frames.dtype == np.uint8
    assert clip.timestamps.shape == (8,) and clip.timestamps.dtype == np.float64
    assert clip.n_decoded == 40


def test_timestamps_are_monotonic_within_duration_and_match_the_frames(media):
    clip = decode_frames(media["ramp"], num_frames=8, size=32)
    assert np.all(np.diff(clip.timestamps) > 0)
    assert clip.timestamps[0] >= 0 and clip.timestamps[-1] <= 4.0
    # Each is the frame (at 10 fps) nearest the centre of its 0.5 s segment.
    targets = uniform_timestamps(4.0, 8)
    assert np.all(np.abs(clip.timestamps - targets) <= 0.05 + 1e-9)
    # The pixels are those of the frame whose time is reported: luma 16 + 5 N, N = 10 t,
    # which is (5 N) * 255 / 219 in full-range RGB.
    frame_index = np.round(clip.timestamps * 10)
    expected_grey = frame_index * 5 * 255 / 219
    observed_grey = clip.frames.reshape(8, -1).mean(axis=1)
    np.testing.assert_allclose(observed_grey, expected_grey, atol=2.5)


def test_short_edge_scale_then_centre_crop_cuts_the_side_bands(media):
    size = 112
    frame = decode_frames(media["bands"], num_frames=1, size=size).frames[0].astype(int)  # (112, 112, 3)
    row = frame[size // 2]  # (112, 3)
    red = (row[:, 0] > 150) & (row[:, 1] < 100) & (row[:, 2] < 100)
    blue = (row[:, 2] > 150) & (row[:, 0] < 100) & (row[:, 1] < 100)
    green = (row[:, 1] > 80) & (row[:, 0] < 60) & (row[:, 2] < 60)
    # Short edge 144 -> 128 makes the frame 171 wide; the centre 112 columns start at 30.
    # Red (x < 38) ends at 38 * 171 / 192 - 30 = 3.8 and blue starts at 107.2: a squashed
    # (uncropped) resize would keep 22 columns of each.
    assert resize_short_edge(size) == 128
    assert red[:3].all() and not red[5:].any()
    assert blue[109:].all() and not blue[:107].any()
    assert green[6:106].all()
    assert 3 <= red.sum() <= 5 and 3 <= blue.sum() <= 5


def test_portrait_video_scales_its_width(media):
    clip = decode_frames(media["portrait"], num_frames=2, size=48)
    assert clip.frames.shape == (2, 48, 48, 3)


def test_decoded_frame_matches_an_independent_resize(media):
    """ffmpeg's scale+crop against torch's antialiased bilinear resize of the full frame."""
    import ffmpeg

    size = 112
    clip = decode_frames(media["testsrc"], num_frames=4, size=size)
    raw, _ = (
        ffmpeg.input(str(media["testsrc"]))
        .output("pipe:", format="rawvideo", pix_fmt="rgb24")
        .run(capture_stdout=True, quiet=True)
    )
    full = np.frombuffer(raw, np.uint8).reshape(-1, 144, 192, 3)  # (40, 144, 192, 3)
    picked = torch.from_numpy(full[np.round(clip.timestamps * 10).astype(int)]).permute(0, 3, 1, 2)
    height, width = 128, round(192 * 128 / 144)  # short edge 144 -> 128
    resized = torch.nn.functional.interpolate(
        picked.float(), size=(height, width), mode="bilinear", antialias=True, align_corners=False
    )
    top, left = (height - size) // 2, int(np.floor((width - size) / 2 + 0.5))
    reference = resized[:, :, top : top + size, left : left + size].permute(0, 2, 3, 1).round().clamp(0, 255)
    difference = np.abs(reference.numpy() - clip.frames.astype(np.float64))
    # Measured 2.05 mean: bilinear filters differ slightly at testsrc's sharp text edges.
    assert difference.mean() < 3.0


def test_image_becomes_identical_frames_at_time_zero(media):
    clip = decode_frames(media["image"], num_frames=6, size=32)
    assert clip.frames.shape == (6, 32, 32, 3)
    assert np.array_equal(clip.frames, np.repeat(clip.frames[:1], 6, axis=0))
    assert np.all(clip.timestamps == 0.0)
    orange = clip.frames[0].reshape(-1, 3).mean(axis=0)  # ffmpeg's orange is (255, 165, 0)
    np.testing.assert_allclose(orange, [255, 165, 0], atol=4)


def test_short_clip_repeats_nearest_frames(media):
    clip = decode_frames(media["three_frames"], num_frames=8, size=32)
    assert clip.n_decoded == 3
    assert clip.frames.shape == (8, 32, 32, 3)
    assert np.all(np.diff(clip.timestamps) >= 0)
    assert len(np.unique(clip.timestamps)) == 3
    np.testing.assert_allclose(np.unique(clip.timestamps), [0.0, 0.1, 0.2], atol=1e-6)


@pytest.mark.parametrize("name", ["empty", "text", "missing", "audio"])
def test_bad_files_raise_decode_error(media, name):
    path = media[name]
    with pytest.raises(DecodeError) as probe_error:
        probe_video(path)
    with pytest.raises(DecodeError) as decode_error:
        decode_frames(path, num_frames=4, size=32)
    for err in (probe_error.value, decode_error.value):
        assert isinstance(err, RuntimeError)
        assert err.path == str(path) and str(path) in str(err)


def test_frames_to_tensor_scales_and_normalises():
    frames = np.zeros((2, 4, 5, 3), dtype=np.uint8)
    frames[:, :, :, 0] = 255  # pure red
    frames[1, 0, 0] = (0, 128, 255)
    tensor = frames_to_tensor(frames, IMAGENET_MEAN, IMAGENET_STD)
    assert tensor.shape == (2, 3, 4, 5) and tensor.dtype == torch.float32
    mean, std = np.array(IMAGENET_MEAN), np.array(IMAGENET_STD)
    np.testing.assert_allclose(tensor[0, :, 2, 3].numpy(), (np.array([1.0, 0, 0]) - mean) / std, rtol=1e-6)
    np.testing.assert_allclose(tensor[1, :, 0, 0].numpy(), (np.array([0, 128, 255]) / 255 - mean) / std, rtol=1e-6)
    identity = frames_to_tensor(frames, (0, 0, 0), (1, 1, 1))
    assert identity.min() >= 0 and identity.max() == 1.0
    with pytest.raises(ValueError):
        frames_to_tensor(frames.astype(np.float32), IMAGENET_MEAN, IMAGENET_STD)
