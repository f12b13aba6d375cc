from motalign.models.convert import convert_package
from motalign.workflow.logs import log_to

with log_to(snakemake.log[0]):
    print(convert_package(snakemake.params.spec, snakemake.input.wheel, snakemake.output[0]))
