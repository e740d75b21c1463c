"""Small square pictures of a dataset's images, for the retrieval grids and the projector's sprite."""

from PIL import Image, ImageOps
from torchvision.transforms.v2.functional import to_pil_image

from dml_bench.data.retrieval_dataset import RetrievalDataset

BACKGROUND = (255, 255, 255)  # what pads a picture that is not square


def thumbnail(dataset: RetrievalDataset, index: int, size: int) -> Image.Image:
    """Image ``index`` of ``dataset`` fitted into a ``size`` x ``size`` RGB square, its aspect
    ratio kept (white bars fill the rest); a JPEG is decoded at reduced scale where it can be."""
    image = to_pil_image(dataset.load_image(index, min_size=(size, size)))
    return ImageOps.pad(image, (size, size), color=BACKGROUND)
