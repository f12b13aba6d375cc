from motalign.pipeline import log_to, train_tiny_model

with log_to(snakemake.log[0]):
    print(train_tiny_model(snakemake.params.model, snakemake.input.stimuli, snakemake.output[0]))
