from motalign.pipeline import download_nsd, log_to

with log_to(snakemake.log[0]):
    print(download_nsd(snakemake.output[0], subjects=snakemake.params.subjects,
                       sessions=snakemake.params.sessions))
