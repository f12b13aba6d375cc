"""The Snakemake workflow's library side: config checks (:mod:`.config`), one job function
per rule (:mod:`.data_jobs`, :mod:`.model_jobs`, :mod:`.alignment_jobs`), job logs
(:mod:`.logs`), the inner-OT shard format (:mod:`.shards`), the paper's tables and
figures (:mod:`.reporting`) and the run's provenance (:mod:`.provenance`)."""
