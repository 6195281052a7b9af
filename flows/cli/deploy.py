"""``vljepa deploy``: register every Prefect deployment (``flows.prefect_flows.deploy``)."""

from __future__ import annotations

import argparse

HELP = "register every Prefect deployment with the server at $PREFECT_API_URL (needs Prefect)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--work-pool", default="local-pool")
    p.add_argument("--only", default=None, help="the deployments of one flow file, e.g. evaluate")


def main(args: argparse.Namespace) -> int:
    from flows.prefect_flows.deploy import deploy

    for name in deploy(args.work_pool, args.only):
        print(f"deployed {name}")
    return 0
