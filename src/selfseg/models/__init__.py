"""Per-image segmentation networks (one file per method), their shared layers, and the study stage's networks
(``unet``, ``efficientnet_lite``), imported from their modules."""

from selfseg.models.dfc import DFC
from selfseg.models.msformer import MSFormer
from selfseg.models.s3net import S3Net

__all__ = ["DFC", "MSFormer", "S3Net"]
