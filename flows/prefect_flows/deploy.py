"""Register every deployment with the Prefect server named by ``PREFECT_API_URL``.

``python -m flows.prefect_flows.deploy`` (or ``vljepa deploy``) creates them on the ``local-pool``
process work pool (started by ``infra/up.sh``); ``prefect deployment run pretrain/full`` then runs it.
"""

from __future__ import annotations

import argparse
from typing import Any

from flows.ablate import SWEEP_NAMES
from flows.env import REPO_ROOT

# flow file, flow function, deployment name, parameters, description
DEPLOYMENTS: list[tuple[str, str, str, dict[str, Any], str]] = [
    ("pretrain", "pretrain", "full", {"preset": "small"},
     "Stage-1 pretraining on the embedded default, end to end: data, image phase, image + video phase, "
     "evaluation, registration."),
    ("pretrain", "pretrain", "image-only", {"preset": "small", "phase": "image"},
     "Stage-1 image-only phase: 1 frame per sample."),
    ("preprocess", "preprocess", "full", {}, "Import, decode/sample, encode and cache frozen tokens."),
    ("evaluate", "evaluate", "full", {}, "The paper's evaluation tasks, embedding analysis and MLflow registration."),
    ("sft", "sft", "full", {"preset": "small", "launcher": "local"},
     "Stage-2 SFT (VQA + captions + labels) through the submitit launcher."),
    ("selective_decoding", "selective_decoding", "sweep", {},
     "Decode-rate vs CIDEr Pareto (uniform, Ward, online) for models:/vljepa@candidate."),
    ("selective_decoding", "selective_decoding", "benchmark", {"benchmark": True},
     "Selective decoding on the paper's protocol: the stream benchmark, a model trained on it, savings with "
     "bootstrap intervals, the online trigger tuned on val."),
    ("compare", "compare", "vlm-vs-jepa", {"preset": "small"},
     "VL-JEPA vs a token-generating VLM trained alike (paper Fig. 3)."),
] + [("ablate", "ablate", sweep, {"sweep": sweep, "preset": "small"},
      f"Ablation sweep '{sweep}' on the embedded default (paper Table 4).") for sweep in SWEEP_NAMES]


def deploy(work_pool: str = "local-pool", only: str | None = None) -> list[str]:
    """Register the deployments (``only``: those of one flow file); returns ``flow/deployment`` names."""
    import importlib

    deployed = []
    for module, function, name, parameters, description in DEPLOYMENTS:
        if only is not None and module != only:
            continue
        flow = getattr(importlib.import_module(f"flows.prefect_flows.{module}"), function)
        source = flow.from_source(source=str(REPO_ROOT), entrypoint=f"flows/prefect_flows/{module}.py:{function}")
        source.deploy(name=name, work_pool_name=work_pool, parameters=parameters, description=description,
                      print_next_steps=False)
        deployed.append(f"{flow.name}/{name}")
    return deployed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vljepa deploy", description=__doc__.split("\n\n")[0])
    parser.add_argument("--work-pool", default="local-pool")
    parser.add_argument("--only", default=None, help="the deployments of one flow file, e.g. evaluate")
    args = parser.parse_args(argv)
    for name in deploy(args.work_pool, args.only):
        print(f"deployed {name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
