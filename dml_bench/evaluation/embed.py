"""Embedding extraction: the one code path the trainer and ``dml_bench.evaluate`` share."""

import torch
from torch import nn
from torch.utils.data import DataLoader

from dml_bench.runtime.device import autocast
from dml_bench.runtime.progress import progress_bar


@torch.inference_mode()
def extract_embeddings(
    model: nn.Module,
    loader: DataLoader,
    device: torch.device,
    amp_dtype: torch.dtype | None = None,
    desc: str = "embed",
    progress: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Embed every image of ``loader`` with the model in eval mode.

    Returns float32 embeddings (N, D) on ``device`` and the dataset's own class labels (N,) of
    the images the loader's sampler names, in its order: the whole dataset in dataset order by
    default, a rank's ``distributed.shard`` under DDP; checks that each was embedded exactly once.
    """
    was_training = model.training
    model.eval()
    dataset = loader.dataset
    chunks, indices = [], []
    for images, _, index in progress_bar(loader, desc=desc, leave=False, disable=not progress):
        with autocast(device, amp_dtype):
            chunks.append(model(images.to(device, non_blocking=True)).float())
        indices.append(index)
    model.train(was_training)
    indices, expected = torch.cat(indices), torch.as_tensor(list(loader.sampler), dtype=torch.long)
    if not torch.equal(indices, expected):
        raise RuntimeError(f"embedded {len(indices)} images out of order or incompletely, expected {len(expected)}")
    return torch.cat(chunks), torch.as_tensor(dataset.labels)[expected]
