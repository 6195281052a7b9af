"""The ``vljepa`` command line: one sub-command per module of this package, each a few lines over
the plain functions of ``flows/`` (``vljepa run`` → ``flows.pipeline.run_pipeline``, ...).

A sub-command module defines ``HELP``, ``add_arguments(parser)`` and ``main(args) -> int``, and
imports only ``argparse``-level things at the top, so ``vljepa --help`` and ``vljepa params`` never
load the orchestration stack. ``vljepa run`` works without Prefect installed.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# Sub-command -> module of this package (an explicit table: the order is the order of --help).
COMMANDS = {
    "run": "run", "preprocess": "preprocess", "train": "train", "evaluate": "evaluate", "stream": "stream",
    "compare": "compare", "ablate": "ablate",
    "config": "info", "params": "info", "plan": "info", "report": "report", "deploy": "deploy",
}
# Sub-commands with a parser of their own (they take no model config): ``main(argv, prog=...)``, so their
# usage and error lines name ``vljepa NAME``.
PASSTHROUGH = {
    "corpus": ("preprocessing.corpus", "generate the procedural video-language corpus"),
    "data": ("flows.cli.data", "manifest imports, data mixes and failures"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vljepa", description="VL-JEPA pipeline: the main job, training stages, evaluation, data and "
                                   "inspection. `vljepa COMMAND --help` for each.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, module_name in COMMANDS.items():
        module = importlib.import_module(f"flows.cli.{module_name}")
        help_text, add = module.COMMANDS[name] if hasattr(module, "COMMANDS") else (module.HELP, module.add_arguments)
        p = sub.add_parser(name, help=help_text, description=help_text)
        add(p)
        p.set_defaults(module=module)
    for name, (_, help_text) in PASSTHROUGH.items():
        # Listed for --help only: main() hands these to their own parsers before argparse runs.
        sub.add_parser(name, help=f"{help_text} (see `vljepa {name} --help`)", add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    from flows.cli.common import ConfigError, json_mode

    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in PASSTHROUGH:
        return importlib.import_module(PASSTHROUGH[argv[0]][0]).main(argv[1:], prog=f"vljepa {argv[0]}") or 0
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        with json_mode(bool(getattr(args, "json", False))):
            return args.module.main(args) or 0
    except ConfigError as exc:  # a misspelt --set key, a bad preset or config file: say so, no traceback
        parser.exit(2, f"vljepa {args.command}: error: {exc}\n")


if __name__ == "__main__":
    sys.exit(main())
