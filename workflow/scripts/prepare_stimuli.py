from motalign.datasets.stimuli import prepare_stimuli
from motalign.workflow.logs import log_to

with log_to(snakemake.log[0]):
    print(prepare_stimuli(snakemake.params.dataset, snakemake.output[0],
                          nsd_root=snakemake.params.nsd_root,
                          cache_dir=snakemake.params.cache_dir, name=snakemake.wildcards.dataset))
