"""Backbones and the embedder that wraps them."""

from dml_bench.models.backbones import TorchvisionBackbone
from dml_bench.models.embedder import Embedder
from dml_bench.models.pixel_normalize import PixelNormalize
from dml_bench.models.small_cnn import SmallConvNet
from dml_bench.models.timm_backbones import TimmBackbone, VitSmall

__all__ = ["Embedder", "PixelNormalize", "SmallConvNet", "TimmBackbone", "TorchvisionBackbone", "VitSmall"]
