from motalign.workflow.logs import log_to
from motalign.workflow.model_jobs import train_tiny_model

with log_to(snakemake.log[0]):
    print(train_tiny_model(snakemake.params.model, snakemake.input.stimuli, snakemake.output[0]))
