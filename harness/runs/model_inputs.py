"""What each model of an experiment reads.

Every model reads the experiment's ``preprocessing``, except a face network fine-tuned
above a frozen part: when nothing below its cut trains and no augmentation touches the
pixels, the activations at the cut are the same every epoch, so they are computed once by
the port (as descriptors are), cached under their own fingerprint and trained from. That
is what makes fine-tuning fit on 2 cores, and it lets one experiment hold descriptor FCNs
and fine-tuned networks side by side: same split, same test faces, one report, one
ensemble. ``input: chip`` asks for the frozen part to run every epoch (a GPU setting);
``input: cut`` insists on the cache.
"""
from __future__ import annotations

from harness.data.images import EXPERIMENT_DESCRIPTOR_ENGINE, Preprocessing
from harness.models.spec import ModelSpec, TrainingSpec

__all__ = ["reads_cut", "cut_preprocessing", "model_inputs", "chip_mismatch"]


def reads_cut(model: ModelSpec, training: TrainingSpec) -> bool:
    """Whether this model, trained so, reads the cached activations at its cut."""
    arch = model.architecture
    if arch.type != "face_resnet" or arch.input == "chip":
        return False
    return arch.input == "cut" or (arch.has_cut and not training.augments)


def cut_preprocessing(experiment_prep: Preprocessing, cut: str) -> Preprocessing:
    """The cache entry holding the activations at ``cut``: computed by the experiment's
    port engine where it names one, otherwise by the default port. Pixel settings play no
    part in it (the chip is dlib's), so every experiment shares one entry per cut."""
    engine = (experiment_prep.descriptor_engine if experiment_prep.embedding
              and experiment_prep.descriptor_engine != "dlib" else EXPERIMENT_DESCRIPTOR_ENGINE)
    return Preprocessing(representation="dlib_embedding", descriptor_engine=engine, descriptor_features=cut)


def model_inputs(experiment_prep: Preprocessing, model: ModelSpec,
                 training: TrainingSpec) -> tuple[ModelSpec, Preprocessing]:
    """(the model as its trial records it, the preprocessing its trial reads)."""
    arch = model.architecture
    if arch.type != "face_resnet":
        return model, experiment_prep
    if reads_cut(model, training):
        resolved = model.model_copy(update={"architecture": arch.model_copy(update={"input": "cut"})})
        return resolved, cut_preprocessing(experiment_prep, resolved.architecture.reads)
    # The chip: recorded as left out, which is what every trial from before the choice
    # existed says (their ids hold).
    return model.model_copy(update={"architecture": arch.model_copy(update={"input": None})}), experiment_prep


def chip_mismatch(prep: Preprocessing) -> dict[str, object]:
    """The preprocessing keys that keep ``prep`` from being the chip the face network reads
    (empty when it is that chip)."""
    from harness.models.face_resnet import INPUT_SIZE

    wanted = (("representation", "pixels"), ("align", "dlib"), ("size", INPUT_SIZE), ("color", "rgb"),
              ("scaling", "unit"), ("crop", 1.0), ("equalize", False))
    return {key: getattr(prep, key) for key, value in wanted if getattr(prep, key) != value}
