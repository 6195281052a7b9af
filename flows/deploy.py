"""Register the deployments with the Prefect server named by ``PREFECT_API_URL``.

``python -m flows.deploy`` creates ``pretrain/full`` on the ``local-pool`` process work pool
(started by ``infra/up.sh``); ``prefect deployment run pretrain/full`` then runs it.
"""

from __future__ import annotations

import argparse

from flows.stages import REPO_ROOT


def deploy(work_pool: str = "local-pool") -> list[str]:
    from flows.pretrain import pretrain

    deployed = []
    flow = pretrain.from_source(source=str(REPO_ROOT), entrypoint="flows/pretrain.py:pretrain")
    flow.deploy(name="full", work_pool_name=work_pool, parameters={"preset": "small"},
                description="Stage-1 pretraining on the embedded default, end to end: data, image phase, "
                            "image + video phase, evaluation, registration.", print_next_steps=False)
    deployed.append("pretrain/full")
    # Stage 1's image-only phase (paper: 1 frame per sample, large batch, constant lr).
    flow.deploy(name="image-only", work_pool_name=work_pool, parameters={"preset": "small", "phase": "image"},
                description="Stage-1 image-only phase: 1 frame per sample.", print_next_steps=False)
    deployed.append("pretrain/image-only")
    from flows.preprocess import deploy_preprocess
    from flows.sft import deploy_sft

    deployed.append(deploy_preprocess(work_pool))
    from flows.evaluate import deploy_evaluate

    deployed.append(deploy_evaluate(work_pool))

    deployed.append(deploy_sft(work_pool))
    from flows.selective_decoding import deploy_selective_decoding

    deployed.append(deploy_selective_decoding(work_pool))
    from flows.compare_flow import deploy_compare

    deployed.append(deploy_compare(work_pool))
    from flows.ablate_flow import deploy_ablate

    deployed += deploy_ablate(work_pool)
    return deployed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--work-pool", default="local-pool")
    args = parser.parse_args(argv)
    for name in deploy(args.work_pool):
        print(f"deployed {name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
