# mtdiff benchmark workflow: `snakemake --cores all` (see README.md).
from snakemake.utils import min_version, validate

min_version("8.0")


configfile: "config/config.yaml"


validate(config, "workflow/schemas/config.schema.yaml")


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"


rule all:
    input:
        expand(f"{RESULTS}/{{dataset}}/data/card.json", dataset=DATASETS),
