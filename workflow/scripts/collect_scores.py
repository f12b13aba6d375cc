from motalign.pipeline import collect_scores, log_to

with log_to(snakemake.log[0]):
    print(collect_scores(snakemake.input, snakemake.output[0]), "rows")
