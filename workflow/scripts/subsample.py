from motalign.pipeline import log_to, subsample_alignment

with log_to(snakemake.log[0]):
    print(subsample_alignment(snakemake.input.x, snakemake.input.y, snakemake.input.split,
                              snakemake.output[0], fraction=float(snakemake.wildcards.fraction),
                              seed=int(snakemake.wildcards.seed),
                              rotation=snakemake.params.rotation, meta=snakemake.params.meta,
                              mot={**snakemake.params.mot, "n_jobs": snakemake.threads}))
