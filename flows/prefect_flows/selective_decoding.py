"""Flow ``selective-decoding``: deployment ``sweep``, the decode-rate vs CIDEr sweep for a registered
model on the corpus's multi-event test streams, logged into that model's MLflow training run
(``flows.selective``); deployment ``benchmark`` (``benchmark=True``), the paper's protocol on the
stream benchmark: generate it, train a model on it, sweep, tune the online trigger on val
(``flows.stream_bench``)."""

from __future__ import annotations

from typing import Literal

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from flows.resolve import Launcher, Preset, RunConfig
from flows.selective import format_table, sweep_registered_model


@flow(name="selective-decoding", log_prints=True)
def selective_decoding(registered_model: str = "vljepa", alias: str = "candidate", state_dir: str | None = None,
                       max_clips: int | None = None, split: str = "test", benchmark: bool = False,
                       streams: Literal["small", "tiny"] = "small",
                       preset: Preset = "small",
                       launcher: Launcher = "local", bootstrap: int = 2000) -> dict:
    """Uniform vs Ward vs online selective decoding: on the corpus's multi-event test streams for a
    registered model, or (``benchmark``) on the stream benchmark with a model trained on it."""
    if benchmark:
        from flows.stream_bench import StreamBenchConfig, run_stream_bench
        from flows.stream_bench_report import markdown

        run = RunConfig(preset=preset, launcher=launcher, state_dir=state_dir)
        bench = task(run_stream_bench, name="stream-benchmark", cache_policy=NO_CACHE)
        result = bench(StreamBenchConfig(streams=streams, bootstrap=bootstrap, run=run))
        print(markdown(result))
        return {k: v for k, v in result.items() if k != "rows"}
    run_sweep = task(sweep_registered_model, name="sweep", retries=1, cache_policy=NO_CACHE)
    result = run_sweep(registered_model, alias, state_dir, None, max_clips, split)
    print(result["model"])
    print(format_table(result))
    return result
