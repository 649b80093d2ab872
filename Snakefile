# dpmbench workflow: reference (exact solutions) -> sample -> metrics -> report.
#   snakemake --cores all                       (the embedded default, config/default.yaml)
#   snakemake --cores all --configfile my.yaml  (any grid; validated against config/schema.yaml)
import os
import sys

import yaml
from snakemake.utils import validate

if not config:  # no --configfile / --config given: the embedded default
    with open(os.path.join(workflow.basedir, "config", "default.yaml")) as fh:
        config.update(yaml.safe_load(fh))

validate(config, os.path.join(workflow.basedir, "config", "schema.yaml"), set_default=True)
include: "workflows/common.smk"

include: "workflows/reference.smk"
include: "workflows/sample.smk"
include: "workflows/metrics.smk"
include: "workflows/report.smk"


rule all:
    input:
        f"{REPORT}/results.csv",
        f"{REPORT}/leaderboard.md",
    default_target: True
