from motalign.workflow.logs import log_to
from motalign.workflow.model_jobs import extract_activations

with log_to(snakemake.log[0]):
    extraction = snakemake.params.extraction
    print(extract_activations(
        snakemake.params.model, snakemake.params.location, snakemake.input.stimuli,
        snakemake.output[0], revision=snakemake.params.revision,
        include_embeddings=snakemake.params.include_embeddings,
        batch_size=extraction["batch_size"], device=extraction["device"],
        meta={"name": snakemake.wildcards.model, "dataset": snakemake.wildcards.dataset},
    ))
