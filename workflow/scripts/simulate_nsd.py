from motalign.workflow.data_jobs import simulate_nsd
from motalign.workflow.logs import log_to

with log_to(snakemake.log[0]):
    sim = snakemake.params.simulation  # nsd.simulation, its defaults filled in by the schema
    print(simulate_nsd(snakemake.output[0], subjects=snakemake.params.subjects,
                       n_images=sim["n_images"], n_shared=sim["n_shared"], n_specific=sim["n_specific"],
                       n_sessions=sim["n_sessions"], volume_shape=sim["volume_shape"], seed=sim["seed"]))
