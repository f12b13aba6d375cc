"""Workflow jobs import only what they use (issue 15): MOT jobs import POT but neither
scikit-learn nor networkx (motalign._pot, motalign._estimator); light jobs import neither
POT nor scikit-learn; figures need no seaborn.  Plus the estimator protocol that replaces
scikit-learn's base class for MOT and ThreeLevelMOT."""

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.utils import check_random_state as sklearn_check_random_state

from motalign import MOT, ThreeLevelMOT
from motalign._estimator import check_random_state

HEAVY = ("ot", "sklearn", "networkx", "pandas", "torch", "transformers", "matplotlib", "seaborn")


def imported_after(code: str) -> dict:
    """Run ``code`` in a fresh interpreter; which HEAVY modules it imported."""
    probe = textwrap.dedent(code) + textwrap.dedent(f"""
        import json, sys
        print(json.dumps({{name: name in sys.modules for name in {HEAVY!r}}}))
    """)
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def pair_files(tmp_path_factory):
    from motalign.io.store import write_activations
    from motalign.workflow.data_jobs import make_split

    root = tmp_path_factory.mktemp("pair")
    rng = np.random.default_rng(0)
    ids = [f"s{i}" for i in range(40)]
    write_activations(root / "x.npz", {f"x{i}": rng.standard_normal((40, w)) for i, w in enumerate([5, 8])},
                      stimulus_ids=ids)
    write_activations(root / "y.npz", {f"y{i}": rng.standard_normal((40, w)) for i, w in enumerate([6, 4, 7])},
                      stimulus_ids=ids)
    np.savez(root / "stim.npz", ids=np.array(ids))
    make_split(root / "stim.npz", root / "split.npz", seed=0, fit_fraction=0.75)
    return root


@pytest.mark.parametrize("rotation", [False, True])
def test_an_outer_job_solves_ot_without_scikit_learn(pair_files, rotation):
    root = pair_files
    seen = imported_after(f"""
        from motalign.workflow.alignment_jobs import outer_alignment
        result = outer_alignment("{root}/x.npz", "{root}/y.npz", "{root}/split.npz", [],
                                 "{root}/o{int(rotation)}.npz", "{root}/o{int(rotation)}.json",
                                 rotation={rotation}, seed=0)
        assert 0 < result["objective"] < 2
    """)
    assert seen["ot"]
    assert not any(seen[name] for name in ("sklearn", "networkx", "pandas", "torch", "matplotlib")), seen


def test_light_jobs_import_neither_pot_nor_scikit_learn(pair_files):
    root = pair_files
    seen = imported_after(f"""
        from motalign.workflow.data_jobs import make_split
        from motalign.workflow.reporting import build_table
        from motalign.workflow.alignment_jobs import collect_scores
        from motalign.io.store import load_network
        make_split("{root}/stim.npz", "{root}/split2.npz", seed=1, fit_fraction=0.5)
        load_network("{root}/x.npz")
    """)
    assert not any(seen.values()), seen


def test_figures_need_no_seaborn(tmp_path):
    seen = imported_after(f"""
        import numpy as np
        from motalign.workflow.reporting import Panel, plot_panels
        panel = Panel("t", np.full((3, 4), 1 / 12), ["a", "b", "c"], ["w", "x", "y", "z"], "X", "Y")
        plot_panels([[panel, panel]], "{tmp_path}/f.pdf", "{tmp_path}/f.png", title="two panels")
    """)
    assert seen["matplotlib"] and not seen["seaborn"] and not seen["pandas"]
    assert (tmp_path / "f.pdf").stat().st_size > 0 and (tmp_path / "f.png").stat().st_size > 0


def test_lean_pot_leaves_scikit_learn_importable_afterwards():
    seen = imported_after("""
        import numpy as np
        from motalign._pot import import_pot
        ot = import_pot(lean=True)
        assert ot.lowrank.sklearn_import is False  # POT took its path for installs without it
        plan = ot.emd(np.full(3, 1 / 3), np.full(2, 1 / 2), np.array([[0.0, 1], [1, 0], [0.5, 0.5]]))
        assert abs(plan.sum() - 1) < 1e-12
        assert import_pot(lean=True) is ot  # imported once
        import sklearn.cluster  # hidden only while POT was imported
    """)
    assert seen["ot"] and seen["sklearn"]


def test_pot_imported_first_is_left_as_it_is():
    imported_after("""
        import ot
        from motalign._pot import import_pot
        assert import_pot(lean=True) is ot and ot.lowrank.sklearn_import is True
    """)


@pytest.mark.parametrize("estimator", [MOT(rotation=True, max_iter=3, random_state=4), ThreeLevelMOT(tol=1e-3)])
def test_estimators_follow_the_scikit_learn_protocol(estimator):
    params = estimator.get_params()
    copy = clone(estimator)
    assert copy is not estimator and copy.get_params() == params
    assert copy.set_params(tol=0.5) is copy and copy.tol == 0.5 and estimator.tol != 0.5
    with pytest.raises(ValueError, match="Invalid parameter 'tolerance'"):
        copy.set_params(tolerance=1)
    shown = repr(estimator)
    assert shown.startswith(type(estimator).__name__ + "(") and "solver" not in shown  # defaults hidden


def test_unfitted_mot_raises_scikit_learns_error():
    with pytest.raises(NotFittedError, match="MOT instance is not fitted yet"):
        MOT().neuron_coupling(0, 0)


@pytest.mark.parametrize("seed", [0, 7, 2**31 - 1])
def test_random_state_follows_scikit_learns_rule(seed):
    ours, theirs = check_random_state(seed), sklearn_check_random_state(seed)
    np.testing.assert_array_equal(ours.permutation(20), theirs.permutation(20))
    generator = np.random.default_rng(seed)
    assert check_random_state(generator) is generator
    assert check_random_state(None) is np.random.mtrand._rand
    with pytest.raises(ValueError, match="random_state must be"):
        check_random_state("zero")
