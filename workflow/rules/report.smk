# The paper's tables and figures, each with a named target rule (`snakemake table1`).


rule table:
    input:
        unpack(table_inputs),
    output:
        csv=report(R("tables", "{table_id}.csv"), caption="../report/table.rst", category="Tables",
                   labels={"table": "{table_id}"}),
        md=R("tables", "{table_id}.md"),
        tex=R("tables", "{table_id}.tex"),
    params:
        caption=lambda wc: TABLES[wc.table_id].caption,
        scores=lambda wc: {e: experiment_scores(e) for e in table_experiments(wc.table_id, config)},
    log:
        R("logs", "table", "{table_id}.log"),
    wildcard_constraints:
        table_id="|".join(TABLE_IDS) or "none",
    localrule: True
    conda:
        "../../envs/report.yaml"
    script:
        "../scripts/table.py"


rule table_vs_paper:
    input:
        unpack(table_inputs),
    output:
        R("tables", "{table_id}_vs_paper.md"),
    params:
        scores=lambda wc: {e: experiment_scores(e) for e in table_experiments(wc.table_id, config)},
    log:
        R("logs", "table_vs_paper", "{table_id}.log"),
    wildcard_constraints:
        table_id="|".join(TABLE_IDS) or "none",
    localrule: True
    conda:
        "../../envs/report.yaml"
    script:
        "../scripts/table_vs_paper.py"


rule figure:
    input:
        unpack(figure_inputs),
    output:
        pdf=R("figures", "{figure_id}.pdf"),
        png=report(R("figures", "{figure_id}.png"), caption="../report/figure.rst", category="Figures",
                   labels={"figure": "{figure_id}"}),
    params:
        caption=lambda wc: FIGURES[wc.figure_id].caption,
        inputs=figure_input_map,
    log:
        R("logs", "figure", "{figure_id}.log"),
    benchmark:
        R("benchmarks", "figure", "{figure_id}.tsv")
    wildcard_constraints:
        figure_id="|".join(FIGURES) or "none",
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../../envs/report.yaml"
    script:
        "../scripts/figure.py"


for _table_id in TABLE_IDS:

    rule:
        name:
            _table_id
        input:
            table_outputs(_table_id),
        localrule: True


for _figure_id in FIGURES:

    rule:
        name:
            _figure_id
        input:
            R("figures", f"{_figure_id}.pdf"),
            R("figures", f"{_figure_id}.png"),
        localrule: True
