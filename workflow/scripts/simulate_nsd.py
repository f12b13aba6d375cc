from motalign.workflow.data_jobs import simulate_nsd
from motalign.workflow.logs import log_to

with log_to(snakemake.log[0]):
    sim = snakemake.params.simulation
    print(simulate_nsd(snakemake.output[0], subjects=snakemake.params.subjects,
                       n_images=sim.get("n_images", 160), n_shared=sim.get("n_shared", 100),
                       n_specific=sim.get("n_specific", 4),
                       n_sessions=sim.get("n_sessions", 3),
                       volume_shape=sim.get("volume_shape", (10, 10, 10)), seed=sim.get("seed", 0)))
