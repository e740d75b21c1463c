"""Metric keys, defined once: metrics.json, history.jsonl and TensorBoard tags all use these."""

MAP_AT_R = "map@r"
R_PRECISION = "r_precision"
NUM_QUERIES = "num_queries"
NMI = "nmi"


def recall_key(k: int) -> str:
    return f"recall@{k}"


def euclidean_key(metric: str) -> str:
    """The key of a metric computed with euclidean distance beside the cosine one, e.g.
    ``euclidean_recall@1`` (the paper's official code reports both)."""
    return f"euclidean_{metric}"


def short_name(metric: str) -> str:
    """How a paper's table heads a metric: ``R@1``, ``MAP@R``, ``RP``, ``NMI``, ``R@1 (L2)`` for
    ``euclidean_recall@1``; another key as it is."""
    if metric.startswith("euclidean_"):
        return f"{short_name(metric.removeprefix('euclidean_'))} (L2)"
    if metric.startswith("recall@"):
        return "R@" + metric.removeprefix("recall@")
    return {MAP_AT_R: "MAP@R", R_PRECISION: "RP", NMI: "NMI"}.get(metric, metric)


def eval_tag(metric: str) -> str:
    """TensorBoard tag of an evaluation metric, e.g. ``eval/recall@1``."""
    return f"eval/{metric}"
