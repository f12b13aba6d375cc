from motalign.pipeline import baselines, log_to

with log_to(snakemake.log[0]):
    baselines(snakemake.wildcards.kind, snakemake.params.pairs, snakemake.input.split,
              snakemake.output[0], seed=int(snakemake.wildcards.seed), meta=snakemake.params.meta)
