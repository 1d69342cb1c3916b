"""JupyterLab in a real browser, as a user meets it: `make lab`'s server (tests/lab_server.py: the Makefile's
command, in a git copy of the checkout, with `make kernel`'s kernel) driven by headless Chromium through Selenium.
It opens notebooks/00_data.ipynb, runs every cell, saves without editing (git and DVC must see nothing), then
types a line into the last code cell, saves with Ctrl+S (the twin must have it, git must name the notebook and its
twin, `dvc status` the `data` stage). Prints each check and writes screenshots.

    make browser-check          # needs: apt-get install chromium chromium-driver; pip install -e '.[browser]'

Not part of `make test` (see docs/jupyterlab.md): a browser is not in the project's dependencies.
"""

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from lab_server import dvc_status, git, lab_server, stages_naming  # noqa: E402

NOTEBOOK = "00_data.ipynb"
TWIN = "notebooks/00_data.py"
LINE = "print('typed in the browser')"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--window-size=1400,1000"]


def browser(profile: Path, chromium: str, chromedriver: str):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in [*CHROMIUM_FLAGS, f"--user-data-dir={profile}"]:
        options.add_argument(flag)
    return webdriver.Chrome(options=options, service=Service(executable_path=chromedriver))


def wait(driver, what: str, script: str, timeout: float = 120):
    """Poll a JavaScript expression until it is truthy; fail naming WHAT."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = driver.execute_script(f"try {{ return {script}; }} catch (e) {{ return null; }}")
        if value:
            return value
        time.sleep(0.5)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")


PANEL = "window.jupyterapp.shell.currentWidget"
IDLE = f"{PANEL}.context.sessionContext.session.kernel.status === 'idle'"
SAVED = f"!{PANEL}.context.model.dirty"


def check(ok: bool, text: str, failures: list) -> None:
    print(("ok    " if ok else "FAIL  ") + text, flush=True)
    if not ok:
        failures.append(text)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "build/browser-check", help="screenshots go here")
    parser.add_argument("--chromium", default=shutil.which("chromium") or "/usr/bin/chromium")
    parser.add_argument("--chromedriver", default=shutil.which("chromedriver") or "/usr/bin/chromedriver")
    args = parser.parse_args()
    for program in (args.chromium, args.chromedriver):
        if not Path(program).is_file():
            sys.exit(f"{program} not found: apt-get install chromium chromium-driver (or pass --chromium/--chromedriver)")
    try:
        import selenium  # noqa: F401
    except ImportError:
        sys.exit("selenium is not installed: pip install -e '.[browser]'")
    args.out.mkdir(parents=True, exist_ok=True)
    failures = []
    with tempfile.TemporaryDirectory() as scratch, \
            lab_server(Path(scratch), with_kernel=True, extra_flags=["--LabApp.expose_app_in_browser=True"]) as lab:
        from selenium.webdriver.common.by import By
        from selenium.webdriver.common.keys import Keys

        print(f"JupyterLab from `make lab`'s command in {lab.repo}", flush=True)
        driver = browser(Path(scratch) / "chromium-profile", args.chromium, args.chromedriver)
        try:
            driver.get(f"{lab.url}/lab/tree/{NOTEBOOK}?token={lab.token}")
            kernel = wait(driver, "the notebook and its kernel", f"{IDLE} && {PANEL}.context.sessionContext.kernelDisplayName")
            check(kernel == "Python (pruning-beyond-accuracy)", f"{NOTEBOOK} opens with the kernel {kernel!r}", failures)
            twin_before, notebook_before = (lab.repo / TWIN).read_bytes(), (lab.repo / "notebooks" / NOTEBOOK).read_bytes()

            started = time.monotonic()
            driver.execute_script("window.jupyterapp.commands.execute('notebook:run-all-cells')")
            code_cells = f"{PANEL}.content.widgets.filter(c => c.model.type === 'code')"
            wait(driver, "every cell to run", f"{code_cells}.every(c => c.model.executionCount) && {IDLE}", timeout=300)
            outputs = driver.execute_script(f"return {code_cells}.reduce((n, c) => n + c.model.outputs.length, 0)")
            errors = driver.find_elements(By.CSS_SELECTOR, ".jp-RenderedText[data-mime-type='application/vnd.jupyter.stderr'] .ansi-red-fg")
            check(outputs > 0 and not errors, f"Run All: {outputs} outputs, no error, {time.monotonic() - started:.0f} s", failures)
            driver.save_screenshot(str(args.out / "1-ran.png"))

            driver.execute_script("window.jupyterapp.commands.execute('docmanager:save')")
            wait(driver, "the save", SAVED)
            time.sleep(1)
            check((lab.repo / TWIN).read_bytes() == twin_before
                  and (lab.repo / "notebooks" / NOTEBOOK).read_bytes() == notebook_before,
                  "saved after the run without an edit: the .ipynb and its twin are byte for byte as before", failures)
            status = git(lab.repo, "status", "--porcelain")
            check(status == "", f"git status is clean ({status.strip() or 'nothing'})", failures)
            untouched = dvc_status(lab.repo)
            check(not stages_naming(untouched, TWIN), "dvc status names no stage for the twin", failures)

            editor = driver.find_elements(By.CSS_SELECTOR, ".jp-Notebook .jp-CodeCell .cm-content")[-1]
            editor.click()
            editor.send_keys(Keys.CONTROL, Keys.END)
            editor.send_keys(Keys.ENTER, LINE)
            editor.send_keys(Keys.CONTROL, Keys.ENTER)  # runs the edited cell in place (no new cell)
            wait(driver, "the edited cell to run", IDLE)
            driver.find_element(By.CSS_SELECTOR, "body").send_keys(Keys.CONTROL, "s")
            wait(driver, "Ctrl+S", SAVED)
            time.sleep(1)
            driver.save_screenshot(str(args.out / "2-edited-and-saved.png"))
            added = sorted(set((lab.repo / TWIN).read_text().splitlines()) - set(twin_before.decode().splitlines()))
            check(added == [LINE], f"the twin {TWIN} gained exactly the typed line: {added}", failures)
            saved = (lab.repo / "notebooks" / NOTEBOOK).read_text()
            check(LINE in saved and '"output_type"' not in saved, "the .ipynb has the line and no outputs", failures)
            status = sorted(git(lab.repo, "status", "--porcelain").splitlines())
            check(status == [f" M notebooks/{NOTEBOOK}", f" M {TWIN}"], f"git status names the pair: {status}", failures)
            stale = stages_naming(dvc_status(lab.repo), TWIN)
            check(stale == {"data"}, f"dvc status names the stage that runs it: {sorted(stale)}", failures)
        finally:
            driver.quit()
    print(f"screenshots: {args.out}/1-ran.png, {args.out}/2-edited-and-saved.png")
    print(f"browser check: {'FAILED: ' + '; '.join(failures) if failures else 'every check passed'}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
