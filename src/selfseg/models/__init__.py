"""Per-image segmentation networks (one file per method) and their shared layers."""

from selfseg.models.s3net import S3Net

__all__ = ["S3Net"]
