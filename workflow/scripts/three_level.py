from motalign.pipeline import log_to, three_level_finish

with log_to(snakemake.log[0]):
    revisions = snakemake.params.revisions
    print(three_level_finish(list(snakemake.input), snakemake.output.npz, snakemake.output.json,
                             source_revisions=revisions, target_revisions=revisions,
                             meta=snakemake.params.meta))
