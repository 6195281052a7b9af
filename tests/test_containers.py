"""The container definitions (infra/Dockerfile, infra/vljepa.def) install what infra/setup.sh installs.

Docker and Apptainer are not on the development machines, so the fast tests parse the files:
the pip install sequence (torch==2.13.0 first, the project's extras, the --no-deps packages)
must be setup.sh's, ffmpeg must be installed, and every repository path they copy must exist
and reach the image. Where a Docker daemon or Apptainer is available, a slow test builds them.
"""

from __future__ import annotations

import fnmatch
import re
import shlex
import shutil
import subprocess
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "infra" / "Dockerfile"
DEFFILE = ROOT / "infra" / "vljepa.def"
REPO_IN_IMAGE = "/opt/vljepa"


@dataclass
class PipInstall:
    """One `pip install` command: its requirement specs, editable target and options."""

    specs: list[str] = field(default_factory=list)
    editable: str | None = None
    no_deps: bool = False
    index_url: str | None = None


def parse_pip_install(tokens: list[str]) -> PipInstall | None:
    """The `pip install ...` in a shell command's tokens (``python -m pip``, ``"${pip[@]}"`` too)."""
    if "install" not in tokens:
        return None
    head = tokens[:tokens.index("install")]
    if not any(t == "pip" or t.endswith("/pip") or t == '"${pip[@]}"' or "pip[@]" in t for t in head):
        return None
    out = PipInstall()
    args = iter(tokens[tokens.index("install") + 1:])
    for token in args:
        if token in ("-e", "--editable"):
            out.editable = next(args)
        elif token == "--no-deps":
            out.no_deps = True
        elif token in ("--index-url", "-i"):
            out.index_url = next(args)
        elif token.startswith("--index-url="):
            out.index_url = token.split("=", 1)[1]
        elif token.startswith("-"):
            continue  # --quiet, --progress-bar off (its value is not a package: skip it too)
        elif token == "off":
            continue
        else:
            out.specs.append(token)
    return out


def shell_commands(text: str) -> list[list[str]]:
    """Simple shell commands of a script (continuations joined; split at &&, ||, ;, newlines)."""
    text = re.sub(r"\\\n", " ", text)
    commands = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        for part in re.split(r"&&|\|\||;|\|", line):
            try:
                tokens = shlex.split(part, comments=True, posix=False)
            except ValueError:
                continue
            if tokens:
                commands.append([t.strip('"').strip("'") if t not in ('"${pip[@]}"',) else t for t in tokens])
    return commands


def pip_installs(script: str) -> list[PipInstall]:
    return [p for p in map(parse_pip_install, shell_commands(script)) if p is not None]


def setup_sh_installs() -> list[PipInstall]:
    """setup.sh runs pip as ``"${pip[@]}" ARGS`` with ``pip=(".../pip" install --quiet ...)``."""
    text = (ROOT / "infra" / "setup.sh").read_text()
    commands = []
    for tokens in shell_commands(text):
        if tokens[0] == '"${pip[@]}"':
            commands.append(parse_pip_install(["pip", "install", *tokens[1:]]))
    return commands


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    lines = [line for line in DOCKERFILE.read_text().splitlines() if not line.lstrip().startswith("#")]
    text = re.sub(r"\\\n", " ", "\n".join(lines))
    return [(m.group(1).upper(), m.group(2).strip()) for m in re.finditer(r"^\s*([A-Za-z]+)\s+(.*)$", text, re.M)]


def def_sections() -> tuple[dict[str, str], dict[str, list[str]]]:
    """(header keywords, {section name: lines}) of the Apptainer definition file."""
    header: dict[str, str] = {}
    sections: dict[str, list[str]] = {}
    current = None
    for line in DEFFILE.read_text().splitlines():
        if line.startswith("%"):
            current = line[1:].split()[0]
            sections[current] = []
        elif current is None:
            if ":" in line and not line.startswith("#"):
                key, value = line.split(":", 1)
                header[key.strip()] = value.strip()
        elif line.strip() and not line.strip().startswith("#"):
            sections[current].append(line.strip())
    return header, sections


def docker_run_script() -> str:
    return "\n".join(args for instr, args in dockerfile_instructions() if instr == "RUN")


def def_post_script() -> str:
    return "\n".join(def_sections()[1]["post"])


CONTAINERS = {"Dockerfile": docker_run_script, "vljepa.def": def_post_script}


def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def extras_of(editable: str) -> set[str]:
    match = re.fullmatch(r"\.\[([\w,\s-]+)\]", editable)
    assert match, f"editable install of {editable!r}: expected '.[extras]'"
    return {e.strip() for e in match.group(1).split(",")}


def test_setup_sh_parses_as_expected():
    """The reference the containers are compared to: guards the parser against setup.sh changes."""
    installs = setup_sh_installs()
    assert len(installs) == 3, installs
    assert installs[0].specs == ["torch==2.13.0"] and installs[1].editable and installs[2].no_deps


@pytest.mark.parametrize("name", CONTAINERS)
def test_pip_sequence_matches_setup_sh(name):
    reference = setup_sh_installs()
    installs = pip_installs(CONTAINERS[name]())
    assert len(installs) == 3, f"{name}: expected torch, project, --no-deps installs; found {installs}"
    torch_install, project, no_deps = installs
    # torch first, exactly the spec setup.sh (and pyproject's dependencies) pin.
    assert torch_install.specs == reference[0].specs == ["torch==2.13.0"], torch_install
    assert "torch==2.13.0" in pyproject()["project"]["dependencies"]
    assert torch_install.index_url and "TORCH_INDEX_URL" in torch_install.index_url, \
        f"{name}: torch's wheel index must be the TORCH_INDEX_URL build argument"
    # then the project, editable, with extras that exist in pyproject.toml and that setup.sh installs.
    assert project.editable and not project.specs and not project.no_deps
    extras = extras_of(project.editable)
    assert "pipeline" in extras
    assert extras <= set(pyproject()["project"]["optional-dependencies"]), extras
    assert extras <= extras_of(reference[1].editable)
    # then the packages setup.sh installs without their dependencies, the same ones.
    assert no_deps.no_deps and sorted(no_deps.specs) == sorted(reference[2].specs)


@pytest.mark.parametrize("name", CONTAINERS)
def test_ffmpeg_is_installed_with_apt(name):
    commands = shell_commands(CONTAINERS[name]())
    apt = [c for c in commands if c[:2] in (["apt-get", "install"], ["apt", "install"])]
    assert any("ffmpeg" in c for c in apt), f"{name}: no apt-get install ffmpeg"
    assert any(c[:2] == ["apt-get", "update"] for c in commands)


def test_dockerfile_base_workdir_and_env():
    instructions = dockerfile_instructions()
    args = dict(a.split("=", 1) for i, a in instructions if i == "ARG" and "=" in a)
    base = next(a for i, a in instructions if i == "FROM")
    base = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], base)
    assert re.fullmatch(r"python:3\.12[-\w.]*", base) and ("bookworm" in base or "trixie" in base), base
    assert "TORCH_INDEX_URL" in args
    workdir = [a for i, a in instructions if i == "WORKDIR"]
    copies = [shlex.split(a) for i, a in instructions if i == "COPY"]
    assert workdir == [REPO_IN_IMAGE] and any(c[-1] in (REPO_IN_IMAGE, ".", "./") for c in copies)
    # the editable install runs after the repository is copied into the WORKDIR
    order = [i for i, a in instructions if i in ("COPY", "WORKDIR") or (i == "RUN" and "-e " in a)]
    assert order.index("RUN") > order.index("COPY") and order.index("RUN") > order.index("WORKDIR")
    env = " ".join(a for i, a in instructions if i == "ENV")
    assert "VLJEPA_STATE_DIR=" in env and "PREFECT_HOME=" in env
    assert "PREFECT_API_URL" not in env  # jobs on the nodes must not depend on the Prefect API
    assert not [a for i, a in instructions if i == "ENTRYPOINT"]


def test_def_base_and_environment():
    header, sections = def_sections()
    assert header["Bootstrap"] == "docker" and re.fullmatch(r"python:3\.12[-\w.]*", header["From"])
    assert any(line.startswith("TORCH_INDEX_URL=") for line in sections["arguments"])
    assert "{{ TORCH_INDEX_URL }}" in def_post_script()
    assert f"cd {REPO_IN_IMAGE}" in sections["post"]
    env = "\n".join(sections["environment"])
    assert "VLJEPA_STATE_DIR=" in env and "PREFECT_HOME=" in env and "PREFECT_API_URL" not in env


def needed_repo_paths() -> set[str]:
    """What `pip install -e .` and the code need from the repository: pyproject.toml, its readme,
    the top-level packages it installs, and the sql/ folder the manifest code reads."""
    project = pyproject()
    patterns = project["tool"]["setuptools"]["packages"]["find"]["include"]
    packages = {p.name for p in ROOT.iterdir() if (p / "__init__.py").is_file()
                and any(fnmatch.fnmatch(p.name, pat) for pat in patterns)}
    assert {"vljepa", "preprocessing", "flows"} <= packages
    return {"pyproject.toml", project["project"]["readme"], "sql", *packages}


def _glob_regex(pattern: str) -> str:
    """Go's filepath.Match syntax as Docker uses it: ``*`` and ``?`` stay within a path part."""
    out = []
    for piece in re.split(r"(\*\*/|\*|\?)", pattern):
        out.append({"**/": "(?:.*/)?", "*": "[^/]*", "?": "[^/]"}.get(piece, re.escape(piece)))
    return "".join(out)


def dockerignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule, simplified: the last matching pattern wins; ``!`` re-includes; ``**`` any depth."""
    ignored = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").strip("/")
        parts = path.split("/")
        prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
        if any(re.fullmatch(_glob_regex(pattern), prefix) for prefix in prefixes):
            ignored = not negate
    return ignored


def dockerignore_patterns() -> list[str]:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def test_dockerfile_copies_existing_paths_and_dockerignore_keeps_the_source():
    patterns = dockerignore_patterns()
    sources = []
    for instr, args in dockerfile_instructions():
        if instr == "COPY":
            tokens = [t for t in shlex.split(args) if not t.startswith("--")]
            sources += tokens[:-1]
    assert sources, "the Dockerfile copies nothing from the repository"
    for source in sources:
        assert (ROOT / source).exists(), f"COPY {source}: no such path in the repository"
    copied = {str((ROOT / s).resolve().relative_to(ROOT)) for s in sources}
    for path in needed_repo_paths():
        assert "." in copied or path in copied, f"the Dockerfile does not copy {path}"
        assert not dockerignored(path, patterns), f".dockerignore excludes {path}, which the image needs"
    for heavy in (".venv", ".vljepa", "tests/artifacts", "vljepa/__pycache__", "flows/sql/__pycache__"):
        assert dockerignored(heavy, patterns), f".dockerignore must exclude {heavy}"


def test_def_copies_existing_paths_into_the_repo_dir():
    _, sections = def_sections()
    copied = {}
    for line in sections["files"]:
        source, *dest = line.split()
        assert (ROOT / source).exists(), f"%files {source}: no such path in the repository"
        copied[source] = dest[0] if dest else source
    for path in needed_repo_paths():
        assert copied.get(path) == f"{REPO_IN_IMAGE}/{path}", f"vljepa.def does not copy {path} to {REPO_IN_IMAGE}/"
    assert not {".venv", ".vljepa", "."} & set(copied)


def test_dockerignore_matcher():
    patterns = ["**/__pycache__", ".venv", "*.egg-info", "tests/artifacts", "docs", "!docs/keep.png"]
    assert dockerignored("flows/sql/__pycache__", patterns) and dockerignored("__pycache__", patterns)
    assert dockerignored(".venv", patterns) and dockerignored(".venv/bin/python", patterns)
    assert dockerignored("vljepa_pipeline.egg-info", patterns) and dockerignored("docs/a.png", patterns)
    assert not dockerignored("docs/keep.png", patterns)
    assert not dockerignored("tests/test_x.py", patterns) and not dockerignored("vljepa", patterns)


def _docker_daemon() -> bool:
    if shutil.which("docker") is None:
        return False
    return subprocess.run(["docker", "info"], capture_output=True, timeout=30).returncode == 0


@pytest.mark.slow
def test_docker_image_builds_and_imports():
    if not _docker_daemon():
        pytest.skip("no docker daemon")
    tag = "vljepa-pipeline:test"
    subprocess.run(["docker", "build", "-f", str(DOCKERFILE), "-t", tag, str(ROOT)], check=True, timeout=3600)
    out = subprocess.run(["docker", "run", "--rm", tag, "python", "-c",
                          "import torch, vljepa, flows.launch; print(torch.__version__)"],
                         capture_output=True, text=True, check=True, timeout=300)
    assert out.stdout.strip().startswith("2.13.0")


@pytest.mark.slow
def test_apptainer_image_builds_and_imports(tmp_path):
    tool = shutil.which("apptainer") or shutil.which("singularity")
    if tool is None:
        pytest.skip("neither apptainer nor singularity is installed")
    image = tmp_path / "vljepa.sif"
    subprocess.run([tool, "build", str(image), str(DEFFILE)], cwd=ROOT, check=True, timeout=3600)
    out = subprocess.run([tool, "exec", str(image), "python", "-c",
                          "import torch, vljepa, flows.launch; print(torch.__version__)"],
                         capture_output=True, text=True, check=True, timeout=300)
    assert out.stdout.strip().startswith("2.13.0")
