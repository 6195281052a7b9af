"""The shape of the harness (STYLE.md): no import circles, short files, Prefect only in
its folder, one resolver behind every command and flow."""

from __future__ import annotations

import ast
import inspect
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("vljepa", "preprocessing", "flows", "bench")
MAX_LINES = 400


def _project_files() -> list[Path]:
    return sorted(p for pkg in (*PACKAGES, "tests") for p in (ROOT / pkg).rglob("*.py"))


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Every module a file imports, at the top or inside a function (``from a import b`` counts a.b if it is a module)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
            out |= {f"{node.module}.{alias.name}" for alias in node.names}
    return out


def _graph() -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in _project_files() if not p.parts[-2] == "tests"}
    graph = {}
    for name, path in modules.items():
        targets = set()
        for imported in _imports(path):
            # the module itself, else its package (``from flows import launch``)
            while imported and imported not in modules:
                imported = imported.rpartition(".")[0]
            if imported and imported != name and not name.startswith(imported + "."):
                targets.add(imported)
        graph[name] = targets
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_no_import_circles_between_project_files():
    assert _cycle(_graph()) is None, f"import circle: {' -> '.join(_cycle(_graph()) or [])}"


def test_the_circle_check_can_fail():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_no_project_file_is_over_400_lines():
    long = {str(p.relative_to(ROOT)): n for p in _project_files() if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, f"split these (STYLE.md: one sitting each): {long}"


ISSUE_NUMBER = re.compile(r"\b[Ii]ssues? #?\d+")


def test_no_issue_numbers_in_the_code():
    """Code and tests say what and why, not which tracker issue asked for it."""
    assert ISSUE_NUMBER.search("as issue " + "12 asks") and not ISSUE_NUMBER.search("an issue with 3 rows")
    found = [f"{path.relative_to(ROOT)}:{n}" for path in _project_files()
             for n, line in enumerate(path.read_text().splitlines(), 1) if ISSUE_NUMBER.search(line)]
    assert not found, found


def test_only_the_flows_folder_imports_prefect():
    outside = [str(p.relative_to(ROOT)) for p in _project_files()
               if p.parts[-2] != "tests" and "prefect_flows" not in p.parts
               and any(m == "prefect" or m.startswith("prefect.") for m in _imports(p))]
    assert outside == []


def test_every_flow_file_defines_one_flow_named_after_it():
    import importlib

    from prefect import Flow

    folder = ROOT / "flows" / "prefect_flows"
    for path in sorted(folder.glob("*.py")):
        if path.stem in ("__init__", "tasks", "deploy"):
            continue
        module = importlib.import_module(f"flows.prefect_flows.{path.stem}")
        flows = [obj for obj in vars(module).values() if isinstance(obj, Flow)]
        assert [f.name.replace("-", "_") for f in flows] == [path.stem], path.name


@pytest.mark.parametrize("argv", [
    ["run", "--preset", "tiny"], ["train", "--preset", "tiny", "--dry-run"], ["plan"], ["params", "--preset", "tiny"],
    ["config", "--preset", "tiny", "--stage", "sft"], ["compare", "--preset", "tiny"], ["ablate", "loss", "--preset", "tiny"],
])
def test_a_misspelt_set_key_is_an_error_naming_the_nearest_key(argv, capsys):
    from flows.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main([*argv, "--set", "train.lrr=1e-4"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "unknown config key 'train.lrr'" in err and "did you mean 'train.lr'" in err


def test_set_overrides_reach_the_resolved_config(capsys):
    import json

    from flows.cli import main

    assert main(["config", "--preset", "tiny", "--stage", "pretrain", "--phase", "image", "--set", "train.lr=0.5",
                 "--set", "slurm.partition=debug"]) == 0
    cfg = json.loads(capsys.readouterr().out)
    assert cfg["train"]["lr"] == 0.5 and cfg["slurm"]["partition"] == "debug"
    assert cfg["x_encoder"]["num_frames"] == 1  # the recipe came first, the overrides last


def test_every_flow_that_takes_a_config_accepts_overrides():
    from flows.prefect_flows import ablate, compare, preprocess, pretrain, sft

    for flow in (pretrain.pretrain, sft.sft, compare.compare, ablate.ablate, preprocess.preprocess):
        assert "overrides" in inspect.signature(flow.fn).parameters, flow.name


def test_flow_overrides_go_through_the_resolver():
    from flows.resolve import ConfigError, RunConfig, length_overrides

    run = RunConfig(preset="tiny", overrides=length_overrides(max_steps=3) + ("train.lr=0.25",))
    cfg = run.stage_config("pretrain", "video")
    assert (cfg.train.max_steps, cfg.train.lr) == (3, 0.25)
    with pytest.raises(ConfigError, match="did you mean 'data.n_videos'"):
        RunConfig(preset="tiny", overrides=("data.n_video=3",)).model_config()
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        RunConfig(overrides=("train.lr",))
