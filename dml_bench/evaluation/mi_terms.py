"""The generative view's two terms of I(Z;Y) = H(Z) - H(Z|Y), estimated on a set of embeddings.

Keys of the returned dict, defined once here for the trainer's logs.
"""

import torch
import torch.nn.functional as F

TIGHTNESS = "mi/tightness"
ENTROPY = "mi/entropy"
MI_PROXY = "mi/mi_proxy"

BLOCK_ROWS = 1024


def _rows(embeddings: torch.Tensor, start: int, stop: int, normalize: bool) -> torch.Tensor:
    block = embeddings[start:stop].to(torch.float64)
    return F.normalize(block, dim=1) if normalize else block


def _tightness(embeddings: torch.Tensor, labels: torch.Tensor, normalize: bool) -> float:
    """(1/n) sum_i ||z_i - c_{y_i}||^2 over all points, one pass in blocks of rows (float64).

    Uses sum_i ||z_i - c_{y_i}||^2 = sum_i ||z_i||^2 - sum_k ||s_k||^2 / n_k, s_k the class sums.
    """
    _, classes = torch.unique(labels, return_inverse=True)
    n = classes.shape[0]
    sums = None
    squared_norms = 0.0
    for start in range(0, n, BLOCK_ROWS):
        block = _rows(embeddings, start, start + BLOCK_ROWS, normalize)
        if sums is None:
            sums = block.new_zeros(int(classes.max()) + 1, block.shape[1])
        sums.index_add_(0, classes[start : start + BLOCK_ROWS], block)
        squared_norms += block.pow(2).sum().item()
    counts = torch.bincount(classes).to(sums)
    return (squared_norms - (sums.pow(2).sum(dim=1) / counts).sum().item()) / n


def _entropy(features: torch.Tensor, eps: float) -> float:
    """(d / (m(m-1))) sum_{i != j} log(D_ij^2 + eps) over the rows of ``features`` (m, d)."""
    m, d = features.shape
    squared_norms = features.pow(2).sum(dim=1)
    total = 0.0
    for start in range(0, m, BLOCK_ROWS):
        block = features[start : start + BLOCK_ROWS]
        squared = squared_norms[start : start + BLOCK_ROWS, None] + squared_norms[None, :]
        logs = (squared - 2.0 * block @ features.T).clamp_min(0.0).add(eps).log()
        rows = torch.arange(block.shape[0], device=features.device)
        logs[rows, start + rows] = 0.0
        total += logs.sum().item()
    return d * total / (m * (m - 1))


@torch.no_grad()
def mi_terms(
    embeddings,
    labels,
    *,
    normalize: bool = True,
    max_points: int = 5000,
    seed: int = 0,
    eps: float = 1e-12,
) -> dict[str, float]:
    """Tightness (~ H(Z|Y)), entropy (~ H(Z)) and their difference (an I(Z;Y) proxy).

    embeddings: (n, d) torch tensor (any device) or numpy array; labels: (n,) integers.

    - ``TIGHTNESS`` = (1/n) sum_i ||z_i - c_{y_i}||^2, c_k the mean of class k: the center loss
      (eq. 3) per sample without its 1/2; eq. 5 bounds H(Z|Y) by half of it plus (d/2) log(2 pi).
      Computed on all n points, in blocks of rows.
    - ``ENTROPY`` = (d / (m(m-1))) sum_{i != j} log(D_ij^2 + eps), eq. 7's estimate of H(Z)
      without its additive constants. It is d times the mean log squared distance over pairs, so
      when n > ``max_points`` it is computed on m = ``max_points`` points drawn without
      replacement with a ``seed``-ed generator (an unbiased estimate of that mean; the pairwise
      work is O(m^2 d): about 10 s on 2 CPU cores for m = 5000, d = 2048). ``eps`` keeps log 0
      finite for duplicate points: such a pair counts log(eps) (about -27.6 for the default).
    - ``MI_PROXY`` = ENTROPY - TIGHTNESS, exactly the difference of the two numbers above.
      Caveat: they are on different scales (the entropy grows with d and is a log of distances,
      the tightness is a squared distance with no factor 1/2 and no constants), so the proxy is an
      I(Z;Y) estimate only up to unknown scale and offset. Compare it between runs with the same
      d and normalisation, and look at its two parts rather than its absolute value.

    ``normalize`` (default True) L2-normalises the features first: the retrieval evaluation is
    cosine and Lemma 1 assumes normalised features; raw features make every term depend on the
    feature norms, which differ between losses and epochs. All sums are in float64.
    """
    embeddings = torch.as_tensor(embeddings)
    labels = torch.as_tensor(labels, device=embeddings.device)
    n = labels.shape[0]
    if n < 2 or len(embeddings) != n:
        raise ValueError(
            f"mi_terms needs at least 2 embeddings with one label each, got {len(embeddings)} "
            f"embeddings and {n} labels"
        )
    tightness = _tightness(embeddings, labels, normalize)
    if n > max_points:
        generator = torch.Generator().manual_seed(seed)
        chosen = torch.randperm(n, generator=generator)[:max_points].sort().values
        embeddings = embeddings[chosen.to(embeddings.device)]
    entropy = _entropy(_rows(embeddings, 0, len(embeddings), normalize), eps)
    return {TIGHTNESS: tightness, ENTROPY: entropy, MI_PROXY: entropy - tightness}


def mi_probe(embeddings: dict) -> dict[str, float]:
    """The trainer's probe: the MI terms of an evaluation's query embeddings."""
    return mi_terms(embeddings["query"], embeddings["query_labels"])
