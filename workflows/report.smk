# Aggregate every metric file of the grid into results.csv, leaderboard.md and figures.
rule report:
    input:
        GRID.all_metric_files(),
    output:
        csv=f"{REPORT}/results.csv",
        md=f"{REPORT}/leaderboard.md",
    shell:
        "{PY} -m dpmbench report {RESULTS} --out {REPORT}"
