from motalign.workflow.data_jobs import nsd_voxel_counts
from motalign.workflow.logs import log_to

with log_to(snakemake.log[0]):
    print(nsd_voxel_counts(dict(snakemake.input.items()), snakemake.output[0]), "rows")
