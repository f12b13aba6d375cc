from motalign.workflow.alignment_jobs import baseline
from motalign.workflow.logs import log_to

with log_to(snakemake.log[0]):
    baseline(snakemake.wildcards.kind, snakemake.params.pairs, snakemake.input.split,
              snakemake.output[0], seed=int(snakemake.wildcards.seed), meta=snakemake.params.meta)
