"""Flow ``selective-decoding`` (deployment ``sweep``): the decode-rate vs CIDEr sweep for a registered
model, logged into that model's MLflow training run (``flows.selective``)."""

from __future__ import annotations

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from flows.selective import format_table, sweep_registered_model


@flow(name="selective-decoding", log_prints=True)
def selective_decoding(registered_model: str = "vljepa", alias: str = "candidate", state_dir: str | None = None,
                       max_clips: int | None = None, split: str = "test") -> dict:
    """Uniform vs Ward vs online selective decoding on the corpus's multi-event test streams."""
    run = task(sweep_registered_model, name="sweep", retries=1, cache_policy=NO_CACHE)
    result = run(registered_model, alias, state_dir, None, max_clips, split)
    print(result["model"])
    print(format_table(result))
    return result
