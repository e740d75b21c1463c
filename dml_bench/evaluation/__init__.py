from dml_bench.evaluation.retrieval import retrieval_metrics

__all__ = ["retrieval_metrics"]
