"""The planted-truth suite: MOT recovers every planted coupling."""

import json

import numpy as np
import pytest

from motalign.__main__ import main
from motalign.planted import SCENARIOS, coupling_recovery, make_planted, run_planted_suite


@pytest.mark.parametrize("seed", [0, 1])
def test_mot_puts_all_mass_on_the_planted_coupling(seed):
    rows = run_planted_suite(seed=seed)
    assert [r["scenario"] for r in rows] == list(SCENARIOS)
    for row in rows:
        assert row["mot_on_truth"] == pytest.approx(1.0), row
        assert row["score_mot"] > 0.7
        assert row["score_mot"] > row["score_random"]


def test_truth_is_a_coupling():
    for name in SCENARIOS:
        pair = make_planted(name, n_layers=4, width=6, n_stimuli=50)
        L, M = pair.truth.shape
        np.testing.assert_allclose(pair.truth.sum(1), 1 / L)
        np.testing.assert_allclose(pair.truth.sum(0), 1 / M)
        assert len(pair.Y_fit) == M and pair.X_fit[0].shape[0] == 40
    assert coupling_recovery(np.eye(3), np.eye(3)) == 1.0
    with pytest.raises(ValueError, match="unknown planted scenario"):
        make_planted("nope")


def test_command_line_writes_json(tmp_path, capsys):
    out = tmp_path / "planted.json"
    assert main(["planted", "--seed", "0", "--json", str(out)]) == 0
    assert "drifting_hierarchy" in capsys.readouterr().out
    assert len(json.loads(out.read_text())) == len(SCENARIOS)
