from motalign.workflow.logs import log_to
from motalign.workflow.provenance import write_run_provenance

with log_to(snakemake.log[0]):
    print(write_run_provenance(snakemake.output[0], activations=snakemake.input.activations,
                               stimuli=snakemake.input.stimuli, repository=snakemake.params.repository))
