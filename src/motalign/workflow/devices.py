"""Whether the device a config asks for (``extraction.device``, ``mot.device``) exists on
the machine that runs the job: checked at the start of each job that uses one, and once
before the first job when the workflow runs its jobs on the machine that planned them.

``auto`` and ``cpu`` are always available and are passed without importing PyTorch;
``cuda`` and ``cuda:N`` need a CUDA device visible to PyTorch (the N-th one).
"""

from __future__ import annotations

import os
import re
import socket

from .config import ConfigError

__all__ = ["require_device", "check_local_devices", "DEVICE_KEYS"]

#: the config keys that name a device, as (section, key)
DEVICE_KEYS = (("extraction", "device"), ("mot", "device"))

_CUDA = re.compile(r"^cuda(?::(\d+))?$")


def require_device(device: str, key: str) -> None:
    """Raise :class:`ConfigError` naming ``key`` when ``device`` is ``cuda`` / ``cuda:N``
    and this machine has no such CUDA device visible to PyTorch."""
    if device in (None, "auto", "cpu"):
        return
    match = _CUDA.match(str(device))
    if match is None:
        raise ConfigError(f"{key}: unknown device {device!r}; use 'auto', 'cpu', 'cuda' or 'cuda:N'")
    where = f"this machine ({socket.gethostname()})"
    advice = "; use 'auto' or 'cpu', or run the job on a GPU node"
    try:
        import torch  # deferred: only a configured CUDA device needs PyTorch
    except ImportError:
        raise ConfigError(f"{key}: {device!r} was asked for, but PyTorch is not installed on {where}{advice}") from None
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    index = int(match.group(1) or 0)
    if index < count:
        return
    build = f"torch {torch.__version__}, CUDA build: {'yes' if torch.version.cuda else 'no'}"
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        build += f", CUDA_VISIBLE_DEVICES={visible!r}"
    if count == 0:
        raise ConfigError(f"{key}: {device!r} was asked for, but {where} has no CUDA device visible to PyTorch "
                          f"({build}){advice}")
    raise ConfigError(f"{key}: {device!r} was asked for, but {where} has only {count} CUDA device"
                      f"{'s' if count > 1 else ''} visible to PyTorch (cuda:0 to cuda:{count - 1}; {build}){advice}")


def _sections_in_use(workflow):
    """The config sections (``extraction``, ``mot``) whose device some job to run uses --
    its rule passes the section's settings as the param of that name (``extraction=``,
    ``mot=``) -- or None when the jobs are not known."""
    dag = getattr(workflow, "dag", None)
    if dag is None or not hasattr(dag, "needrun_jobs"):
        return None
    used = set()
    for job in dag.needrun_jobs():
        used |= {section for section, _ in DEVICE_KEYS if section in job.rule.params.keys()}
    return used


def check_local_devices(config: dict, workflow=None) -> None:
    """Check the configured devices on this machine when the jobs run here: from the
    Snakefile's ``onstart`` (after the DAG is built, before the first job), when the
    executor is local, for the devices that the jobs to run use.  With a cluster executor,
    or when the executor is not known (while Snakemake parses the Snakefile it is not:
    Snakemake 9 sets it afterwards), nothing is checked here and each job checks its own
    device when it starts.  Without ``workflow``, every configured device is checked."""
    used = None
    if workflow is not None:
        if getattr(workflow, "executor_plugin", None) is None or not workflow.local_exec:
            return
        used = _sections_in_use(workflow)
    for section, name in DEVICE_KEYS:
        if used is None or section in used:
            device = (config.get(section) or {}).get(name, "auto")
            require_device(device, f"{section}.{name}")
