import json
import math

import pytest

from lib import storage


def test_save_json_is_atomic_and_strict_json(tmp_path, monkeypatch):
    path = tmp_path / "m.json"
    storage.save_json(path, {"a": 1})
    monkeypatch.setattr(storage.json, "dumps", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("boom")))
    with pytest.raises(RuntimeError):
        storage.save_json(path, {"a": 2})
    monkeypatch.undo()
    assert json.loads(path.read_text()) == {"a": 1}  # the old file survives a failed write
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    storage.save_json(path, {"nan": math.nan, "inf": math.inf})
    assert json.loads(path.read_text()) == {"nan": None, "inf": None}


def test_interrupted_binary_write_leaves_nothing(tmp_path):
    def broken(handle):
        handle.write(b"half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        storage._atomic_replace(tmp_path / "x.pt", broken)
    assert list(tmp_path.iterdir()) == []
