from motalign.workflow.alignment_jobs import subsample_alignment
from motalign.workflow.logs import log_to

with log_to(snakemake.log[0]):
    print(subsample_alignment(snakemake.input.x, snakemake.input.y, snakemake.input.split,
                              snakemake.output[0], fraction=float(snakemake.wildcards.fraction),
                              seed=int(snakemake.wildcards.seed),
                              rotation=snakemake.params.rotation, meta=snakemake.params.meta,
                              mot={**snakemake.params.mot, "n_jobs": snakemake.threads}))
