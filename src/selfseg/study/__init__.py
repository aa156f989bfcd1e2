"""The study stage: one network learns a whole folder's foreground from its per-image masks.

Per-image fits see one image each; a folder of one kind of image tells more (what a lesion looks like against
skin, where lung fields end on a film). ``train_study`` trains a small U-Net (``models.unet.UNet``) on the most
confident per-image masks of a folder (self-training on pseudo-masks, weighted by their ground-truth-free
confidence), with random affine and colour augmentation and S3-Net's transformation consistency: the
prediction on a transformed image must be the transformed prediction. ``predict_mask`` then gives every image its
study mask, kept within the target prior (``foreground.keep_prior``). ``save_study_model`` and
``load_study_model`` store a model in a file that runs no code when read.

Reference for the consistency term: Karimijafarbigloo et al., "Self-supervised Semantic Segmentation:
Consistency over Transformation", ICCV 2023 workshops, arXiv:2309.00143.
"""

from selfseg.study.model import PRIORS, StudyModel, StudySettings, predict_mask, train_study
from selfseg.study.store import StudyModelError, load_study_model, save_study_model

__all__ = [
    "PRIORS",
    "StudyModel",
    "StudyModelError",
    "StudySettings",
    "load_study_model",
    "predict_mask",
    "save_study_model",
    "train_study",
]
