"""Selective decoding on the paper's protocol (``flows.stream_bench``): the savings factor and
its bootstrap on hand-made curves, the decoder memo, and ``vljepa stream --benchmark`` end to end on
the tiny stream benchmark."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from flows.stream_bench import MemoDecoder, StreamBenchConfig, online, savings, summarise


def _curve(scores_by_rate: dict[float, list[float]], decodes_by_rate: dict[float, list[int]], n_pairs: int = 3):
    """rate -> (per-stream pair scores, per-stream decode counts); every stream's pairs score alike."""
    return {rate: ([np.full(n_pairs, s) for s in scores], decodes_by_rate[rate]) for rate, scores in scores_by_rate.items()}


def test_savings_is_uniform_1hz_decodes_over_decodes_at_the_lowest_rate_within_tolerance():
    reference = _curve({1.0: [1.0, 1.0], 0.5: [0.8, 0.8]}, {1.0: [100, 100], 0.5: [50, 50]})
    ward = _curve({1.0: [1.0, 1.0], 0.5: [0.995, 0.995], 0.25: [0.98, 0.98]}, {1.0: [100, 100], 0.5: [50, 50],
                                                                              0.25: [25, 25]})
    every = np.arange(2)
    assert savings(ward, reference, every, 0.01) == pytest.approx(200 / 100)   # 0.5 Hz: 0.995 >= 0.99; 0.25: not
    assert savings(ward, reference, every, 0.03) == pytest.approx(200 / 50)    # 0.25 Hz is within 3 %
    worse = _curve({1.0: [0.5, 0.5]}, {1.0: [100, 100]})
    assert savings(worse, reference, every, 0.01) is None
    # Resampling takes the chosen streams' decodes and pairs: stream 0 twice.
    mixed = _curve({1.0: [1.0, 0.0], 0.5: [1.0, 0.0]}, {1.0: [100, 100], 0.5: [10, 60]})
    assert savings(mixed, reference, np.array([0, 0]), 0.01) == pytest.approx(200 / 20)


def test_summarise_gives_rows_and_a_degenerate_interval_when_every_stream_agrees():
    class S:
        duration = 100.0

    streams = [S(), S(), S(), S()]
    flat = {1.0: [1.0] * 4, 0.25: [1.0] * 4}
    counts = {1.0: [100] * 4, 0.25: [25] * 4}
    curves = {name: _curve(flat, counts) for name in ("uniform/pooled", "uniform/exact", "ward/pooled", "ward/exact")}
    out = summarise(curves, streams, StreamBenchConfig(bootstrap=50))
    assert out["savings"]["ward/pooled"] == {"savings": 4.0, "ci95": [4.0, 4.0], "bootstrap_reached": 1.0}
    row = next(r for r in out["rows"] if r["curve"] == "ward/exact" and r["rate"] == 0.25)
    assert row == {"curve": "ward/exact", "rate": 0.25, "decodes_per_s": 0.25, "cider": 1.0, "decodes": 100}


def test_memo_decoder_decodes_each_distinct_embedding_once():
    class Fake:
        calls: list[int] = []

        def generate(self, batch, num_beams=1):
            self.calls.append(len(batch))
            return [f"t{float(row[0]):g}" for row in batch]

    from flows.selective import YDecoderCallable

    fake = Fake()
    memo = MemoDecoder(YDecoderCallable(fake, batch_size=2))
    emb = np.array([[1.0, 0.0], [2.0, 0.0], [1.0, 0.0], [3.0, 0.0]], dtype=np.float32)
    assert memo(emb) == ["t1", "t2", "t1", "t3"] and memo.decoded == 3 and fake.calls == [2, 1]
    assert memo(emb[:2]) == ["t1", "t2"] and memo.decoded == 3  # nothing new to decode


def _spiky_stream(name: str):
    """Four 5 s segments (2 Hz windows), each one direction with one outlier window in its middle."""
    from vljepa.streaming import Stream

    words = ["alpha beta", "gamma delta", "epsilon zeta", "eta theta"]
    embeddings = np.zeros((40, 5), dtype=np.float32)
    for k in range(4):
        embeddings[10 * k : 10 * k + 10, k] = 1.0
        embeddings[10 * k + 5] = np.eye(5, dtype=np.float32)[4]  # the outlier: one window of noise
    return Stream(name, np.arange(40) * 0.5 + 0.25, embeddings, [(5.0 * k + 2.5, words[k]) for k in range(4)],
                  duration=20.0)


def test_the_online_trigger_is_tuned_on_val_over_threshold_hysteresis_and_min_len():
    words = ["alpha beta", "gamma delta", "epsilon zeta", "eta theta", "noise noise"]

    def decode(embeddings):
        return [words[int(np.argmax(e))] for e in np.asarray(embeddings)]

    cfg = StreamBenchConfig(thresholds=(0.5,), triggers=((1, 1), (3, 3)))
    val, test = [_spiky_stream("v0"), _spiky_stream("v1")], [_spiky_stream("t0")]
    out = online(val, test, decode, cfg, val_reference=0.0)
    assert [(r["hysteresis"], r["min_len"]) for r in out["val"]] == [(1, 1), (3, 3)]
    jumpy, steady = out["val"]
    assert jumpy["decodes"] > steady["decodes"] == 8  # (1, 1) decodes every outlier; (3, 3) once per segment
    assert (out["chosen_hysteresis"], out["chosen_min_len"]) == (3, 3) and out["test"]["decodes"] == 4
    assert (out["test"]["hysteresis"], out["test"]["min_len"]) == (3, 3)
    assert out["latency_s"]["max"] == pytest.approx(1.0)  # max(hysteresis, min_len) - 1 = 2 windows of 0.5 s


@pytest.mark.slow  # ~70 s alone (generation, training, evaluation, sweeps), twice
@pytest.mark.timeout(900)
def test_stream_benchmark_end_to_end_on_the_tiny_streams(tmp_path):
    args = [sys.executable, "-m", "flows.cli", "stream", "--benchmark", "--streams", "tiny", "--preset", "tiny",
            "--launcher", "inline", "--bootstrap", "50", "--state-dir", str(tmp_path), "--json"]
    first = subprocess.run(args, capture_output=True, text=True, timeout=900)
    assert first.returncode == 0, first.stderr[-3000:]
    result = json.loads(first.stdout)
    saved = json.loads((tmp_path / "selective" / f"tiny-{result['model']['key']}" / "results.json").read_text())
    assert saved["protocol"]["n_test"] == 2 and saved["protocol"]["n_val"] == 1
    assert {(r["curve"], r["rate"]) for r in saved["rows"]} == {
        (c, r) for c in ("uniform/pooled", "uniform/exact", "ward/pooled", "ward/exact") for r in saved["protocol"]["rates"]}
    # Uniform decodes: one per full 1/rate interval of each test stream.
    durations = [json.loads(line)["duration"] for line in
                 (tmp_path / "data").glob("streams-tiny-*/streams.jsonl").__next__().read_text().splitlines()
                 if json.loads(line)["split"] == "test"]
    row = next(r for r in saved["rows"] if r["curve"] == "uniform/pooled" and r["rate"] == 1.0)
    assert row["decodes"] == sum(int(d) for d in durations)
    assert saved["online"]["chosen_threshold"] in [r["threshold"] for r in saved["online"]["val"]]
    assert saved["model"]["registered_model"] == "vljepa-streams" and saved["model"]["dataset"].startswith("user-clips-")
    assert (tmp_path / "selective" / f"tiny-{result['model']['key']}" / "pareto.png").stat().st_size > 10_000
    again = subprocess.run(args, capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stderr[-3000:]
    repeat = json.loads(again.stdout)
    assert repeat["savings"] == result["savings"] and repeat["model"]["key"] == result["model"]["key"]
    assert "reused" in again.stderr  # the content-addressed stages were not run again
