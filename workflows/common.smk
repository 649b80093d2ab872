# Grid expansion shared by every stage. Solver specs (NAME:key=value,...) become path-safe slugs.
from dpmbench.workflow import build_grid

GRID = build_grid(config)
RESULTS = GRID.results_dir
REPORT = GRID.report_dir
PY = sys.executable

wildcard_constraints:
    model="[A-Za-z0-9_.+-]+",
    guidance="none|[0-9.]+",
    schedule="[a-z-]+",
    solver="[A-Za-z0-9_.+-]+",
