from motalign.workflow.logs import log_to
from motalign.workflow.reporting import build_figure

with log_to(snakemake.log[0]):
    build_figure(snakemake.wildcards.figure_id, snakemake.config, snakemake.params.inputs,
                 snakemake.output.pdf, snakemake.output.png)
