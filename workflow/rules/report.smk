# The paper's tables and figures (catalogue: motalign/workflow/catalogue.yaml), each with a
# named target rule (`snakemake table1`), and the run's provenance (which weights and data
# every activation and stimuli file came from, and the software and commit of the run).


rule table:
    input:
        unpack(table_inputs),
    output:
        csv=report(TABLE_CSV, caption="../report/table.rst", category="Tables", labels={"table": "{table_id}"}),
        md=TABLE_MD,
        tex=TABLE_TEX,
    params:
        code=script_code("table.py"),
        caption=lambda wc: TABLES[wc.table_id].caption,
        scores=table_scores,
    log:
        job_log("table", TABLE_KEY),
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
        TABLE_VS_PAPER_MD,
    params:
        code=script_code("table_vs_paper.py"),
        scores=table_scores,
    log:
        job_log("table_vs_paper", TABLE_KEY),
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
        pdf=FIGURE_PDF,
        png=report(FIGURE_PNG, caption="../report/figure.rst", category="Figures", labels={"figure": "{figure_id}"}),
    params:
        code=script_code("figure.py"),
        caption=lambda wc: FIGURES[wc.figure_id].caption,
        inputs=figure_input_map,
    log:
        job_log("figure", FIGURE_KEY),
    benchmark:
        job_benchmark("figure", FIGURE_KEY)
    wildcard_constraints:
        figure_id="|".join(FIGURES) or "none",
    threads: 1
    resources:
        **rule_resources("figure"),
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
            expand([FIGURE_PDF, FIGURE_PNG], figure_id=_figure_id),
        localrule: True


rule provenance:
    input:
        **provenance_inputs(),
    output:
        report(PROVENANCE_JSON, caption="../report/provenance.rst", category="Provenance"),
    params:
        code=script_code("provenance.py"),
        # relative, like every path in params (an absolute one differs in every checkout)
        repository=os.path.relpath(workflow.basedir),
    log:
        job_log("provenance"),
    localrule: True
    conda:
        "../../envs/report.yaml"
    script:
        "../scripts/provenance.py"
