"""The environment switches: read in lib.settings alone, each with its documented default."""

import ast
from pathlib import Path

from lib import settings

ROOT = Path(__file__).resolve().parent.parent


def _reads_environment(path: Path) -> list[int]:
    """Lines of ``path`` that read ``os.environ`` or call ``os.getenv``."""
    lines = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Attribute) and node.attr in ("environ", "getenv") and getattr(node.value, "id", "") == "os":
            lines.append(node.lineno)
    return lines


def test_only_lib_settings_reads_the_environment():
    """lib.kernel sets LIB_STAGE_HEADLESS for the kernels it starts (and restores it): the one other use."""
    found = {str(p.relative_to(ROOT)): _reads_environment(p) for p in sorted((ROOT / "lib").rglob("*.py"))}
    found = {path: lines for path, lines in found.items() if lines and path not in ("lib/settings.py", "lib/kernel.py")}
    assert not found, f"environment read outside lib/settings.py (add a function and a row there): {found}"


def test_every_switch_has_a_row_in_the_table():
    table = settings.__doc__
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "DVC_STAGE", settings.HEADLESS_ENV, settings.PROGRESS_INTERVAL_ENV,
                 "DREAMSIM_WEIGHTS", settings.SHARED_DATA_ENV):
        assert f"``{name}``" in table, name


def test_defaults_and_overrides(monkeypatch, tmp_path):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "DVC_STAGE", settings.HEADLESS_ENV, settings.PROGRESS_INTERVAL_ENV,
                 "DREAMSIM_WEIGHTS", settings.SHARED_DATA_ENV):
        monkeypatch.delenv(name, raising=False)
    assert (settings.rank(), settings.world_size(), settings.local_rank()) == (0, 1, 0)
    assert not settings.under_dvc() and not settings.headless() and settings.progress_interval() == 30
    assert settings.dreamsim_weights() is None
    assert settings.shared_data(tmp_path / "repo") == (tmp_path / "shared" / "data").resolve()
    assert settings.shared_data() == (ROOT.parent / "shared" / "data").resolve()
    monkeypatch.setenv(settings.SHARED_DATA_ENV, str(tmp_path / "elsewhere"))
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("DVC_STAGE", "train@cnn-0")
    assert settings.shared_data(tmp_path / "repo") == tmp_path / "elsewhere"
    assert settings.rank() == 1 and settings.under_dvc()


def test_a_non_zero_rank_writes_nothing(monkeypatch, tmp_path):
    from lib import storage

    monkeypatch.setenv("RANK", "1")
    storage.save_json(tmp_path / "x.json", {"a": 1})
    assert not (tmp_path / "x.json").exists()
