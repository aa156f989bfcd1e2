"""Per-image segmentation networks (one file per method) and their shared layers."""

from selfseg.models.msformer import MSFormer
from selfseg.models.s3net import S3Net

__all__ = ["MSFormer", "S3Net"]
