"""Per-image segmentation networks (one file per method) and their shared layers."""

from selfseg.models.dfc import DFC
from selfseg.models.msformer import MSFormer
from selfseg.models.s3net import S3Net

__all__ = ["DFC", "MSFormer", "S3Net"]
