from motalign.workflow.logs import log_to
from motalign.workflow.reporting import build_table, write_vs_paper

with log_to(snakemake.log[0]):
    table = build_table(snakemake.wildcards.table_id, snakemake.config, snakemake.params.scores,
                        snakemake.input.get("baselines", []))
    print(write_vs_paper(table, snakemake.output[0]))
