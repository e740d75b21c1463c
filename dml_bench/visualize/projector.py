"""The embedding projector: a seeded subsample of the test embeddings, with each point's label and
image path (and, with a gallery, its set: query or gallery) and a sprite of thumbnails, written
by ``SummaryWriter.add_embedding`` for TensorBoard's Projector tab."""

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.tensorboard import SummaryWriter
from torchvision.transforms.v2.functional import pil_to_tensor

from dml_bench.evaluation.evaluator import Evaluation
from dml_bench.visualize.thumbnails import thumbnail

SPRITE_PICTURE = 32  # side of each point's thumbnail in the sprite
TAG = "test"  # the embedding's name in the Projector tab (with the step: "test:00042")


class Projector:
    """The points of the test split(s) ``datasets`` (``query`` and, for In-Shop, ``gallery``:
    RetrievalDatasets) that the projector shows: at most ``max_points``, drawn without
    replacement by a generator seeded with ``seed``, the same at every epoch. With
    ``distance=cosine`` it shows the L2-normalised embeddings, the space the search uses."""

    def __init__(self, datasets: dict, max_points: int, seed: int, distance: str = "cosine"):
        self.datasets, self.distance = datasets, distance
        sizes = [len(dataset) for dataset in datasets.values()]
        total = sum(sizes)
        chosen = np.sort(np.random.default_rng(seed).choice(total, size=min(max_points, total), replace=False))
        starts = np.cumsum([0, *sizes])
        self.indices = {role: chosen[(chosen >= start) & (chosen < end)] - start
                        for role, start, end in zip(datasets, starts, starts[1:])}

    def points(self, evaluation: Evaluation) -> torch.Tensor:
        """(points, dim) float32 CPU embeddings of the chosen points: queries, then gallery items."""
        chosen = torch.cat([evaluation.embeddings[role][torch.as_tensor(index).to(evaluation.embeddings[role].device)]
                            for role, index in self.indices.items()]).float().cpu()
        return F.normalize(chosen, dim=1) if self.distance == "cosine" else chosen

    def metadata_header(self) -> list[str]:
        return ["label", "path", "set"] if len(self.datasets) > 1 else ["label", "path"]

    def metadata(self) -> list[list[str]]:
        """One row per point, the columns of ``metadata_header``."""
        columns = len(self.metadata_header())
        return [[str(dataset.labels[i]), dataset.paths[i], role][:columns]
                for role, dataset in self.datasets.items() for i in self.indices[role]]

    def write(self, writer: SummaryWriter, points: torch.Tensor, step: int) -> None:
        """``points`` (from ``points``) at ``step`` under ``writer``'s log dir: ``projector_config.pbtxt``
        there, and tensors.tsv, metadata.tsv and sprite.png in ``<step, 5 digits>/test/``."""
        sprite = torch.stack([pil_to_tensor(thumbnail(dataset, int(i), SPRITE_PICTURE))
                              for role, dataset in self.datasets.items() for i in self.indices[role]])
        writer.add_embedding(points, metadata=self.metadata(), label_img=sprite.float() / 255, global_step=step,
                             tag=TAG, metadata_header=self.metadata_header())
