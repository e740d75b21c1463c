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


def eval_tag(metric: str) -> str:
    """TensorBoard tag of an evaluation metric, e.g. ``eval/recall@1``."""
    return f"eval/{metric}"
