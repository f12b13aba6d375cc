"""benchmarks/fit_time.py: ``--repeat`` times each fit N times and reports the best."""

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


def load_fit_time():
    spec = importlib.util.spec_from_file_location("fit_time", ROOT / "benchmarks" / "fit_time.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["fit_time"] = module
    spec.loader.exec_module(module)
    return module


def test_repeat_reports_the_best_of_all_times(tmp_path, capsys):
    out = tmp_path / "fit_time.json"
    result = load_fit_time().main(["--layers", "2", "--width", "12", "--stimuli", "150",
                                   "--repeat", "2", "--out", str(out)])
    saved = json.loads(out.read_text())
    assert saved == json.loads(json.dumps(result)) and saved["repeat"] == 2
    assert [row["method"] for row in saved["rows"]] == ["MOT", "MOT+R"]
    for row in saved["rows"]:
        assert len(row["times"]) == 2 and row["seconds"] == min(row["times"]) > 0
        assert np.isfinite(row["objective"]) and np.shape(row["inner_cost"]) == (2, 2)
    assert saved["rows"][1]["mean_n_iter"] >= 1 and saved["rows"][0]["mean_n_iter"] is None
    assert "best of 2" in capsys.readouterr().out


def test_repeat_must_be_positive(tmp_path):
    with pytest.raises(SystemExit):
        load_fit_time().main(["--repeat", "0", "--out", str(tmp_path / "x.json")])
