# mtdiff benchmark workflow: data -> train -> sample -> evaluate -> report.
#
#   snakemake --cores all                                   # the default config (2-core CPU, ~12 min)
#   snakemake --cores all --configfile config/full.yaml     # 3 seeds, all eight models
#   snakemake --cores all --use-conda                       # jobs run in workflow/envs/*.yaml
#   snakemake --report results/report.zip                   # Snakemake's own HTML report
#   snakemake --edit-notebook results/report.ipynb          # change the report notebook
#
# Without --use-conda, jobs run mtdiff with the Python that runs Snakemake (.venv/bin/snakemake
# needs no activated venv); see _job_environment in workflow/rules/common.smk.
#
# Every stage writes under results/<dataset>/<stage>/; every rule has a log: and compute rules
# a benchmark:. Config keys are documented in config/README.md and validated against
# workflow/schemas/config.schema.yaml before any job runs.
from snakemake.utils import min_version, validate

min_version("8.0")


# The default config, unless a --configfile was given: a --configfile replaces it rather than
# being merged into it (so `--configfile config/shapes.yaml` does not also run digits).
if "datasets" not in config:

    configfile: "config/config.yaml"


validate(config, "workflow/schemas/config.schema.yaml")


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/sample.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/report.smk"
include: "workflow/rules/guidance.smk"
include: "workflow/rules/inpainting.smk"
include: "workflow/rules/representation.smk"
include: "workflow/rules/memorization.smk"


rule all:
    input:
        all_outputs(),
        guidance_outputs(),
