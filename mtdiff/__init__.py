"""mtdiff: a reproducible benchmark of multi-task (multi-modal) diffusion models.

MT-Diffusion (Chen et al., "Diffusion Models for Multi-Modal Generative Modeling", ICLR 2024)
against single-task baselines (image DDPM, classifier, segmenter). See README.md for the
commands and docs/method.md for the exact formulation implemented here.
"""

__version__ = "0.1.0"
