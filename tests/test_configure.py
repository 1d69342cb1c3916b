"""Each analysis stage has one check and one parse: its check_stage calls its configure, which returns the typed
configuration the notebook runs; values that used to fail only after compute are refused by it."""

from pathlib import Path

import pytest

from lib.stage import notebook_parameters

ROOT = Path(__file__).resolve().parents[1]

STAGES = {"03_interpret": ("lib.interpret.run", "InterpretRun"), "04_discover": ("lib.discover.run", "DiscoverRun"),
          "05_align": ("lib.align.run", "AlignRun"), "06_mis": ("lib.mis.run", "MISRun"),
          "08_forget": ("lib.forget.run", "ForgetRun")}


@pytest.mark.parametrize("notebook", sorted(STAGES))
def test_check_stage_is_configure_before_the_files_exist(notebook, monkeypatch):
    import importlib

    module, kind = STAGES[notebook]
    run = importlib.import_module(module)
    made = []
    configure = run.configure
    monkeypatch.setattr(run, "configure", lambda *a, **k: made.append(configure(*a, **k)) or made[-1])
    assert isinstance(run.check_stage(notebook_parameters(ROOT / "notebooks" / f"{notebook}.ipynb")), list)
    assert len(made) == 1 and type(made[0]).__name__ == kind


@pytest.mark.parametrize("notebook, change, message", [
    ("05_align", {"accuracy_over": "every_image"}, "unknown accuracy_over 'every_image'"),
    ("05_align", {"datasets": ["sketch"]}, "evaluation splits"),
    ("06_mis", {"aggregation": "mode"}, "unknown aggregation 'mode'"),
    ("06_mis", {"alpha": 0}, "alpha (the sigmoid's scale) must be positive"),
])
def test_values_that_failed_after_compute_are_refused_by_the_check(notebook, change, message):
    import importlib

    run = importlib.import_module(STAGES[notebook][0])
    defaults = notebook_parameters(ROOT / "notebooks" / f"{notebook}.ipynb")
    with pytest.raises(ValueError) as error:
        run.check_stage({**defaults, **change})
    assert message in str(error.value)
