"""The commands the README documents resolve: make targets, dvc subcommands and flags, stage addresses, -S
parameter paths, modules, files and flags of our CLIs. Nothing heavy runs: dvc/jupytext/papermill only print
their --help. And `dvc plots show` through lib.vega writes a page that loads nothing from a network."""

import functools
import glob
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from lib.pipeline import module_file

ROOT = Path(__file__).resolve().parents[1]


DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def readme_commands() -> list[str]:
    """Every command of the ```bash blocks of the README and docs/ (comments dropped, `a && b` split)."""
    text = "\n".join(path.read_text() for path in DOCS)
    out = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        for line in block.splitlines():
            line = re.sub(r"\s+#.*$", "", line).strip()
            if line and not line.startswith("#"):
                out += [part.strip() for part in line.split("&&")]
    return out


@functools.lru_cache(maxsize=None)
def _help(*command: str) -> str:
    result = subprocess.run([*command, "--help"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"{' '.join(command)} --help failed: {result.stderr[-500:]}"
    return result.stdout


def _bin(name: str) -> str:
    return str(Path(sys.executable).with_name(name))


@functools.lru_cache(maxsize=None)
def _stage_addresses() -> set[str]:
    from dvc.repo import Repo

    with Repo(str(ROOT)) as repo:
        return {s.addressing for s in repo.index.stages}


def _flags(words: list[str]) -> list[str]:
    return [w.split("=")[0] for w in words if w.startswith("-") and w != "-"]


def _check_params_path(assignment: str) -> None:
    key = assignment.split("=")[0]
    node = yaml.safe_load((ROOT / "params.yaml").read_text())
    for part in key.split("."):
        assert isinstance(node, dict) and part in node, f"-S {assignment}: params.yaml has no {key}"
        node = node[part]


def check(command: str) -> None:
    words = shlex.split(command)
    tool, args = words[0], words[1:]
    if tool == "make":
        makefile = (ROOT / "Makefile").read_text()
        for target in args:
            assert re.search(rf"(?m)^{re.escape(target)}:", makefile), f"Makefile has no target {target}"
    elif tool == "dvc":
        sub = []
        for word in args:
            if not re.fullmatch(r"[a-z]+", word) or len(sub) == 2:
                break
            sub.append(word)
        text = _help(_bin("dvc"), *sub)
        for flag in _flags(args[len(sub):]):
            assert re.search(rf"(^|[\s,\[]){re.escape(flag)}\b", text), f"`dvc {' '.join(sub)}` has no flag {flag}"
        rest = args[len(sub):]
        if sub == ["repro"]:
            for target in (w for w in rest if not w.startswith("-")):
                assert target in _stage_addresses(), f"dvc.yaml has no stage {target}"
        for i, word in enumerate(rest):
            if word == "-S":
                for value in rest[i + 1].split(",")[:1]:
                    _check_params_path(value)
    elif tool in ("python", "torchrun"):
        module = args[args.index("-m") + 1]
        path = module_file(module)
        assert path is not None, f"no module {module}"
        source = path.read_text()
        for flag in _flags(args[args.index("-m") + 2:]):
            assert flag in source, f"{module} has no option {flag}"
        for word in args[args.index("-m") + 2:]:
            if re.search(r"\.(ipynb|yaml|py)$", word):
                assert (ROOT / word).is_file(), f"{command}: {word} does not exist"
    elif tool in ("jupytext", "papermill"):
        text = _help(_bin(tool))
        for flag in _flags(args):
            assert flag in text, f"{tool} has no option {flag}"
        for word in args:
            if word.endswith(".ipynb") and not word.startswith("/tmp"):
                assert glob.glob(str(ROOT / word)), f"{command}: {word} matches no file"
    elif tool == "cp":
        assert (ROOT / args[0]).is_file()
    else:
        raise AssertionError(f"README command {command!r}: teach tests/test_docs.py how to check {tool}")


@pytest.mark.parametrize("command", readme_commands())
def test_readme_command_resolves(command):
    check(command)


def relative_links(path: Path) -> list[str]:
    """The relative targets of a Markdown file's links and images (``[text](target)``), anchors dropped."""
    targets = re.findall(r"\]\(([^)\s]+)\)", re.sub(r"```.*?```", "", path.read_text(), flags=re.S))
    return [t.split("#")[0] for t in targets if not re.match(r"[a-z]+:", t) and not t.startswith("#")]


@pytest.mark.parametrize("path", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve_inside_the_repository(path):
    """Every relative link of the README and docs/ names a file of the repository (not ../shared: the repository
    is read without it)."""
    for target in relative_links(path):
        resolved = (path.parent / target).resolve()
        assert resolved.is_relative_to(ROOT), f"{path.name}: link {target} points outside the repository"
        assert resolved.exists(), f"{path.name}: link {target} resolves to nothing"


def test_the_link_check_catches_a_broken_link(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("[a](missing.md) [b](https://example.org) [c](#here) ![d](fig.png#x)\n```\n[e](code.md)\n```\n")
    assert relative_links(page) == ["missing.md", "fig.png"]


def test_the_checks_catch_a_wrong_command():
    for wrong in ("dvc exp show --no-such-flag", "dvc repro prune@cnn-nope", "make nothing",
                  "dvc exp run -S 'prune.lrr.no_such_key=1'", "python -m lib.results --nope"):
        with pytest.raises(AssertionError):
            check(wrong)


@pytest.mark.slow
def test_dvc_plots_show_offline(tmp_path):
    """lib.vega's template inlines Vega: the page has no external script, DVC's CDN tags are not added."""
    subprocess.run([sys.executable, "-m", "dvc", "init", "-q", "--no-scm"], cwd=tmp_path, check=True)
    (tmp_path / "acc.csv").write_text("step,acc\n0,0.5\n1,0.7\n")
    result = subprocess.run([sys.executable, "-m", "lib.vega", "show", "acc.csv", "-o", "out"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=300, env={**__import__("os").environ,
                                                                               "PYTHONPATH": str(ROOT)})
    assert result.returncode == 0, result.stderr
    page = (tmp_path / "out/index.html").read_text()
    assert not re.search(r"<script[^>]*\bsrc=", page), "a script loaded from elsewhere"
    assert "window.vegaEmbed=" in page and "vegaEmbed('#acc_csv'" in page
    assert (ROOT / ".gitignore").read_text().count("/dvc_plots/") == 1


def test_make_lab_allows_root():
    makefile = (ROOT / "Makefile").read_text()
    assert "--allow-root" in makefile and "id -u" in makefile
    dry = subprocess.run(["make", "-n", "lab", "VENV=/nonexistent"], cwd=ROOT, capture_output=True, text=True)
    line = next(l for l in dry.stdout.splitlines() if l.startswith("jupyter lab"))
    import os

    assert ("--allow-root" in line) == (os.getuid() == 0)
