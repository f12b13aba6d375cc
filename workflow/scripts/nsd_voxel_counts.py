from motalign.pipeline import log_to, nsd_voxel_counts

with log_to(snakemake.log[0]):
    print(nsd_voxel_counts(dict(snakemake.input.items()), snakemake.output[0]), "rows")
