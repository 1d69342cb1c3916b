from dataclasses import dataclass

import pytest

from lib.params import dataclass_from_params
from lib.prune.schedules import PruningPlan
from lib.train import Recipe


@dataclass(frozen=True)
class Block:
    size: int = 1
    names: tuple = ()


def test_known_parameters_build_the_dataclass_and_lists_become_tuples():
    block = dataclass_from_params(Block, {"size": 3, "names": ["a", "b"]}, "block", tuple_fields=("names",))
    assert block == Block(3, ("a", "b"))
    assert dataclass_from_params(Block, None, "block") == Block()
    assert dataclass_from_params(Block, {"names": None}, "block", tuple_fields=("names",)).names == ()


def test_unknown_parameter_is_named_with_the_known_ones():
    with pytest.raises(ValueError, match=r"unknown block parameter\(s\) \['sise'\]; known: \['names', 'size'\]"):
        dataclass_from_params(Block, {"sise": 3}, "block")


def test_recipe_and_plan_use_it():
    assert Recipe.from_dict({"augment": ["flip"]}).augment == ("flip",)
    assert PruningPlan.from_dict({"schedule": "oneshot", "targets": [0.5]}).targets == (0.5,)
    with pytest.raises(ValueError, match="unknown training parameter"):
        Recipe.from_dict({"epoch": 1})
    with pytest.raises(ValueError, match="unknown pruning parameter"):
        PruningPlan.from_dict({"rates": 0.2})


@pytest.mark.parametrize("notebook, old, new", [
    ("notebooks/02_prune.ipynb", "method", "plan_name"), ("notebooks/03_interpret.ipynb", "method", "plan"),
    ("notebooks/03_interpret.ipynb", "methods", "attributions"), ("notebooks/04_discover.ipynb", "methods", "algorithms")])
def test_an_old_parameter_name_fails_naming_its_replacement(notebook, old, new):
    from pathlib import Path

    from lib.stage import ParameterError, check_parameters

    root = Path(__file__).resolve().parents[1]
    with pytest.raises(ParameterError, match=rf"no parameter\(s\) \['{old}'\] \({old}: renamed to {new}\)"):
        check_parameters(root / notebook, {old: None})


def test_a_plan_with_the_old_method_key_fails_naming_pruner():
    with pytest.raises(ValueError, match=r"\['method'\] \(method: renamed to pruner\)"):
        PruningPlan.from_dict({"schedule": "oneshot", "method": "filters", "targets": [0.5]})
