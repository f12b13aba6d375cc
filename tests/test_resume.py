"""Interrupted runs resume with the same command, and finished results moved to another
checkout are not re-planned (issue #14).

Each test runs a real, small workflow (two simulated NSD subjects, two regions each, four
inner-OT shards; its experiment is in no table or figure, so no report jobs).  The reference
is one uninterrupted run in a copy of the repository, run as the README runs it: from the
checkout's root, without -s or -d.  What makes resuming work is profiles/default/config.yaml
(rerun-incomplete, and the code trigger replaced by the `code` param of every script rule);
docs/workflow.md#re-running-resuming-logs describes it.
"""

import base64
import csv
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
#: what a checkout needs to plan and run the workflow (the scripts import motalign)
CHECKOUT_FILES = ("Snakefile", "profiles", "workflow", "envs", "config")
CONFIG = {
    "results": "results",
    "seeds": [0],
    "fit_fraction": 0.8,
    "shard_size": 1,
    "mot": {"max_iter": 30, "tol": 1.0e-7},
    "datasets": {"nsd_shared": {"kind": "images", "source": "nsd"}},
    "nsd": {
        "source": "simulated",
        "regions": ["V1", "V2"],
        "simulation": {"n_images": 100, "n_shared": 60, "n_specific": 4, "n_sessions": 2,
                       "volume_shape": [10, 10, 10], "seed": 0},
    },
    "brains": {"subjA": {"subject": "subj01"}, "subjB": {"subject": "subj02"}},
    "experiments": {"resume": {"dataset": "nsd_shared", "methods": ["mot"], "pairs": [["subjA", "subjB"]]}},
}
SCORES = Path("results", "scores", "resume.csv")
SHARDS = Path("results", "inner", "resume", "mot", "subjA~subjB", "seed0")
ENV = {**os.environ, "PYTHONUNBUFFERED": "1",
       "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT / "src"), os.environ.get("PYTHONPATH")) if p)}


def snakemake(config, *args, snakefile=None, workdir=None):
    """The README's command (`snakemake --cores all`, on 2 cores, with --configfile);
    ``snakefile`` and ``workdir`` add -s and -d."""
    command = [sys.executable, "-m", "snakemake", "--cores", "2", "--configfile", str(config), *args]
    if snakefile:
        command += ["-s", str(snakefile)]
    if workdir:
        command += ["-d", str(workdir)]
    return command


def run(command, cwd):
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, env=ENV)
    return result.returncode, result.stdout + result.stderr


def copy_checkout(source, dest):
    """A copy of the repository's workflow files with fresh mtimes, as `git clone` makes."""
    for name in CHECKOUT_FILES:
        if (source / name).is_dir():
            shutil.copytree(source / name, dest / name, copy_function=shutil.copy,
                            ignore=shutil.ignore_patterns("__pycache__"))
        else:
            dest.mkdir(parents=True, exist_ok=True)
            shutil.copy(source / name, dest / name)


def record(workdir, kind, path):
    """Snakemake's record of an output (kind: "metadata" or "incomplete"): a file named by
    the urlsafe base64 of the output's path relative to the working directory."""
    return workdir / ".snakemake" / kind / base64.urlsafe_b64encode(str(path).encode()).decode()


def finished_outputs(workdir):
    """{output: (inode, mtime)} of every output Snakemake recorded as finished."""
    outputs = {}
    for path in (workdir / "results").rglob("*"):
        key = path.relative_to(workdir)
        if record(workdir, "metadata", key).exists() and not record(workdir, "incomplete", key).exists():
            try:
                stat = path.stat()
            except FileNotFoundError:  # a job's temporary file, renamed while we walked
                continue
            outputs[key] = (stat.st_ino, stat.st_mtime_ns)
    return outputs


def running_shard(workdir):
    """A shard whose script is running: marked incomplete, its log opened, no output yet."""
    for marker in (workdir / ".snakemake" / "incomplete").glob("*"):
        path = Path(base64.urlsafe_b64decode(marker.name).decode())
        if path.parent != SHARDS:  # another job's output (running at the same time)
            continue
        log = Path("results", "logs", "inner_ot", path.relative_to("results", "inner")).with_suffix(".log")
        if (workdir / log).exists() and not (workdir / path).exists():
            return path
    return None


def _default_sigint():
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def interrupt(command, workdir, sig, ready):
    """Start ``command``, send ``sig`` to Snakemake's process once ``ready(workdir)``, and
    wait until its jobs, which may outlive it, have ended too.  Returns (exit code, log,
    what ``ready`` returned).  Snakemake starts with SIGINT at its default: a test run that
    was itself started in the background of a non-interactive shell inherits SIGINT
    ignored, and Python then installs no KeyboardInterrupt handler (seen in CI: the
    interrupt did nothing and the run finished)."""
    log_path = workdir.with_suffix(".log")
    with open(log_path, "w") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=ENV, start_new_session=True,
                                   preexec_fn=_default_sigint)
        try:
            while not (found := ready(workdir)):
                assert process.poll() is None, f"the run ended before it could be interrupted:\n{log_path.read_text()}"
                time.sleep(0.05)
            process.send_signal(sig)
            code = process.wait()
            while True:  # the process group: the jobs Snakemake had started
                try:
                    os.killpg(process.pid, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.1)
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
    return code, log_path.read_text(), found


def read_table(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """(config file, checkout) of one uninterrupted run, run in the checkout like the README."""
    pytest.importorskip("snakemake")
    base = tmp_path_factory.mktemp("resume")
    config = base / "resume.yaml"
    config.write_text(yaml.safe_dump(CONFIG))
    checkout = base / "checkout1"
    copy_checkout(ROOT, checkout)
    code, log = run(snakemake(config), cwd=checkout)
    assert code == 0, log
    return config, checkout


def test_results_moved_to_another_checkout_are_not_replanned(reference, tmp_path):
    """results/ and .snakemake/metadata/, copied with their mtimes to a new checkout of the
    same workflow (whose scripts are all newer than every output), need no job; an edited
    script re-runs its rule's jobs (params changed: the script's digest)."""
    config, checkout = reference
    other = tmp_path / "checkout2"
    copy_checkout(checkout, other)
    shutil.copytree(checkout / "results", other / "results", symlinks=True)
    shutil.copytree(checkout / ".snakemake" / "metadata", other / ".snakemake" / "metadata")
    script = other / "workflow" / "scripts" / "collect_scores.py"
    assert script.stat().st_mtime > (other / SCORES).stat().st_mtime

    code, log = run(snakemake(config, "-n"), cwd=other)
    assert code == 0 and "Nothing to be done" in log, log

    script.write_text(script.read_text() + "# edited\n")
    code, log = run(snakemake(config, "-n"), cwd=other)
    assert code == 0, log
    jobs = [line.split()[-1].rstrip(":") for line in log.splitlines() if line.startswith(("rule ", "localrule "))]
    assert sorted(jobs) == ["all", "collect_scores"], log
    assert "Params have changed since last execution" in log, log


def check_resumed(workdir, reference_checkout, before):
    """Outputs recorded as finished before the interruption were kept, and the scores equal
    the uninterrupted run's."""
    after = finished_outputs(workdir)
    changed = [str(p) for p, stamp in before.items() if after.get(p) != stamp]
    assert not changed, f"recomputed although finished before the interruption: {changed}"
    assert read_table(workdir / SCORES) == read_table(reference_checkout / SCORES)


def test_same_command_resumes_after_ctrl_c(reference, tmp_path):
    """SIGINT to Snakemake once a shard is finished; the same command then finishes the run."""
    config, checkout = reference
    workdir = tmp_path / "work"
    command = snakemake(config, snakefile=ROOT / "Snakefile", workdir=workdir)

    code, log, _ = interrupt(command, workdir, signal.SIGINT,
                             lambda w: any(p.parent == SHARDS for p in finished_outputs(w)))
    assert code != 0, log
    before = finished_outputs(workdir)

    code, log = run(command, cwd=tmp_path)
    assert code == 0, log
    check_resumed(workdir, checkout, before)


def test_same_command_resumes_after_kill_and_unlock(reference, tmp_path):
    """SIGKILL to Snakemake while a shard runs: the shard's job finishes its output, which
    stays marked incomplete, and the lock stays.  `--unlock` with the same arguments, then
    the same command, finishes the run."""
    config, checkout = reference
    workdir = tmp_path / "work"
    command = snakemake(config, snakefile=ROOT / "Snakefile", workdir=workdir)

    def ready(w):
        return any(p.parent == SHARDS for p in finished_outputs(w)) and running_shard(w)

    code, log, shard = interrupt(command, workdir, signal.SIGKILL, ready)
    assert code == -signal.SIGKILL, log
    assert (workdir / shard).exists() and record(workdir, "incomplete", shard).exists()
    assert any((workdir / ".snakemake" / "locks").iterdir())
    before = finished_outputs(workdir)

    code, log = run(command + ["--unlock"], cwd=tmp_path)
    assert code == 0, log
    code, log = run(command, cwd=tmp_path)
    assert code == 0, log
    check_resumed(workdir, checkout, before)
