"""Selective decoding: Ward segmentation, the online trigger, uniform counts, matching, savings."""

import numpy as np
import pytest

from vljepa.streaming import (
    OnlineTriggerConfig,
    Stream,
    SweepRow,
    match_nearest_in_time,
    online_points,
    run_trigger,
    savings_factor,
    segment_bounds,
    uniform_count,
    uniform_points,
    ward_points,
    ward_segments,
)
from vljepa.streaming.selective import cider, rate_to_reach, sweep


def piecewise_stream(boundaries=(0, 12, 20, 37, 50), dim=16, noise=0.05, seed=0):
    """Windows whose embedding jumps at known indices (boundaries[1:-1])."""
    rng = np.random.default_rng(seed)
    parts = []
    for a, b in zip(boundaries, boundaries[1:]):
        centre = rng.normal(size=dim)
        parts.append(centre + noise * rng.normal(size=(b - a, dim)))
    return np.concatenate(parts)


@pytest.mark.parametrize("n_segments", [1, 2, 3, 7, 50])
def test_ward_segments_are_contiguous_and_counted(n_segments):
    emb = np.random.default_rng(1).normal(size=(50, 8))
    labels = ward_segments(emb, n_segments)
    assert labels.shape == (50,)
    bounds = segment_bounds(labels)
    assert len(bounds) == len(set(labels.tolist())) == n_segments  # every label is one run
    assert labels[0] == 0 and np.all(np.diff(labels) >= 0)  # numbered in temporal order
    assert bounds[0][0] == 0 and bounds[-1][1] == 50


def test_ward_recovers_known_change_points():
    emb = piecewise_stream()
    labels = ward_segments(emb, 4)
    assert [a for a, _ in segment_bounds(labels)] == [0, 12, 20, 37]


def test_online_trigger_finds_changes_with_bounded_latency():
    emb = piecewise_stream()
    cfg = OnlineTriggerConfig(threshold=0.3, hysteresis=2, min_len=2, max_len=100)
    events = run_trigger(emb, cfg)
    starts = [e.segment_start for e in events]
    assert starts == [0, 12, 20, 37]
    assert all(e.latency <= max(cfg.hysteresis, cfg.min_len) for e in events)
    # Causal: the decision for the segment starting at 12 is taken before window 20 is seen.
    assert events[1].index < 20


def test_online_trigger_ignores_a_single_outlier():
    emb = piecewise_stream(boundaries=(0, 30))
    emb[15] = -emb[15] * 10  # one glitch window
    events = run_trigger(emb, OnlineTriggerConfig(threshold=0.3, hysteresis=2, min_len=2))
    assert [e.segment_start for e in events] == [0]


def test_uniform_decode_count_is_exact():
    assert uniform_count(10.0, 1.0) == 10
    assert uniform_count(10.0, 2.0) == 20
    assert uniform_count(10.0, 0.35) == 3
    assert uniform_count(10.0, 0.01) == 1
    assert uniform_count(9.999999999, 1.0) == 10  # float noise does not drop a decode
    times = np.arange(0.25, 10.0, 0.5)  # windows every 0.5 s covering 10 s
    stream = Stream("s", times, np.zeros((len(times), 4)), [(5.0, "x")], duration=10.0)
    points = uniform_points(stream, 1.0)
    assert len(points) == 10
    assert [round(p.time, 6) for p in points] == [k + 0.5 for k in range(10)]


def test_nearest_in_time_matching_hand_made():
    truth = [0.0, 2.4, 2.6, 9.0]
    decoded = [1.0, 3.0, 7.0]
    assert match_nearest_in_time(truth, decoded) == [0, 1, 1, 2]
    assert match_nearest_in_time([2.0], [1.0, 3.0]) == [0]  # tie goes to the earlier output


def test_ward_points_pool_segment_means_at_midpoints():
    emb = piecewise_stream(boundaries=(0, 4, 10), noise=0.0)
    times = np.arange(10) + 0.5
    stream = Stream("s", times, emb, [], duration=10.0)
    points = ward_points(stream, 2)
    assert [p.time for p in points] == [2.0, 7.0]
    np.testing.assert_allclose(points[1].embedding, emb[4:].mean(0))


def test_savings_factor_interpolates_on_the_rate_axis():
    rows = [SweepRow("uniform", 1.0, 1.0, 30.0, 100), SweepRow("uniform", 0.5, 0.5, 20.0, 50),
            SweepRow("ward", 1.0, 1.0, 40.0, 100), SweepRow("ward", 0.5, 0.5, 35.0, 50),
            SweepRow("ward", 0.2, 0.2, 25.0, 20)]
    # Ward reaches 29.7 (30 × 0.99) between 0.2 Hz (25) and 0.5 Hz (35): at 0.2 + 4.7/10 × 0.3 = 0.341 Hz.
    assert rate_to_reach(rows, "ward", 29.7) == pytest.approx(0.341)
    assert savings_factor(rows, "ward") == pytest.approx(1.0 / 0.341)
    assert savings_factor(rows, "uniform") == pytest.approx(1.0 / (0.5 + 9.7 / 10 * 0.5))


def test_cider_prefers_the_right_caption():
    refs = ["a small red circle moves left", "two large blue squares move up", "a white cross grows"]
    right = cider(refs, refs)
    wrong = cider(refs, [refs[1], refs[2], refs[0]])
    assert right > 1.0 > wrong


def test_sweep_on_a_stream_with_a_lookup_decoder():
    """With a decoder that names the nearest segment centre, Ward needs fewer decodes than uniform."""
    rng = np.random.default_rng(3)
    boundaries = (0, 40, 44, 100, 104, 160)  # long and short events, windows every 0.5 s
    captions_text = ["a red circle moves left", "a blue square grows", "two green crosses move up",
                     "a white diamond shrinks", "three yellow triangles move down"]
    centres = rng.normal(size=(5, 12))
    emb = np.concatenate([centres[i] + 0.02 * rng.normal(size=(b - a, 12))
                          for i, (a, b) in enumerate(zip(boundaries, boundaries[1:]))])
    times = np.arange(len(emb)) * 0.5 + 0.25
    truth = [((a + b) / 4.0, captions_text[i]) for i, (a, b) in enumerate(zip(boundaries, boundaries[1:]))]
    stream = Stream("s", times, emb, truth, duration=len(emb) * 0.5)

    def decode(batch):
        nearest = ((batch[:, None, :] - centres[None]) ** 2).sum(-1).argmin(1)
        return [captions_text[i] for i in nearest]

    rows = sweep([stream], decode, rates=[1.0, 0.5, 0.25, 0.1, 0.0625], thresholds=[0.3])
    ward_at = {r.setting: r.cider for r in rows if r.method == "ward"}
    uniform_at = {r.setting: r.cider for r in rows if r.method == "uniform"}
    assert ward_at[0.0625] > uniform_at[0.0625]  # 5 decodes: Ward finds all 5 events, uniform cannot
    online = [r for r in rows if r.method == "online"][0]
    assert online.n_decodes == 5 and online.mean_latency_windows is not None
    points, latencies = online_points(stream, OnlineTriggerConfig(threshold=0.3))
    assert len(points) == 5 and max(latencies) <= 2


def test_embed_stream_reuses_per_frame_tokens_exactly(tiny_cfg):
    """Windows built from per-frame tokens equal encoding each window at once."""
    import torch

    from vljepa.encoders import build_x_encoder
    from vljepa.model import build_model
    from vljepa.streaming.embed import embed_stream

    torch.manual_seed(0)
    encoder = build_x_encoder(tiny_cfg.x_encoder)
    model = build_model(tiny_cfg)
    rng = np.random.default_rng(0)
    frames = [(t * 0.5, rng.integers(0, 255, size=(32, 32, 3), dtype=np.uint8)) for t in range(7)]
    out = list(embed_stream(iter(frames), encoder, model, window_frames=2, stride_frames=1))
    assert len(out) == 6 and [w.start for w in out] == [0.0, 0.5, 1.0, 1.5, 2.0, 2.5]
    from vljepa.streaming.embed import _normalise

    window = np.stack([frames[3][1], frames[4][1]])
    tokens = encoder.encode(_normalise(window, encoder.spec.mean, encoder.spec.std)[None])
    with torch.no_grad():
        expected = model.predict(tokens)[0]
    np.testing.assert_allclose(out[3].embedding, (expected / expected.norm()).numpy(), rtol=1e-4, atol=1e-5)
    with pytest.warns(UserWarning, match="trained on 2-frame clips"):  # tiny trains on 2 frames
        strided = list(embed_stream(iter(frames), encoder, model, window_frames=3, stride_frames=2,
                                    allow_frame_mismatch=True))
    assert [w.start for w in strided] == [0.0, 1.0, 2.0]


def random_frames(count: int, size: int = 32, seed: int = 0) -> list[tuple[float, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [(t * 0.5, rng.integers(0, 255, size=(size, size, 3), dtype=np.uint8)) for t in range(count)]


@pytest.mark.parametrize("num_frames", [2, 3])
def test_embed_stream_window_defaults_to_the_models_frame_count(tiny_cfg, num_frames):
    """With no window given, each window is one clip of the model's x_encoder.num_frames frames."""
    import torch

    from vljepa.config import replace
    from vljepa.encoders import build_x_encoder
    from vljepa.model import build_model
    from vljepa.streaming.embed import _normalise, embed_stream

    cfg = replace(tiny_cfg, **{"x_encoder.num_frames": num_frames})
    torch.manual_seed(0)
    encoder, model = build_x_encoder(cfg.x_encoder), build_model(cfg)
    frames = random_frames(7)
    out = list(embed_stream(iter(frames), encoder, model))  # stride: 1 frame by default
    assert len(out) == 7 - num_frames + 1
    assert all(w.end - w.start == pytest.approx(0.5 * (num_frames - 1)) for w in out)
    # The first window is exactly the model's input for the first num_frames frames.
    clip = np.stack([f for _, f in frames[:num_frames]])
    with torch.no_grad():
        expected = model.predict(encoder.encode(_normalise(clip, encoder.spec.mean, encoder.spec.std)[None]))[0]
    np.testing.assert_allclose(out[0].embedding, (expected / expected.norm()).numpy(), rtol=1e-4, atol=1e-5)


def test_a_window_that_is_not_the_models_frame_count_is_an_error(tiny_cfg, tiny_model):
    from vljepa.encoders import build_x_encoder
    from vljepa.streaming.embed import WindowMismatchError, embed_stream

    encoder = build_x_encoder(tiny_cfg.x_encoder)
    unread = (pytest.fail("a frame was read") for _ in range(1))  # the check comes before any frame
    with pytest.raises(WindowMismatchError) as raised:
        embed_stream(unread, encoder, tiny_model, window_frames=4)
    message = str(raised.value)
    assert "window of 4 frames" in message and "clips of 2 frames" in message and "x_encoder.num_frames=2" in message
    assert "leave the window unset" in message and "allow_frame_mismatch=True" in message
    assert "--allow-frame-mismatch" in message
    # Passing the model's own count explicitly is fine.
    assert len(list(embed_stream(iter(random_frames(3)), encoder, tiny_model, window_frames=2))) == 2


def test_tubelet_windows_follow_the_paper_model():
    """V-JEPA 2 at paper scale: 16-frame windows; an opted-in odd window is filled like a clip."""
    from vljepa.config import get_preset
    from vljepa.streaming.embed import FrameMismatchWarning, WindowMismatchError, stream_window

    x_encoder = get_preset("paper").x_encoder
    assert (x_encoder.name, x_encoder.num_frames, x_encoder.tubelet_size) == ("vjepa2", 16, 2)
    assert stream_window(x_encoder) == 16 and stream_window(x_encoder, 16) == 16
    with pytest.raises(WindowMismatchError, match="window of 4 frames.*clips of 16 frames"):
        stream_window(x_encoder, 4)  # the old fixed window
    with pytest.warns(FrameMismatchWarning, match="tubelets of 2 frames.*repeated to fill 8 frames"):
        assert stream_window(x_encoder, 7, allow_frame_mismatch=True) == 7
    with pytest.raises(ValueError, match=">= 1"):
        stream_window(x_encoder, 0, allow_frame_mismatch=True)


@pytest.fixture
def tiny_checkpoint(tiny_model, tmp_path):
    from vljepa.checkpoint import save_checkpoint

    return save_checkpoint(tiny_model, tmp_path / "model")


BANK = ["a red square", "a blue circle", "a green cross", "a white diamond"]


# A 3 s clip sampled at 2 fps: 6 frames at 0, 0.5, ..., 2.5 s, a stream of 3.0 s, so uniform 1 Hz decodes 3 times
# whatever the window. Windows (every frame) are centred at 0.25..2.25 s (2 frames: 5 windows) or 0.5..2.0 s
# (3 frames: 4 windows); the 1 s intervals start half a stride (0.25 s) before the first centre, each decode pools
# the windows centred inside its interval, and one that holds none (the last with 3 frames) takes the window
# nearest its centre (2.75 s: the last, at 2.0 s).
@pytest.mark.parametrize(("window", "allow", "shown", "intervals", "pooled"), [
    (None, False, "2 frames (1.0 s)", [(0.0, 1.0), (1.0, 2.0), (2.0, 3.0)], [[0, 1], [2, 3], [4]]),
    (3, True, "3 frames (1.5 s)", [(0.25, 1.25), (1.25, 2.25), (2.25, 3.25)], [[0, 1], [2, 3], [3]]),
])
def test_stream_flow_windows_follow_the_checkpoint(tiny_checkpoint, tmp_path, monkeypatch, window, allow, shown,
                                                   intervals, pooled):
    """``vljepa stream`` without --window feeds the checkpoint's frame count (tiny: 2 frames = 1 s at 2 fps);
    an accepted mismatch is warned about once; each caption is the bank's nearest to its pooled windows."""
    import warnings

    import torch
    import torch.nn.functional as F

    from flows.resolve import RunConfig
    from flows.stream import StreamConfig, stream_video
    from preprocessing.decode import frames_to_tensor
    from preprocessing.sampling import sample_fps
    from tests.media import make_h264
    from vljepa.checkpoint import load_checkpoint
    from vljepa.encoders import build_x_encoder
    from vljepa.evaluate import text_embeddings
    from vljepa.streaming.embed import FrameMismatchWarning

    monkeypatch.setattr("flows.loaders.caption_bank", lambda db: list(BANK))
    video = make_h264(tmp_path / "clip.mp4", 3)
    lines: list[str] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = stream_video(StreamConfig(video=str(video), method="uniform", rate=1.0, window=window,
                                           allow_frame_mismatch=allow, checkpoint=str(tiny_checkpoint),
                                           decoder="retrieval",
                                           run=RunConfig(state_dir=str(tmp_path / "state"))), emit=lines.append)
    assert f"windows of {shown} every 1 (0.50 s)" in lines[0]
    assert sum(issubclass(w.category, FrameMismatchWarning) for w in caught) == (1 if allow else 0)
    assert (result.duration, result.decodes, result.uniform_1hz_decodes) == (3.0, 3, 3)
    assert [bound for start, end, _ in result.captions for bound in (start, end)] == pytest.approx(
        [bound for interval in intervals for bound in interval])

    # The same captions by hand: each window encoded whole, predicted, pooled, matched by cosine against the bank.
    model = load_checkpoint(tiny_checkpoint)
    encoder = build_x_encoder(model.cfg.x_encoder)
    clip = sample_fps(video, fps=2.0, size=encoder.spec.image_size)
    assert clip.timestamps.tolist() == [0.0, 0.5, 1.0, 1.5, 2.0, 2.5]
    pixels = frames_to_tensor(clip.frames, encoder.spec.mean, encoder.spec.std)  # (6, 3, H, W)
    span = window or model.cfg.x_encoder.num_frames
    with torch.no_grad():
        windows = F.normalize(torch.cat([model.predict(encoder.encode(pixels[i : i + span][None]))
                                         for i in range(len(pixels) - span + 1)]), dim=-1)  # (W, D)
    points = F.normalize(torch.stack([windows[group].mean(0) for group in pooled]), dim=-1)  # (3, D)
    captions = sorted(BANK)
    similarity = points @ text_embeddings(model, captions).T  # (3, len(BANK))
    expected = [captions[i] for i in similarity.argmax(1).tolist()]
    assert [text for _, _, text in result.captions] == expected


def test_stream_cli_rejects_a_window_the_model_was_not_trained_on(tiny_checkpoint, tmp_path, capsys):
    from flows.cli import main

    with pytest.raises(SystemExit) as exited:  # before the (missing) video is opened
        main(["stream", str(tmp_path / "missing.mp4"), "--checkpoint", str(tiny_checkpoint), "--window", "4",
              "--state-dir", str(tmp_path / "state")])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "vljepa stream: error: a streaming window of 4 frames" in err and "x_encoder.num_frames=2" in err


def test_stream_cli_needs_a_source_or_the_benchmark(tmp_path, capsys):
    from flows.cli import main

    for argv, message in ((["stream"], "give a SOURCE"), (["stream", "clip.mp4", "--benchmark"], "drop SOURCE")):
        with pytest.raises(SystemExit) as exited:
            main([*argv, "--state-dir", str(tmp_path)])
        assert exited.value.code == 2 and message in capsys.readouterr().err


def test_the_annotation_oracle_decodes_once_per_caption_over_the_stretch_halfway_to_its_neighbours():
    from vljepa.streaming import Stream, annotation_points

    times = np.arange(10) * 0.5 + 0.25  # windows at 2 Hz over 5 s
    embeddings = np.arange(10, dtype=np.float32)[:, None] * np.ones((1, 3), dtype=np.float32)
    stream = Stream("s", times, embeddings, [(1.0, "a"), (3.0, "b"), (4.5, "c")], duration=5.0)
    exact = annotation_points(stream, pool=False)
    assert [p.time for p in exact] == [1.0, 3.0, 4.5]
    assert [(p.start, p.end) for p in exact] == [(0.0, 2.0), (2.0, 3.75), (3.75, 5.0)]
    assert [float(p.embedding[0]) for p in exact] == [1.0, 5.0, 8.0]  # the window nearest each time (ties: earlier)
    pooled = annotation_points(stream, pool=True)
    assert [float(p.embedding[0]) for p in pooled] == [1.5, 5.0, 8.0]  # the means of windows 0-3, 4-6, 7-9
