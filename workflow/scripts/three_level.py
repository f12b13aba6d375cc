from motalign.workflow.alignment_jobs import three_level_finish
from motalign.workflow.logs import log_to

with log_to(snakemake.log[0]):
    revisions = snakemake.params.revisions
    print(three_level_finish(list(snakemake.input), snakemake.output.npz, snakemake.output.json,
                             source_revisions=revisions, target_revisions=revisions,
                             meta=snakemake.params.meta))
