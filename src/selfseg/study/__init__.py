"""The study stage: one network learns a whole folder's foreground from its per-image masks.

Per-image fits see one image each; a folder of one kind of image tells more (what a lesion looks like against
skin, where lung fields end on a film). ``train_study`` trains one network on a folder's per-image masks
(self-training on pseudo-masks, each weighted by its ground-truth-free confidence; with ``StudySettings.keep`` < 1,
the most confident share only). The default network is three small decoders
(``models.efficientnet_lite.FeatureDecoder``, each with its own seed, their probabilities averaged:
``StudySettings.members``) on the frozen features of EfficientNet-Lite0, trained on ImageNet
(``selfseg.study.features``), each image seen as itself or its mirror image. The other,
``StudySettings(network="unet")``, is a small U-Net trained from scratch
(``models.unet.UNet``) with random affine and colour augmentation, and S3-Net's transformation consistency (the
prediction on a transformed image must be the transformed prediction) as an option,
``StudySettings.consistency``, off by default. ``predict_mask`` then gives every image its study mask: its
probability (``predict_probability``) kept within the target prior (``foreground.keep_prior``).
``save_study_model`` and ``load_study_model`` store a model in a file that runs no code when read.

Reference for the consistency term: Karimijafarbigloo et al., "Self-supervised Semantic Segmentation:
Consistency over Transformation", ICCV 2023 workshops, arXiv:2309.00143.
"""

from selfseg.study.model import (
    NETWORKS,
    PRIORS,
    StudyModel,
    StudySettings,
    predict_mask,
    predict_probability,
    train_study,
)
from selfseg.study.store import StudyModelError, load_study_model, save_study_model

__all__ = [
    "NETWORKS",
    "PRIORS",
    "StudyModel",
    "StudyModelError",
    "StudySettings",
    "load_study_model",
    "predict_mask",
    "predict_probability",
    "save_study_model",
    "train_study",
]
