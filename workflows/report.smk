# Aggregate every metric file into results.csv (+ provenance.csv/.json), leaderboard.md/.html, figures/,
# paper_comparison.md and the static site (site/index.html).
# Marked for `snakemake --report reports/snakemake_report.html`.
import glob

REPORT_OUTPUTS = [
    f"{REPORT}/results.csv",
    f"{REPORT}/leaderboard.md",
    f"{REPORT}/leaderboard.html",
    f"{REPORT}/paper_comparison.md",
    f"{REPORT}/figures",
    f"{REPORT}/provenance.csv",
    f"{REPORT}/site",
]


rule report:
    input:
        metrics=GRID.all_metric_files(),
        shards=GRID.all_shard_files(),  # sample grids of image models
        references=GRID.all_reference_files(),
        papers=sorted(glob.glob(os.path.join(PAPERS, "*.yaml"))),
    output:
        csv=report(f"{REPORT}/results.csv", category="Results", caption="report/results.rst"),
        md=f"{REPORT}/leaderboard.md",
        html=report(f"{REPORT}/leaderboard.html", category="Leaderboard",
                    caption="report/leaderboard.rst"),
        papers=report(f"{REPORT}/paper_comparison.md", category="Papers",
                      caption="report/papers.rst"),
        figures=report(directory(f"{REPORT}/figures"), patterns=["{name}.png"], category="Figures",
                       caption="report/figure.rst"),
        provenance=f"{REPORT}/provenance.csv",
        site=directory(f"{REPORT}/site"),
    threads: GRID.resource("report", "threads")  # processes drawing the figures (dpmbench report --jobs)
    resources:
        mem_mb=GRID.resource("report", "mem_mb"),
        runtime=GRID.resource("report", "runtime"),
        gpu=0,
    shell:
        "{JOB} dpmbench report {RESULTS} --out {REPORT} --papers {PAPERS:q} --site {output.site} --jobs {threads}"
