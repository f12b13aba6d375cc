"""`snakemake --profile slurm` (slurm/config.yaml) on a real SLURM cluster (issue #6).

The test config is run twice at once: through the profile, with every remote job an sbatch
job, and locally (`--cores 2`).  The scores and tables of both runs must agree.  The paper's
DAG is planned through the profile, offline.

Needs snakemake-executor-plugin-slurm, and for the cluster run a SLURM whose node is up:
`scripts/setup_slurm.sh` sets up one on this machine.  Without them these tests are skipped;
with MOTALIGN_SLURM_TESTS=1 they fail instead.
"""

import csv
import math
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

# all of them need a SLURM cluster or its executor plugin, and the cluster run takes minutes
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
PROFILE = ROOT / "slurm"
TEST_CONFIG = ROOT / "config" / "test.yaml"
PAPER_CONFIG = ROOT / "config" / "paper.yaml"
FORCED = os.environ.get("MOTALIGN_SLURM_TESTS") == "1"
RUN_TIMEOUT_S = 1500
UP_STATES = ("idle", "mixed", "allocated", "completing")
SUBMITTED = re.compile(r"Job (\S+) has been submitted with SLURM jobid (\d+) \(log: (.+?)\)\.?$", re.M)


def unavailable(reason):
    if FORCED:
        pytest.fail(f"MOTALIGN_SLURM_TESTS=1, but {reason}")
    pytest.skip(reason)


def require_plugin():
    for module in ("snakemake", "snakemake_executor_plugin_slurm", "yte"):
        try:
            __import__(module)
        except ImportError:
            unavailable(f"{module} is not installed "
                        "(python -m pip install snakemake-executor-plugin-slurm)")


def profile_settings():
    """slurm/config.yaml as Snakemake reads it (YTE template evaluated)."""
    import yte

    with open(PROFILE / "config.yaml") as handle:
        return yte.process_yaml(handle, require_use_yte=True)


def up_nodes():
    """[(cpus, memory MB)] of the nodes that can run jobs; raises RuntimeError if SLURM is
    missing or down."""
    for command in ("sbatch", "sinfo", "squeue", "scontrol"):
        if shutil.which(command) is None:
            raise RuntimeError(f"`{command}` is not on PATH (scripts/setup_slurm.sh installs SLURM)")
    try:
        result = subprocess.run(["sinfo", "-h", "-N", "-o", "%T %c %m"], capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired:
        raise RuntimeError("sinfo did not answer within 30 s") from None
    if result.returncode != 0:
        raise RuntimeError(f"sinfo failed (is slurmctld running?): {result.stderr.strip()}")
    nodes = []
    for line in result.stdout.splitlines():
        state, cpus, memory = line.split()
        if state.rstrip("*~#!%$@^-+").lower() in UP_STATES:
            nodes.append((int(cpus), int(memory.rstrip("+"))))
    if not nodes:
        raise RuntimeError(f"no SLURM node is up (sinfo: {result.stdout.strip() or 'no nodes'})")
    return nodes


@pytest.fixture(scope="module")
def cluster():
    require_plugin()
    try:
        nodes = up_nodes()
    except RuntimeError as error:
        unavailable(str(error))
    return {"cpus": max(c for c, _ in nodes), "mem_mb": max(m for _, m in nodes)}


def snakemake_command(workdir, *args, configfile=TEST_CONFIG):
    # targets and options go before --configfile, which takes several values
    return [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "-d", str(workdir),
            *args, "--configfile", str(configfile)]


def start(command, log_path):
    log = open(log_path, "w")
    process = subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, text=True,
                               env={**os.environ, "PYTHONUNBUFFERED": "1"}, start_new_session=True)
    log.close()
    return process


def finish(process, log_path, what, timeout):
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        # Ctrl-C: Snakemake cancels its SLURM jobs (scancel) before it exits
        os.killpg(process.pid, signal.SIGINT)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        pytest.fail(f"{what} did not finish within {timeout} s:\n{tail(log_path)}")
    if process.returncode != 0:
        pytest.fail(f"{what} failed (exit {process.returncode}):\n{tail(log_path)}")
    return Path(log_path).read_text()


def tail(path, n=8000):
    return Path(path).read_text()[-n:]


@pytest.fixture(scope="module")
def runs(cluster, tmp_path_factory, test_config_run):
    """The test config run through the profile on SLURM, and the session's local run of the
    same config (tests/conftest.py) to compare it with."""
    base = tmp_path_factory.mktemp("slurm")
    slurm_dir = base / "slurm"
    slurm_dir.mkdir()
    # The rules ask for up to 32 GB (extraction); a job asks for at most the node's memory.
    # --resources replaces the profile's own `resources:`, so those are passed again.
    resources = {**profile_settings().get("resources", {}), "mem_mb": cluster["mem_mb"]}
    slurm = start(
        snakemake_command(slurm_dir, "--profile", "slurm", "--slurm-keep-successful-logs",
                          "--resources", *(f"{k}={v}" for k, v in resources.items())),
        base / "slurm.log",
    )
    slurm_log = finish(slurm, base / "slurm.log", "snakemake --profile slurm", RUN_TIMEOUT_S)
    return {"local": test_config_run, "slurm": slurm_dir, "slurm_log": slurm_log}


def read_rows(path):
    with open(path, newline="") as handle:
        return list(csv.reader(handle))


def assert_same_csv(path_a, path_b, tol=1e-9):
    rows_a, rows_b = read_rows(path_a), read_rows(path_b)
    assert len(rows_a) == len(rows_b), f"{path_b.name}: {len(rows_b)} rows, local run {len(rows_a)}"
    assert rows_a[0] == rows_b[0], f"{path_b.name}: columns differ"
    for number, (row_a, row_b) in enumerate(zip(rows_a, rows_b)):
        assert len(row_a) == len(row_b), f"{path_b.name} row {number}"
        for column, a, b in zip(rows_a[0], row_a, row_b):
            if a == b:
                continue
            try:
                x, y = float(a), float(b)
            except ValueError:
                raise AssertionError(f"{path_b.name} row {number} {column}: {b!r} != {a!r}") from None
            assert (math.isnan(x) and math.isnan(y)) or abs(x - y) <= tol, (
                f"{path_b.name} row {number} {column}: SLURM {y!r}, local {x!r}")


@pytest.mark.parametrize("folder", ["scores", "tables"])
def test_slurm_run_equals_local_run(runs, folder):
    local = sorted((runs["local"] / "results" / folder).glob("*.csv"))
    slurm = sorted((runs["slurm"] / "results" / folder).glob("*.csv"))
    assert local, f"the local run wrote no results/{folder}/*.csv"
    assert [p.name for p in slurm] == [p.name for p in local]
    for a, b in zip(local, slurm):
        assert_same_csv(a, b)


def submissions(runs):
    """[(snakemake job id, SLURM job id, SLURM log)] of every sbatch submission."""
    return [(m.group(1), m.group(2), Path(m.group(3))) for m in SUBMITTED.finditer(runs["slurm_log"])]


def slurm_states(job_ids):
    """{SLURM job id: state} from accounting (sacct) or, without it, from the job completion
    log (JobCompType=jobcomp/filetxt, as scripts/setup_slurm.sh sets up); None if neither."""
    result = subprocess.run(["sacct", "-X", "-n", "-P", "-o", "JobIDRaw,State", "-j", ",".join(job_ids)],
                            capture_output=True, text=True)
    if result.returncode == 0 and result.stdout.strip():
        return dict(line.split("|")[:2] for line in result.stdout.splitlines() if "|" in line)
    config = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True).stdout
    settings = dict(re.findall(r"^(\w+)\s*=\s*(.*?)\s*$", config, re.M))
    location = settings.get("JobCompLoc", "")
    if settings.get("JobCompType") != "jobcomp/filetxt" or not os.access(location, os.R_OK):
        return None
    states = {}
    with open(location) as handle:
        for line in handle:
            fields = dict(re.findall(r"(\w+)=(\S*)", line))
            if fields.get("JobId") in job_ids:
                states[fields["JobId"]] = fields.get("JobState")
    return states


def test_every_remote_job_ran_as_a_completed_slurm_job(runs):
    submitted = submissions(runs)
    assert len(submitted) >= 20, f"only {len(submitted)} SLURM submissions:\n{runs['slurm_log'][-4000:]}"
    job_ids = [slurm_id for _, slurm_id, _ in submitted]
    assert len(set(job_ids)) == len(job_ids)
    # each job's SLURM log (kept by --slurm-keep-successful-logs) shows it ran on a node
    for _, slurm_id, log in submitted:
        assert log.is_file(), f"no SLURM log {log}"
        text = log.read_text()
        assert "Building DAG of jobs" in text and "Finished jobid" in text, f"SLURM job {slurm_id}: {text[-2000:]}"
    rules = {log.parent.name if log.parent.name.startswith(("rule_", "group_")) else log.parent.parent.name
             for _, _, log in submitted}
    for rule in ("rule_train_tiny_model", "rule_extract_activations", "rule_outer_ot", "rule_figure"):
        assert any(r.startswith(rule) for r in rules), f"{rule} was not submitted: {sorted(rules)}"
    states = slurm_states(job_ids)
    if states is not None:
        assert set(states) == set(job_ids), f"unknown to SLURM: {sorted(set(job_ids) - set(states))}"
        assert set(states.values()) == {"COMPLETED"}, states


def test_local_rules_ran_on_the_submit_host(runs):
    """collect_scores and the tables are localrules: no sbatch for them."""
    logs = [str(log) for _, _, log in submissions(runs)]
    assert not [log for log in logs if "rule_collect_scores" in log or "rule_table" in log]
    assert (runs["slurm"] / "results" / "tables" / "table1.csv").is_file()


def test_inner_ot_shards_went_out_in_groups(runs):
    shards = list((runs["slurm"] / "results" / "inner").rglob("shard*.npz"))
    groups = [log for _, _, log in submissions(runs) if "group_inner_ot" in str(log)]
    lone = [log for _, _, log in submissions(runs) if "rule_inner_ot" in str(log)]
    components = profile_settings()["group-components"]["inner_ot"]
    assert len(shards) == 22  # config/test.yaml
    assert not lone, "inner_ot jobs were submitted one by one"
    assert len(groups) == math.ceil(len(shards) / components) < len(shards)
    # every shard of a group ran inside that group's SLURM job
    in_groups = sum(log.read_text().count("Finished jobid") for log in groups)
    assert in_groups >= len(shards)


def test_paper_dag_plans_through_the_profile_with_gpus_for_extraction(tmp_path):
    require_plugin()
    result = subprocess.run(snakemake_command(tmp_path, "-n", "--profile", "slurm", configfile=PAPER_CONFIG),
                            cwd=ROOT, capture_output=True, text=True, timeout=600)
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-6000:]
    table = out.split("Job stats:", 1)[1].split("\n\n", 1)[0]
    jobs = {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M)}
    assert jobs["extract_revision"] == 308 and jobs["inner_ot"] > 1000
    # every extraction job asks for the GPU of config/paper.yaml (extraction.gpus: 1)
    blocks = re.split(r"\n(?=\s*\[[^\]]+\]\n\s*rule )", out)
    extraction = [b for b in blocks if re.search(r"rule extract_(activations|revision):", b)]
    assert len(extraction) == jobs["extract_activations"] + jobs["extract_revision"]
    for block in extraction:
        resources = re.search(r"resources: (.*)", block).group(1)
        assert re.search(r"\bgpu=1\b", resources), block
    # the inner-OT shards are planned as groups of group-components
    components = profile_settings()["group-components"]["inner_ot"]
    assert out.count("Group job inner_ot") == math.ceil(jobs["inner_ot"] / components)
