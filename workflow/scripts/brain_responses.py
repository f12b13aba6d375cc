from motalign.workflow.data_jobs import brain_responses
from motalign.workflow.logs import log_to

with log_to(snakemake.log[0]):
    print(brain_responses(snakemake.input.nsd, snakemake.params.subject, snakemake.input.stimuli,
                          snakemake.output[0], regions=snakemake.params.regions,
                          sessions=snakemake.params.sessions))
