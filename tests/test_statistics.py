"""Statistics of the results tables: paired comparisons of configurations against a baseline
(paired Student t, Wilcoxon, Holm; for single runs, over the test queries, the paired randomization
test and the paired bootstrap interval), set
against scipy.stats computed here independently, and the per-query file they read."""

import csv
import json

import numpy as np
import pytest
import torch
from scipy import stats

from dml_bench.comparison.compare import compare, comparison_table
from dml_bench.comparison.runs import read_run, read_runs
from dml_bench.comparison.significance import holm, paired_randomization, paired_test
from dml_bench.evaluation import retrieval_metrics
from dml_bench.evaluation.per_query import PER_QUERY_FILE, check_against_metrics, load_per_query, save_per_query
from dml_bench.evaluation.retrieval import QUERY_INDEX, per_query_means
from dml_bench.runtime.errors import UserError
from scripts.collect_results import main as collect_main
from tests.test_results import write_run

SEEDS = range(5)
BASE = np.array([0.50, 0.51, 0.49, 0.505, 0.495])  # recall@1 of the baseline, seed by seed
# Differences from it: +0.10 ± ~0.01 (clearly significant), ~0 (clearly not), exactly 0.
OFFSETS = {
    "contrastive": 0.10 + np.array([0.010, -0.008, 0.005, 0.002, -0.004]),
    "triplet": np.array([0.004, -0.006, 0.005, -0.002, 0.001]),
    "same": np.zeros(5),
}


def recall_of(loss):
    return BASE + OFFSETS[loss] if loss in OFFSETS else BASE


def seed_sweep(root, losses=("cross_entropy", "contrastive", "triplet")):
    """One run per loss and seed; map@r is recall@1 / 2 throughout."""
    job = 0
    for loss in losses:
        for seed, recall in zip(SEEDS, recall_of(loss)):
            write_run(root / str(job), [f"loss={loss}", "optimizer=adam", f"seed={seed}"],
                      {"recall@1": float(recall), "map@r": float(recall) / 2, "num_queries": 100})
            job += 1


def rows_by(comparison):
    return {(row["config"]["loss"], row["metric"]): row for row in comparison["rows"]}


def test_paired_comparison_agrees_with_scipy(tmp_path):
    seed_sweep(tmp_path, ("cross_entropy", "contrastive", "triplet", "same"))
    comparison = compare(read_runs([tmp_path]), "loss=cross_entropy")
    assert comparison["keys"] == ["loss"]
    rows = rows_by(comparison)
    assert set(rows) == {(loss, m) for loss in OFFSETS for m in ("recall@1", "map@r")}
    for (loss, metric), row in rows.items():
        scale = 0.5 if metric == "map@r" else 1.0
        base = [float(v) * scale for v in BASE]
        other = [float(v) * scale for v in recall_of(loss)]
        d = np.subtract(other, base)
        assert row["method"] == "paired t" and row["n"] == 5
        assert row["baseline"] == pytest.approx(np.mean(base), abs=1e-15)
        assert row["mean"] == pytest.approx(np.mean(other), abs=1e-15)
        assert row["difference"] == pytest.approx(d.mean(), abs=1e-15)
        low, high = (stats.t.interval(0.95, 4, loc=d.mean(), scale=stats.sem(d)) if d.any()
                     else (0.0, 0.0))
        assert (row["ci_low"], row["ci_high"]) == pytest.approx((low, high), abs=1e-12)
        if loss == "same":
            assert row["p"] is None and row["p_wilcoxon"] is None
            assert "Wilcoxon n/a: all differences zero" in row["notes"]
            continue
        assert row["p"] == pytest.approx(stats.ttest_rel(other, base).pvalue, rel=1e-9)
        assert row["p_wilcoxon"] == pytest.approx(stats.wilcoxon(other, base).pvalue, rel=1e-9)

    significant, insignificant = rows["contrastive", "recall@1"], rows["triplet", "recall@1"]
    assert significant["excludes_zero"] and significant["ci_low"] > 0.08 and significant["p"] < 1e-4
    assert significant["p_wilcoxon"] == pytest.approx(1 / 16)  # the least of 5 pairs, exactly
    assert not insignificant["excludes_zero"] and insignificant["ci_low"] < 0 < insignificant["ci_high"]
    assert insignificant["p"] > 0.5

    # Holm over the 4 rows with a t p-value (4 of 6: "same" has none), by its definition.
    ordered = [row for row in comparison["rows"] if row["p"] is not None]
    ps = [row["p"] for row in ordered]
    for row in ordered:
        smaller_or_equal = sorted(p for p in ps if p <= row["p"])
        expected = max(min(1.0, (len(ps) - i) * p) for i, p in enumerate(smaller_or_equal))
        assert row["p_holm"] == pytest.approx(expected, rel=1e-12)
    assert rows["same", "recall@1"]["p_holm"] is None


def test_holm_by_hand():
    # Sorted 0.01, 0.03, 0.04 (m = 3): 3 x 0.01 = 0.03, 2 x 0.03 = 0.06, 1 x 0.04 = 0.04 -> 0.06 (running max).
    assert holm([0.04, 0.01, 0.03]) == pytest.approx([0.06, 0.03, 0.06])
    assert holm([0.5, None, 0.9]) == [pytest.approx(1.0), None, pytest.approx(1.0)]  # 2 x 0.5, clipped at 1
    assert holm([]) == []


def test_paired_test_of_too_few_or_equal_values():
    one = paired_test([0.5], [0.6])
    assert one["n"] == 1 and one["difference"] == pytest.approx(0.1)
    assert one["ci_low"] is None and one["p"] is None and one["p_wilcoxon"] is None and one["notes"]
    constant = paired_test([0.5, 0.25, 0.75], [0.625, 0.375, 0.875])  # exact in binary: all 0.125
    assert constant["ci_low"] == 0.125 == constant["ci_high"]
    assert constant["p"] is None and constant["p_wilcoxon"] is not None
    assert "t n/a: all differences equal" in constant["notes"]


def table_cells(text, first_cell):
    """The cells of the Markdown table whose header starts with ``| first_cell ``."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"| {first_cell} "))
    table = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        table.append([cell.strip() for cell in line.strip("|").split("|")])
    return table[0], table[2:]


def read_csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def assert_markdown_carries_csv(text, csv_rows):
    """Every CSV number is in the Markdown row of its configuration and metric, as printed."""
    headers, md_rows = table_cells(text, "loss")
    md = {(row[0], row[1]): dict(zip(headers, row)) for row in md_rows}
    assert len(md) == len(csv_rows)

    def number(row, column, digits):
        return "" if row[column] == "" else format(float(row[column]), digits)

    for row in csv_rows:
        cells = md[row["loss"], row["metric"]]
        assert cells["method"].startswith(f"{row['method']}, {row['n']} ")
        for column in ("baseline", "mean", "difference"):
            assert cells[column] == number(row, column, ".4f")
        ci = f"[{number(row, 'ci_low', '.4f')}, {number(row, 'ci_high', '.4f')}]" if row["ci_low"] else ""
        assert cells["95% CI"] == ci
        for header, column in (("p", "p"), ("p (Holm)", "p_holm"), ("Wilcoxon p", "p_wilcoxon"),
                               ("Wilcoxon p (Holm)", "p_wilcoxon_holm")):
            assert cells[header] == number(row, column, ".3g") or (row[column] == "" and
                                                                   cells[header].startswith("n/a"))
        assert cells["CI excludes 0"] == ("*" if row["excludes_zero"] == "1" else "")


def test_compare_from_the_command_line(tmp_path, capsys):
    seed_sweep(tmp_path / "sweep", ("cross_entropy", "contrastive", "triplet", "same"))
    assert collect_main([str(tmp_path / "sweep"), "--compare", "loss=cross_entropy"]) == 0
    out = capsys.readouterr().out
    text = out[out.index("Against loss=cross_entropy"):]
    assert "paired Student t" in text and "Holm" in text
    rows = read_csv(tmp_path / "sweep" / "comparison.csv")
    assert {r["loss"] for r in rows} == {"contrastive", "triplet", "same"}
    assert_markdown_carries_csv(text, rows)
    by = {(r["loss"], r["metric"]): r for r in rows}
    assert by["contrastive", "recall@1"]["excludes_zero"] == "1" and by["triplet", "recall@1"]["excludes_zero"] == "0"
    assert "n/a: all differences zero" in text
    # the numbers are those of compare() itself
    expected = rows_by(compare(read_runs([tmp_path / "sweep"]), "loss=cross_entropy"))
    assert float(by["contrastive", "recall@1"]["p_holm"]) == expected["contrastive", "recall@1"]["p_holm"]


def test_compare_across_another_override_matches_its_values(tmp_path):
    """loss x lr: each loss is set against cross-entropy at its own lr; an lr without a
    cross-entropy run is listed as not compared."""
    grid = [(loss, lr, seed) for loss in ("ce", "arc") for lr in ("0.1", "0.2") for seed in (0, 1)]
    for job, (loss, lr, seed) in enumerate(grid):
        if loss == "ce" and lr == "0.2":
            continue
        write_run(tmp_path / str(job), [f"loss={loss}", f"lr={lr}", f"seed={seed}"],
                  {"recall@1": 0.5 + 0.1 * (loss == "arc") + 0.01 * seed + 0.001 * (lr == "0.2")})
    comparison = compare(read_runs([tmp_path]), "loss=ce")
    assert [row["config"] for row in comparison["rows"]] == [{"loss": "arc", "lr": "0.1"}]
    assert comparison["rows"][0]["difference"] == pytest.approx(0.1)
    assert comparison["skipped"] == [{"loss": "arc", "lr": "0.2"}]
    assert "Not compared, no baseline with their other overrides: loss=arc lr=0.2" in comparison_table(comparison)[0]


@pytest.mark.parametrize(("argument", "message"), [
    ("loss=arcface", "no runs with loss=arcface; loss takes the values contrastive, cross_entropy, triplet"),
    ("optimizer=adam", "optimizer does not vary between these runs"),
    ("loss", "--compare takes KEY=VALUE"),
])
def test_a_baseline_matching_no_group_is_an_error(tmp_path, capsys, argument, message):
    seed_sweep(tmp_path)
    assert collect_main([str(tmp_path), "--compare", argument]) == 1
    assert message in capsys.readouterr().err


def test_unmatched_seeds_are_listed(tmp_path, capsys):
    seed_sweep(tmp_path)
    (tmp_path / "9" / "metrics.json").unlink()  # contrastive seed 4: failed
    write_run(tmp_path / "20", ["loss=triplet", "optimizer=adam", "seed=7"], {"recall@1": 0.5})
    assert collect_main([str(tmp_path), "--compare", "loss=cross_entropy"]) == 1
    err = capsys.readouterr().err
    assert "matched by seed and protocol.fold" in err
    assert "loss=contrastive: baseline seed=4 has no run here" in err
    assert "loss=triplet: seed=7 has no baseline run" in err


def test_two_runs_of_one_seed_are_an_error(tmp_path):
    seed_sweep(tmp_path)
    write_run(tmp_path / "20", ["loss=triplet", "optimizer=adam", "seed=3"], {"recall@1": 0.5})
    with pytest.raises(UserError, match=r"two runs of loss=triplet with seed=3: .*/13 and .*/20"):
        compare(read_runs([tmp_path]), "loss=cross_entropy")


def test_runs_are_matched_by_seed_and_fold(tmp_path):
    """Folds are replicates too: (seed, fold) pairs are matched, in whatever order the runs come."""
    job = 0
    for loss, offset in (("b", 0.05), ("a", 0.0)):
        for fold in (1, 0):
            for seed in (0, 1):
                write_run(tmp_path / f"{job:02d}", [f"loss={loss}", f"protocol.fold={fold}", f"seed={seed}"],
                          {"recall@1": 0.4 + 0.1 * fold + 0.01 * seed + offset + 0.001 * job * (loss == "b")})
                job += 1
    records = read_runs([tmp_path])
    row = compare(records, "loss=a")["rows"][0]
    assert row["n"] == 4
    by_replicate = {(r["overrides"]["loss"], r["overrides"]["protocol.fold"], r["overrides"]["seed"]):
                    r["metrics"]["recall@1"] for r in records}
    d = [by_replicate["b", f, s] - by_replicate["a", f, s] for f in "01" for s in "01"]
    assert row["difference"] == pytest.approx(np.mean(d))
    assert row["p"] == pytest.approx(stats.ttest_1samp(d, 0).pvalue)


# --- single runs: the paired randomization test and bootstrap over the test queries --------------------------------

NUM_QUERIES = 2000


def per_query_pair(rng):
    """Per-query values of two runs on the same queries: B hits exactly 10% more queries at
    K = 1 (A's hits and 200 of its misses); AP@R differs by zero-mean noise."""
    hits_a = rng.random(NUM_QUERIES) < 0.5
    misses = np.flatnonzero(~hits_a)
    hits_b = hits_a.copy()
    hits_b[rng.choice(misses, NUM_QUERIES // 10, replace=False)] = True
    ap_a = rng.random(NUM_QUERIES)
    ap_b = np.clip(ap_a + rng.normal(0, 0.05, NUM_QUERIES), 0, 1)
    index = np.arange(NUM_QUERIES) * 2  # the kept queries, every other one
    return ({"recall@1": hits_a, "map@r": ap_a, QUERY_INDEX: index},
            {"recall@1": hits_b, "map@r": ap_b, QUERY_INDEX: index})


def single_run(folder, loss, values):
    """A run folder with per_query.npz and the metrics.json its means make, as the trainer writes."""
    write_run(folder, [f"loss={loss}"], per_query_means({k: np.asarray(v, np.float32) if v.dtype.kind == "f" else v
                                                        for k, v in values.items()}))
    save_per_query(folder / PER_QUERY_FILE, values, {"epoch": 3, "split": "test"})


def test_paired_randomization_is_seeded_and_recovers_a_known_difference():
    a, b = per_query_pair(np.random.default_rng(0))
    differences = {m: b[m].astype(float) - a[m].astype(float) for m in ("recall@1", "map@r")}
    first = paired_randomization(differences, samples=4000, seed=1)
    assert first == paired_randomization(differences, samples=4000, seed=1)
    assert first != paired_randomization(differences, samples=4000, seed=2)

    hit = first["recall@1"]
    assert hit["n"] == NUM_QUERIES and hit["difference"] == pytest.approx(0.10)
    assert hit["ci_low"] < 0.10 < hit["ci_high"] and hit["ci_low"] > 0
    assert hit["p"] == pytest.approx(2 / 4001)  # no sign flip reaches 0.10: (0 + 1) / (4000 + 1), twice
    # The percentile interval is close to the normal one of a mean of 2000 values.
    normal = stats.norm.ppf(0.975) * differences["recall@1"].std(ddof=1) / np.sqrt(NUM_QUERIES)
    assert (hit["ci_high"] - hit["ci_low"]) / 2 == pytest.approx(normal, rel=0.1)
    ap = first["map@r"]
    assert ap["ci_low"] < 0 < ap["ci_high"] and ap["p"] > 0.05


def test_randomization_p_is_the_exact_sign_flip_test_for_few_queries():
    """For 10 queries, 2^10 sign flips: scipy enumerates them all, and so does this float64 brute force."""
    d = np.array([0.5, 0.25, 1.0, 0.0, 0.75, 0.5, -0.25, 1.0, 0.25, -0.5])
    flips = np.array(np.meshgrid(*[[1.0, -1.0]] * len(d))).reshape(len(d), -1).T
    means = (flips * d).mean(axis=1)
    one_sided = min((means >= d.mean() - 1e-12).mean(), (means <= d.mean() + 1e-12).mean())
    result = paired_randomization({"m": d}, samples=5000, seed=0)["m"]
    assert result["p"] == pytest.approx(min(1.0, 2 * one_sided)) and one_sided == 42 / 1024


def test_paired_randomization_is_scipys_tests_on_the_differences():
    rng = np.random.default_rng(3)
    a, b = rng.random(300), rng.random(300) + 0.03
    result = paired_randomization({"m": b - a}, samples=2000, seed=7)["m"]
    mean = lambda x, y, axis: np.mean(y - x, axis=axis)  # noqa: E731
    test = stats.permutation_test((a, b), mean, permutation_type="samples", n_resamples=2000,
                                  vectorized=True, rng=np.random.default_rng(7))
    interval = stats.bootstrap((a, b), mean, paired=True, n_resamples=2000, method="percentile",
                               vectorized=True, rng=np.random.default_rng(7)).confidence_interval
    assert result["p"] == pytest.approx(test.pvalue)
    assert (result["ci_low"], result["ci_high"]) == pytest.approx((interval.low, interval.high))
    constant = paired_randomization({"m": np.full(5, 0.2)}, samples=100)["m"]
    assert (constant["ci_low"], constant["ci_high"], constant["p"]) == pytest.approx((0.2, 0.2, 2 / 32))


def test_single_runs_are_compared_over_their_queries(tmp_path, capsys):
    a, b = per_query_pair(np.random.default_rng(0))
    single_run(tmp_path / "0", "cross_entropy", a)
    single_run(tmp_path / "1", "contrastive", b)
    arguments = [str(tmp_path), "--compare", "loss=cross_entropy", "--bootstrap-samples", "2000"]
    assert collect_main([*arguments, "--bootstrap-seed", "5"]) == 0
    out = capsys.readouterr().out
    text = out[out.index("Against loss=cross_entropy"):]
    assert "2000 random sign flips" in text and "2000 resamples" in text and "seeded 5" in text
    rows = read_csv(tmp_path / "comparison.csv")
    assert_markdown_carries_csv(text, rows)
    by = {r["metric"]: r for r in rows}
    assert by["recall@1"]["method"] == "randomization" and by["recall@1"]["n"] == str(NUM_QUERIES)
    assert float(by["recall@1"]["ci_low"]) < 0.10 < float(by["recall@1"]["ci_high"])
    assert by["recall@1"]["excludes_zero"] == "1" and by["map@r"]["excludes_zero"] == "0"
    assert "randomization, 2000 queries" in text and "n/a: randomization" in text
    # Seeded: the same numbers again; another seed, another interval.
    assert collect_main([*arguments, "--bootstrap-seed", "5"]) == 0
    assert read_csv(tmp_path / "comparison.csv") == rows
    assert collect_main([*arguments, "--bootstrap-seed", "6"]) == 0
    assert read_csv(tmp_path / "comparison.csv")[0]["ci_low"] != rows[0]["ci_low"]


def test_comparing_over_queries_needs_the_same_queries_and_current_files(tmp_path):
    a, b = per_query_pair(np.random.default_rng(0))
    single_run(tmp_path / "0", "cross_entropy", a)
    single_run(tmp_path / "1", "contrastive", b | {QUERY_INDEX: b[QUERY_INDEX] + 1})
    with pytest.raises(UserError, match="hold different queries .*the same test set"):
        compare(read_runs([tmp_path]), "loss=cross_entropy")
    single_run(tmp_path / "2", "triplet", b)
    (tmp_path / "2" / "metrics.json").write_text(json.dumps({"metrics": {"recall@1": 0.1}, "status": "completed"}))
    (tmp_path / "1" / PER_QUERY_FILE).unlink()
    with pytest.raises(UserError, match=r"1/per_query.npz is missing"):
        compare(read_runs([tmp_path]), "loss=cross_entropy")
    save_per_query(tmp_path / "1" / PER_QUERY_FILE, b)
    with pytest.raises(UserError, match=r"2/per_query.npz does not match .*metrics.json \(recall@1: 0.6"):
        compare(read_runs([tmp_path]), "loss=cross_entropy")


# --- the per-query file ---------------------------------------------------------------------------------------------

def test_per_query_file_round_trips_and_averages_to_the_metrics(tmp_path):
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 30, size=301)
    x = (rng.standard_normal((30, 8))[labels] + 0.8 * rng.standard_normal((301, 8))).astype(np.float32)
    labels[:3] = [100, 101, 102]  # alone in their class: left out
    metrics, values = retrieval_metrics(x, labels, recall_ks=(1, 2, 4), per_query=True)
    path = save_per_query(tmp_path, values, {"epoch": 7, "recall_ks": [1, 2, 4]})
    assert path == tmp_path / PER_QUERY_FILE

    loaded, metadata = load_per_query(path)
    assert metadata == {"epoch": 7, "recall_ks": [1, 2, 4]}
    assert loaded.keys() == values.keys()
    assert loaded[QUERY_INDEX].tolist() == list(range(3, 301))
    for name in ("recall@1", "recall@2", "recall@4"):
        assert loaded[name].dtype == np.bool_ and np.array_equal(loaded[name], values[name])
    for name in ("map@r", "r_precision"):
        assert loaded[name].dtype == np.float32 and np.array_equal(loaded[name], values[name].astype(np.float32))

    # Means equal metrics.json's values, read back from a run folder.
    write_run(tmp_path / "run", [], json.loads(json.dumps(metrics)))
    recorded = read_run(tmp_path / "run")["metrics"]
    assert check_against_metrics(loaded, recorded) == []
    for name, value in per_query_means(loaded).items():
        assert value == pytest.approx(recorded[name], abs=1e-6), name
    assert check_against_metrics(loaded, recorded | {"recall@2": recorded["recall@2"] + 0.01}) == [
        f"recall@2: {recorded['recall@2']:.6f} vs {recorded['recall@2'] + 0.01:.6f}"]

    # Compact: bits packed, floats in float32.
    with np.load(path) as archive:
        assert archive["recall@1"].dtype == np.uint8 and archive["recall@1"].shape == (-(-298 // 8),)
        assert archive["map@r"].dtype == np.float32 and archive[QUERY_INDEX].dtype == np.int32


def test_per_query_file_rejects_ragged_values(tmp_path):
    with pytest.raises(ValueError, match="query_index"):
        save_per_query(tmp_path / "p.npz", {"recall@1": np.ones(3, bool)})
    with pytest.raises(ValueError, match="'map@r' must be a 1-D array of 3 values"):
        save_per_query(tmp_path / "p.npz", {QUERY_INDEX: np.arange(3), "map@r": np.ones(4)})
    assert not list(tmp_path.iterdir())


def test_the_evaluator_keeps_the_per_query_values_of_its_last_call(tmp_path):
    from torch import nn
    from torch.utils.data import DataLoader

    from dml_bench.evaluation.evaluator import RetrievalEvaluator

    class Points(torch.utils.data.Dataset):
        """Eight 2-D points of four classes, items shaped like RetrievalDataset's."""

        labels = [0, 0, 1, 1, 2, 2, 3, 3]
        points = torch.randn(8, 2, generator=torch.Generator().manual_seed(0))

        def __len__(self):
            return len(self.labels)

        def __getitem__(self, index):
            return self.points[index], self.labels[index], index

    evaluator = RetrievalEvaluator(DataLoader(Points(), batch_size=3), recall_ks=(1, 2), progress=False)
    evaluation = evaluator(nn.Identity(), torch.device("cpu"))
    metrics = evaluation.metrics
    assert per_query_means(evaluation.per_query) == metrics
    assert evaluation.per_query[QUERY_INDEX].tolist() == list(range(8))
    loaded, _ = load_per_query(save_per_query(tmp_path, evaluation.per_query))
    assert check_against_metrics(loaded, metrics) == []
