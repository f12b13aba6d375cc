from motalign.pipeline import collect_subsampling, log_to

with log_to(snakemake.log[0]):
    print(collect_subsampling(snakemake.input, snakemake.output[0]), "rows")
