from motalign.workflow.data_jobs import download_nsd
from motalign.workflow.logs import log_to

with log_to(snakemake.log[0]):
    print(download_nsd(snakemake.output[0], cache_root=snakemake.params.cache, subjects=snakemake.params.subjects,
                       sessions=snakemake.params.sessions))
