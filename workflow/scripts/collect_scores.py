from motalign.workflow.alignment_jobs import collect_scores
from motalign.workflow.logs import log_to

with log_to(snakemake.log[0]):
    print(collect_scores(snakemake.input, snakemake.output[0]), "rows")
