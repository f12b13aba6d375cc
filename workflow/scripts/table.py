from motalign.workflow.logs import log_to
from motalign.workflow.reporting import TABLES, build_table, write_table

with log_to(snakemake.log[0]):
    table_id = snakemake.wildcards.table_id
    table = build_table(table_id, snakemake.config, snakemake.params.scores,
                        snakemake.input.get("baselines", []))
    write_table(table, snakemake.output.csv, snakemake.output.md, snakemake.output.tex,
                caption=TABLES[table_id].caption)
    print(len(table.rows), "rows")
