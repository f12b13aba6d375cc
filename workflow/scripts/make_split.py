from motalign.workflow.data_jobs import make_split
from motalign.workflow.logs import log_to

with log_to(snakemake.log[0]):
    print(make_split(snakemake.input[0], snakemake.output[0], seed=int(snakemake.wildcards.seed),
                     fit_fraction=snakemake.params.fit_fraction))
