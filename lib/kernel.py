"""The notebook's kernel under ``lib.stage``: started early (its imports overlap the checks), headless (plain
progress lines), its library notices and progress relayed to the terminal, stopped at the end or at once."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

_ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


class NoticeRelay:
    """A stream papermill writes the kernel's stdout/stderr into: lines of library notices
    (``lib.storage.NOTICE_PREFIX``) and of headless progress bars (``lib.storage.PROGRESS_PREFIX``: epochs, pruning
    steps, checkpoints ..., at most every ``LIB_PROGRESS_INTERVAL`` seconds) go to this process's stderr,
    labelled with the notebook; everything else is dropped."""

    def __init__(self, label: str = ""):
        self.buffer = ""
        self.label = f"{label}: " if label else ""

    def write(self, text: str) -> None:
        from lib.storage import NOTICE_PREFIX, PROGRESS_PREFIX

        self.buffer += text
        *lines, self.buffer = self.buffer.replace("\r", "\n").split("\n")
        for line in lines:
            if line.startswith(NOTICE_PREFIX):
                print(f"lib.stage: {line[len(NOTICE_PREFIX):]}", file=sys.stderr, flush=True)
            elif line.startswith(PROGRESS_PREFIX):
                # nested bars move the cursor up when they close: an escape code, no news
                shown = _ANSI_ESCAPE.sub("", line[len(PROGRESS_PREFIX):]).strip()
                if shown:
                    print(f"lib.stage: {self.label}{shown}", file=sys.stderr, flush=True)
        self.buffer = self.buffer[-10_000:]

    def flush(self) -> None:
        pass


class headless_kernel:
    """Within it, kernels started by this process see ``lib.storage.HEADLESS_ENV``: their bars are plain lines."""

    def __enter__(self):
        from lib.settings import HEADLESS_ENV

        self.name, self.old = HEADLESS_ENV, os.environ.get(HEADLESS_ENV)
        os.environ[HEADLESS_ENV] = "1"

    def __exit__(self, *exc):
        if self.old is None:
            os.environ.pop(self.name, None)
        else:
            os.environ[self.name] = self.old


def start_kernel(notebook: Path, root: Path):
    """The notebook's kernel, started before the checks: while this process checks the parameters (a stage's
    check imports torch, ~3 s a stage), the kernel starts and imports the library modules the notebook imports,
    so the two overlap instead of following each other; papermill then runs the notebook in it. The imports
    are the kernel's start-up lines (``IPKernelApp.exec_lines``): outside the notebook's cells, history and
    execution count, and what the notebook's first cell would import anyway."""
    from jupyter_client.manager import AsyncKernelManager
    from jupyter_core.utils import run_sync

    from lib.pipeline import notebook_imports

    manager = AsyncKernelManager(kernel_name="python3")
    imports = ", ".join(sorted(notebook_imports(notebook)))
    with headless_kernel():  # the kernel inherits the environment it starts in
        run_sync(manager.start_kernel)(cwd=str(root),
                                       extra_arguments=[f"--IPKernelApp.exec_lines=import {imports}"] if imports else [])
    return manager


def stop_kernel(kernel, now: bool = False) -> None:
    """Shut the kernel down: politely once the notebook has run, at once when a check or a cell failed; a kernel
    that died on its own (a crash, out of memory) only leaves its connection file to remove."""
    from jupyter_core.utils import run_sync

    if kernel is None:
        return
    try:
        if run_sync(kernel.is_alive)():
            run_sync(kernel.shutdown_kernel)(now=now)
    finally:
        run_sync(kernel.cleanup_resources)()
