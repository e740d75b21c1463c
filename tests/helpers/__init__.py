"""What several test files share, imported one way everywhere: ``from tests.helpers.MODULE import NAME``.

- ``config``: the project root and the real config tree, composed as the entry points compose it.
- ``session``: the folder a test session writes to (under pytest's basetemp) and the glyph data
  the training tests share, prepared there once.
- ``runs``: real training runs, in a subprocess where the command line is under test
  (``run_train``) or in this process (``hydra_job`` + ``exit_code``); their common overrides.
- ``build``: the objects of a run built from a composed config as ``dml_bench.train`` builds them.
- ``tiny_runs``: the smallest real runs, for the reliability tests (resume, failures, DDP).
- ``miniature_datasets``: miniature copies of the four benchmarks' official files.

Fixtures live in tests/conftest.py.
"""
