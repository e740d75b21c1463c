"""Which losses can take a miner's output, checked once when the run is built.

A miner returns index tuples (pairs or triplets) that the loss receives as ``indices_tuple``. Three
cases, from reading pytorch-metric-learning 2.9's ``compute_loss`` of each loss:

- Pair and triplet losses (contrastive, triplet, multi-similarity, margin, NT-Xent...) compute the
  loss over the mined tuples only.
- Classifier and proxy losses (ArcFace, CosFace, NormSoftmax, ProxyAnchor, ProxyNCA, SoftTriple)
  turn the tuples into per-sample weights (``lmu.convert_to_weights``): a sample's weight is how
  often it was mined over the count of the most mined one, so a sample in no tuple drops out
  (ProxyNCA counts anchors only; ProxyAnchor adds weight - 1 inside its exponentials instead of
  multiplying). When the miner finds nothing, every sample weighs 1. Allowed, and said in the
  log, since it is not what "mining" means for a pairwise loss.
- Our own losses whose ``accepts_indices_tuple`` is False (cross-entropy, center, SNCA, SPCE,
  PCE) have no use for tuples: pairing one with a miner is a config error.
"""

import logging

from pytorch_metric_learning.losses import (
    LargeMarginSoftmaxLoss,
    NCALoss,
    NormalizedSoftmaxLoss,
    ProxyAnchorLoss,
    SoftTripleLoss,
)
from pytorch_metric_learning.miners import TripletMarginMiner
from torch import nn

from dml_bench.runtime.errors import UserError

log = logging.getLogger(__name__)

SAMPLE_WEIGHTING_LOSSES = (
    LargeMarginSoftmaxLoss, NCALoss, NormalizedSoftmaxLoss, ProxyAnchorLoss, SoftTripleLoss,
)
TRIPLET_TYPES = ("all", "hard", "semihard", "easy")


def check_miner(loss: nn.Module, miner: nn.Module, loss_target: str, miner_target: str) -> None:
    """Raise a UserError when ``loss`` cannot use ``miner``'s tuples; log when it only weighs
    samples by them. ``*_target`` are the config's ``_target_`` strings, named in the messages."""
    if not getattr(loss, "accepts_indices_tuple", True):
        raise UserError(
            f"miner._target_={miner_target} cannot be used with loss._target_={loss_target}: "
            f"{type(loss).__name__} takes no mined pairs or triplets, so the miner would do "
            "nothing. Use miner=none with this loss, or a pairwise loss (loss=contrastive, "
            "triplet, multi_similarity, margin, ntxent) with this miner."
        )
    if isinstance(miner, TripletMarginMiner) and miner.type_of_triplets not in TRIPLET_TYPES:
        raise UserError(
            f"miner.type_of_triplets={miner.type_of_triplets} is not one of "
            f"{', '.join(TRIPLET_TYPES)}; pytorch-metric-learning would silently mine all "
            "triplets. Set e.g. miner.type_of_triplets=semihard."
        )
    if isinstance(loss, SAMPLE_WEIGHTING_LOSSES):
        log.info("%s uses the tuples of %s only as per-sample weights (see dml_bench.losses.compat)",
                 type(loss).__name__, type(miner).__name__)
