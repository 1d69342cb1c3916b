"""A JupyterLab server started as `make lab` starts it (the Makefile's own command line: same root, same --config,
notebooks/jupytext.toml found from that root), in a throwaway git copy of the repository, so that nothing touches
the working tree's files or git state. Used by tests/test_lab.py and scripts/browser_check.py; holds no tests."""

import json
import os
import shlex
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GIT_IDENTITY = ["-c", "user.name=lab check", "-c", "user.email=lab-check@localhost", "-c", "commit.gpgsign=false"]


def copy_repository(dest: Path) -> Path:
    """The checkout's tracked and untracked-not-ignored files (what a commit of the working tree would hold) in a
    new git repository with one commit, so `git status` there starts clean."""
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, capture_output=True,
                            check=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        if (ROOT / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, dest / name)
    git(dest, "init", "-q")
    git(dest, "add", "-A")
    git(dest, *GIT_IDENTITY, "commit", "-q", "-m", "copy of the checkout")
    return dest


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, check=True).stdout


def make_command(repo: Path, target: str, program: str) -> list[str]:
    """The line of `make TARGET`'s recipe that runs PROGRAM (`make -n`: printed, not run), with `python` and
    `jupyter` run by this interpreter, so the command needs no venv on PATH."""
    printed = subprocess.run(["make", "-s", "-n", target], cwd=repo, capture_output=True, text=True, check=True)
    lines = [line for line in printed.stdout.splitlines() if line.split()[:1] == [program]]
    assert len(lines) == 1, f"`make -n {target}` has no single `{program}` line:\n{printed.stdout}"
    words = shlex.split(lines[0])
    return [sys.executable, *(["-m", "jupyter"] if program == "jupyter" else []), *words[1:]]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Lab:
    """A running server: its URL, token, repository copy and log; `get`/`save` go through the contents API."""

    def __init__(self, repo: Path, url: str, token: str, log: Path):
        self.repo, self.url, self.token, self.log = repo, url, token, log

    def request(self, method: str, api_path: str, body: dict | None = None) -> dict:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(f"{self.url}/api/{api_path}", data=data, method=method,
                                         headers={"Authorization": f"token {self.token}",
                                                  "Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=60) as response:
            return json.load(response)

    def get(self, notebook: str) -> dict:
        """The notebook as Lab opens it (jupytext: the twin's cells with the .ipynb's outputs)."""
        return self.request("GET", f"contents/{notebook}?type=notebook&content=1")["content"]

    def save(self, notebook: str, content: dict) -> dict:
        """What Lab's save (and autosave) sends."""
        return self.request("PUT", f"contents/{notebook}", {"type": "notebook", "format": "json", "content": content})


@contextmanager
def lab_server(workdir: Path, with_kernel: bool = False, extra_flags=(), timeout: float = 120):
    """`make lab`'s server (and, with_kernel, `make kernel`'s kernelspec) on a free loopback port with a token, in
    a copy of the repository under WORKDIR; Jupyter's config, data and runtime folders are WORKDIR's own.
    extra_flags: appended to the command (the browser check exposes Lab's app object to its scripts)."""
    repo = copy_repository(workdir / "repo")
    env = {**os.environ, "JUPYTER_CONFIG_DIR": str(workdir / "jupyter/config"),
           "JUPYTER_DATA_DIR": str(workdir / "jupyter/data"), "JUPYTER_RUNTIME_DIR": str(workdir / "jupyter/runtime"),
           "JUPYTER_PLATFORM_DIRS": "0", "PYTHONPATH": str(repo)}
    if with_kernel:  # `make kernel`: `--user` installs into JUPYTER_DATA_DIR, here the workdir's
        subprocess.run(make_command(repo, "kernel", "python"), cwd=repo, env=env, check=True, capture_output=True)
    port, token = free_port(), "lab-check-token"
    command = [*make_command(repo, "lab", "jupyter"), "--no-browser", "--ServerApp.ip=127.0.0.1",
               f"--ServerApp.port={port}", "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}", *extra_flags]
    log = workdir / "lab.log"
    with open(log, "w") as log_file:
        process = subprocess.Popen(command, cwd=repo, env=env, stdout=log_file, stderr=subprocess.STDOUT)
    lab = Lab(repo, f"http://127.0.0.1:{port}", token, log)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                lab.request("GET", "status")
                break
            except (urllib.error.URLError, ConnectionError):
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"JupyterLab did not start ({' '.join(command)}):\n{log.read_text()[-3000:]}")
                time.sleep(0.25)
        yield lab
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def dvc_status(repo: Path) -> dict:
    done = subprocess.run([sys.executable, "-m", "dvc", "status", "--json"], cwd=repo, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout or "{}")


def stages_naming(status: dict, dependency: str) -> set[str]:
    """The stages that `dvc status` reports stale because DEPENDENCY changed."""
    return {stage for stage, changes in status.items() for change in changes if isinstance(change, dict)
            and change.get("changed deps", {}).get(dependency) == "modified"}
