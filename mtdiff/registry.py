"""The model registry: every model of the benchmark by name (:data:`MODELS`), as plain data.

Torch-free on purpose: the workflow, the report and its light conda environment read what a
model is (its kind, modalities, heads, baselines, display label and colour) without importing
the networks. :mod:`mtdiff.models` builds the networks from these entries.

All share one backbone family (:class:`mtdiff.nets.UNet`) and the same heads, so comparisons
are at equal architecture:

=============  ===========  ====================================================================
name           kind         what it is
=============  ===========  ====================================================================
ddpm           diffusion    image only: MT-Diffusion with no extra modality == plain DDPM
ddpm_cond      diffusion    class-conditional DDPM (label embedding, the paper's ADM-cond)
classifier     classifier   backbone encoder + the label head, cross-entropy on clean images
segmenter      segmenter    backbone + the mask head, cross-entropy on clean images
mt_label       diffusion    MT-Diffusion, image + label (the paper's joint image-label model)
mt_mask        diffusion    MT-Diffusion, image + semantic mask
mt_masked      diffusion    MT-Diffusion, image + masked image (the paper's masked-image training)
mt_all         diffusion    MT-Diffusion, image + label + mask (beyond the paper's two modalities)
mt_repr        diffusion    MT-Diffusion, image + representation (domain-extractor features)
=============  ===========  ====================================================================
"""

from __future__ import annotations

from dataclasses import dataclass

from mtdiff.errors import choice_error


@dataclass(frozen=True)
class ModelSpec:
    """Everything the code base needs to know about a model, in one place: the trainer builds it
    from ``kind`` and ``modalities``; the workflow derives its jobs (samples, FID, task metrics,
    conditional generation, coherence) from the properties below; the report takes its display
    ``label``, ``colour`` and the comparisons of its findings (``baselines`` / ``compared_on``)
    from here. Adding a model is adding one entry to :data:`MODELS`."""

    kind: str  # diffusion | classifier | segmenter
    modalities: tuple[str, ...] = ()  # extra modalities aggregated into the forward process
    class_conditional: bool = False  # label embedding in the backbone (the paper's ADM-cond)
    description: str = ""
    label: str = ""  # display name in tables and plot legends
    colour: str = ""  # plot colour (hex); "" -> one picked from the report's spare palette
    # multi-task models: the single-task models they are compared with in the findings
    baselines: tuple[str, ...] = ()
    # single-task models: the primary metrics on which a multi-task model is compared with them
    compared_on: tuple[str, ...] = ()

    @property
    def needs(self) -> set[str]:
        """Dataset fields this model trains on."""
        need = {"image"}
        if self.kind == "classifier" or self.class_conditional or "label" in self.modalities:
            need.add("label")
        if self.kind == "segmenter" or "mask" in self.modalities:
            need.add("mask")
        return need

    @property
    def generates(self) -> tuple[str, ...]:
        """What one sample of the model holds: the image and every extra modality (diffusion
        models), nothing for the discriminative baselines."""
        return ("image", *self.modalities) if self.kind == "diffusion" else ()

    @property
    def multi_task(self) -> bool:
        """A diffusion model with at least one extra modality (MT-Diffusion, docs/method.md)."""
        return self.kind == "diffusion" and bool(self.modalities)

    @property
    def label_head(self) -> bool:
        """Predicts labels of real images (classifier, or an MT model with a label head)."""
        return self.kind == "classifier" or "label" in self.modalities

    @property
    def mask_head(self) -> bool:
        """Predicts masks of real images (segmenter, or an MT model with a mask head)."""
        return self.kind == "segmenter" or "mask" in self.modalities

    @property
    def generates_given_class(self) -> bool:
        """Can generate "given class k": by its label embedding, or by fixing the label
        modality while sampling (docs/method.md, section 9)."""
        return self.kind == "diffusion" and (self.class_conditional or "label" in self.modalities)


MODELS: dict[str, ModelSpec] = {
    "ddpm": ModelSpec(
        "diffusion", (), description="image DDPM", label="ddpm (image only)", colour="#1f77b4",
        # inpainting: ddpm by RePaint against an MT model's own inpainting (report's per-task tables)
        compared_on=("fid", "inpaint_mse", "inpaint_fid"),
    ),
    "ddpm_cond": ModelSpec(
        "diffusion", (), class_conditional=True, description="class-conditional DDPM",
        label="ddpm_cond (class-conditional)", colour="#17becf", compared_on=("cond_fid", "cond_accuracy"),
    ),
    "classifier": ModelSpec(
        "classifier", description="U-Net encoder + label head", label="classifier (single task)",
        colour="#2ca02c", compared_on=("accuracy",),
    ),
    "segmenter": ModelSpec(
        "segmenter", description="U-Net + mask head", label="segmenter (single task)", colour="#8c564b",
        compared_on=("miou",),
    ),
    "mt_label": ModelSpec(
        "diffusion", ("label",), description="MT-Diffusion image+label", label="mt_label (MT: image + label)",
        colour="#d62728", baselines=("ddpm", "ddpm_cond", "classifier"),
    ),
    "mt_mask": ModelSpec(
        "diffusion", ("mask",), description="MT-Diffusion image+mask", label="mt_mask (MT: image + mask)",
        colour="#ff7f0e", baselines=("ddpm", "segmenter"),
    ),
    "mt_masked": ModelSpec(
        "diffusion", ("masked_image",), description="MT-Diffusion image+masked image",
        label="mt_masked (MT: image + masked image)", colour="#9467bd", baselines=("ddpm",),
    ),
    "mt_all": ModelSpec(
        "diffusion", ("label", "mask"), description="MT-Diffusion image+label+mask",
        label="mt_all (MT: image + label + mask)", colour="#e377c2",
        baselines=("ddpm", "ddpm_cond", "classifier", "segmenter"),
    ),
    "mt_repr": ModelSpec(
        "diffusion", ("representation",), description="MT-Diffusion image+representation",
        label="mt_repr (MT: image + representation)", colour="#bcbd22", baselines=("ddpm",),
    ),
}


def models_where(predicate) -> list[str]:
    """Names of the registered models whose spec satisfies ``predicate``, in registry order
    (e.g. ``models_where(lambda s: s.mask_head)``)."""
    return [name for name, spec in MODELS.items() if predicate(spec)]


def get_model_spec(name: str) -> ModelSpec:
    if name not in MODELS:
        raise choice_error("model", name, MODELS)
    return MODELS[name]
