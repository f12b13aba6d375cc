from motalign.io.store import check_layer_count
from motalign.workflow.alignment_jobs import inner_shard
from motalign.workflow.logs import log_to

with log_to(snakemake.log[0]):
    wc = snakemake.wildcards
    n_source, n_target = snakemake.params.layers
    check_layer_count(snakemake.input.x, n_source, f"models/brains: {wc.source}")
    check_layer_count(snakemake.input.y, n_target, f"models/brains: {wc.target}")
    print(inner_shard(snakemake.input.x, snakemake.input.y, snakemake.input.split,
                      snakemake.output[0], shard=int(wc.shard),
                      shard_size=snakemake.params.shard_size,
                      rotation=snakemake.params.rotation,
                      mot={**snakemake.params.mot, "n_jobs": snakemake.threads}))
