# Multi-Level Optimal Transport: the workflow that reproduces every experiment of the paper.
#   snakemake --cores all                                  embedded default (offline, minutes)
#   snakemake --cores all --configfile config/paper.yaml   the paper
# See README.md for the stages, the configs and the named targets.

import os

from snakemake.utils import min_version

from motalign.workflow.config_schema import validate_config
from motalign.workflow.devices import check_local_devices

min_version("8.0")
# (POT's array backends are switched off by motalign.solvers.exact, before POT's import.)


# The embedded default, unless --configfile names another config (which then replaces it
# instead of being merged into it).
if not workflow.overwrite_configfiles:

    configfile: os.path.join(workflow.basedir, "config", "config.yaml")



# Before any job: types, required and unknown keys, repeated entries and every default (the
# schema is the only place that defines defaults; sections left out are filled in with
# theirs), then the cross-references and stimulus counts.  A problem stops the run with one
# short ConfigError naming its key.
validate_config(config, os.path.join(workflow.basedir, "workflow", "schemas", "config.schema.yaml"))


# A local run checks the configured CUDA devices on this machine before its first job
# (cluster jobs check theirs when they start).
onstart:
    check_local_devices(config, workflow)


include: "workflow/rules/paths.smk"
include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/models.smk"
include: "workflow/rules/extract.smk"
include: "workflow/rules/splits.smk"
include: "workflow/rules/alignment.smk"
include: "workflow/rules/baselines.smk"
include: "workflow/rules/subsampling.smk"
include: "workflow/rules/three_level.smk"
include: "workflow/rules/report.smk"


report: "workflow/report/workflow.rst"


rule all:
    input:
        all_targets(),
        report_targets(),
    default_target: True
