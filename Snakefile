# mtdiff benchmark workflow: data -> train -> sample -> evaluate -> report.
#
#   snakemake --cores all                                   # the default config (2-core CPU, ~10 min)
#   snakemake --cores all --configfile config/full.yaml     # 3 seeds, all eight models
#   snakemake --cores all --use-conda                       # rules run in environment.yml
#   snakemake --report results/report.zip                   # Snakemake's own HTML report
#
# Every stage writes under results/<dataset>/<stage>/; every rule has a log: and compute rules
# a benchmark:. Config keys are documented in config/config.yaml and validated against
# workflow/schemas/config.schema.yaml before any job runs.
from snakemake.utils import min_version, validate

min_version("8.0")


# The default config, unless a --configfile was given: a --configfile replaces it rather than
# being merged into it (so `--configfile config/shapes.yaml` does not also run digits).
if "datasets" not in config:

    configfile: "config/config.yaml"


validate(config, "workflow/schemas/config.schema.yaml")


include: "workflow/rules/common.smk"
include: "workflow/rules/representation.smk"  # before train.smk: it uses train_extractor_input
include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/sample.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/report.smk"
include: "workflow/rules/inpainting.smk"


rule all:
    input:
        all_outputs(),
