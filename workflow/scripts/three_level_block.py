from motalign.workflow.alignment_jobs import three_level_block
from motalign.workflow.logs import log_to

with log_to(snakemake.log[0]):
    print(three_level_block(list(snakemake.input.x), list(snakemake.input.y), snakemake.output[0],
                            mot={**snakemake.params.mot, "n_jobs": snakemake.threads}))
