from motalign.pipeline import log_to, three_level_block

with log_to(snakemake.log[0]):
    print(three_level_block(list(snakemake.input.x), list(snakemake.input.y), snakemake.output[0],
                            mot={**snakemake.params.mot, "n_jobs": snakemake.threads}))
