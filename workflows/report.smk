# Aggregate every metric file into results.csv (+ provenance.csv/.json), leaderboard.md/.html, figures/,
# paper_comparison.md and the static site (site/index.html).
# Marked for `snakemake --report reports/snakemake_report.html`.
import glob

REPORT_OUTPUTS = [
    os.path.join(REPORT, "results.csv"),
    os.path.join(REPORT, "leaderboard.md"),
    os.path.join(REPORT, "leaderboard.html"),
    os.path.join(REPORT, "paper_comparison.md"),
    os.path.join(REPORT, "figures"),
    os.path.join(REPORT, "provenance.csv"),
    os.path.join(REPORT, "site"),
]


rule report:
    input:
        metrics=GRID.all_metric_files(),
        shards=GRID.all_shard_files(),  # sample grids of image models
        references=GRID.all_reference_files(),
        papers=sorted(glob.glob(os.path.join(PAPERS, "*.yaml"))),
    output:
        csv=report(os.path.join(REPORT, "results.csv"), category="Results", caption="report/results.rst"),
        md=os.path.join(REPORT, "leaderboard.md"),
        html=report(os.path.join(REPORT, "leaderboard.html"), category="Leaderboard",
                    caption="report/leaderboard.rst"),
        papers=report(os.path.join(REPORT, "paper_comparison.md"), category="Papers", caption="report/papers.rst"),
        figures=report(directory(os.path.join(REPORT, "figures")), patterns=["{name}.png"], category="Figures",
                       caption="report/figure.rst"),
        provenance=os.path.join(REPORT, "provenance.csv"),
        site=directory(os.path.join(REPORT, "site")),
    log:
        os.path.join(LOGS, "report.log"),
    params:
        job=JOB,
        # directories, not files: the results (every metric file under it is an input), the report, the papers
        results=lambda wc: RESULTS,
        out=lambda wc: REPORT,
        papers=lambda wc: PAPERS,
    threads: GRID.resource("report", "threads")  # processes drawing the figures (dpmbench report --jobs)
    resources:
        mem_mb=GRID.resource("report", "mem_mb"),
        runtime=GRID.resource("report", "runtime"),
        gpu=0,
    conda:
        "../env.yml"
    shell:
        "{params.job} dpmbench report {params.results} --out {params.out} --papers {params.papers:q}"
        " --site {output.site} --jobs {threads} 2> >(tee {log:q} >&2)"
