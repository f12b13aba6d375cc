from motalign.workflow.alignment_jobs import outer_alignment
from motalign.workflow.logs import log_to

with log_to(snakemake.log[0]):
    result = outer_alignment(snakemake.input.x, snakemake.input.y, snakemake.input.split,
                             snakemake.input.shards, snakemake.output.npz, snakemake.output.json,
                             rotation=snakemake.params.rotation,
                             seed=int(snakemake.wildcards.seed), meta=snakemake.params.meta,
                             mot={**snakemake.params.mot, "n_jobs": snakemake.threads})
    print(result["scores"])
