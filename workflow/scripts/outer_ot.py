from motalign.io.store import check_layer_count
from motalign.workflow.alignment_jobs import outer_alignment
from motalign.workflow.logs import log_to

with log_to(snakemake.log[0]):
    wc = snakemake.wildcards
    n_source, n_target = snakemake.params.layers
    check_layer_count(snakemake.input.x, n_source, f"models/brains: {wc.source}")
    check_layer_count(snakemake.input.y, n_target, f"models/brains: {wc.target}")
    result = outer_alignment(snakemake.input.x, snakemake.input.y, snakemake.input.split,
                             snakemake.input.shards, snakemake.output.npz, snakemake.output.json,
                             rotation=snakemake.params.rotation,
                             seed=int(snakemake.wildcards.seed), meta=snakemake.params.meta,
                             mot={**snakemake.params.mot, "n_jobs": snakemake.threads})
    print(result["scores"])
