"""``vljepa report``: the latest pretraining run's metrics from MLflow and where to look (UI URLs)."""

from __future__ import annotations

import argparse

from flows.cli.common import add_state_arguments

HELP = "print the latest pretraining run's metrics from MLflow and the UI URLs"


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_state_arguments(p)
    p.add_argument("--experiment", default="vljepa-pretrain")


def main(args: argparse.Namespace) -> int:
    from flows.env import StateLayout, prefect_ui_url
    from flows.report import latest_run_report

    try:
        print(latest_run_report(StateLayout.resolve(args.state_dir, args.tracking_uri).tracking_uri, args.experiment,
                                prefect_ui=prefect_ui_url()))
    except LookupError as exc:
        print(f"vljepa report: {exc}")
        return 1
    return 0
