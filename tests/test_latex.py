"""The LaTeX results table: the Markdown table's numbers in %, best in bold, a dagger where the
comparison's Holm-corrected p < 0.05; written by collect_results.py beside the CSV."""

import statistics

from dml_bench.comparison.compare import compare
from dml_bench.comparison.latex import escape, latex_table
from dml_bench.comparison.runs import read_runs
from scripts.collect_results import main as collect_main
from tests.test_results import t_half_width, write_run
from tests.test_statistics import SEEDS, recall_of, rows_by, seed_sweep


def body_rows(tex: str) -> dict[str, list[str]]:
    """The table's rows between \\midrule and \\bottomrule, by their first cell."""
    lines = tex.splitlines()
    body = lines[lines.index("\\midrule") + 1: lines.index("\\bottomrule")]
    cells = [line.removesuffix(" \\\\").split(" & ") for line in body]
    return {row[0]: row[1:] for row in cells}


def test_values_in_percent_with_ci_bold_best_and_daggers_where_holm_p_is_small(tmp_path):
    seed_sweep(tmp_path, ("cross_entropy", "contrastive", "triplet"))
    records = read_runs([tmp_path])
    comparison = compare(records, "loss=cross_entropy")
    tex = latex_table(records, comparison)
    lines = tex.splitlines()
    assert lines[lines.index("\\toprule") + 1] == "loss & runs & R@1 & MAP@R \\\\"
    assert "\\begin{tabular}{lrcc}" in lines
    rows = body_rows(tex)
    assert list(rows) == ["cross\\_entropy", "contrastive", "triplet"]
    for loss, first in (("cross_entropy", "cross\\_entropy"), ("contrastive", "contrastive"), ("triplet", "triplet")):
        recalls = list(map(float, recall_of(loss)))
        mean, ci = 100 * statistics.mean(recalls), 100 * t_half_width(recalls)
        runs, recall_cell, _ = rows[first]
        assert runs == str(len(SEEDS))
        # contrastive is clearly better than the baseline (Holm p ~ 2e-5), triplet not (p ~ 1)
        assert recall_cell.replace("\\textbf{", "").replace("}", "").removesuffix("$^\\dagger$") == \
            f"{mean:.1f} $\\pm$ {ci:.1f}"
        holm_p = rows_by(comparison).get((loss, "recall@1"), {}).get("p_holm")
        assert recall_cell.endswith("$^\\dagger$") == (holm_p is not None and holm_p < 0.05)
        assert recall_cell.startswith("\\textbf{") == (loss == "contrastive")
    assert rows["contrastive"][1].endswith("$^\\dagger$") and not rows["triplet"][1].endswith("$^\\dagger$")
    assert "% $^\\dagger$: differs from loss=cross_entropy at Holm-corrected p < 0.05 (paired t" in tex
    assert "% Epochs selected on the test split." in lines


def test_equal_displayed_means_are_all_bold_missing_values_are_dashes_and_failed_configurations_left_out(tmp_path):
    write_run(tmp_path / "0", ["loss=a"], {"recall@1": 0.7341, "map@r": 0.2})
    write_run(tmp_path / "1", ["loss=b"], {"recall@1": 0.7339})  # both print 73.4; b has no map@r
    write_run(tmp_path / "2", ["loss=c"], None, error="The loss became nan")
    write_run(tmp_path / "3", ["loss=a"], None, error="killed")
    tex = latex_table(read_runs([tmp_path]))
    rows = body_rows(tex)
    assert rows["a"] == ["1", "\\textbf{73.4}", "\\textbf{20.0}"]
    assert rows["b"] == ["1", "\\textbf{73.4}", "--"]
    assert "c" not in rows and "% Not shown, no run completed: loss=c." in tex  # every run of c failed
    assert "% 2 failed runs left out" not in tex and "% 1 failed run left out" in tex  # a's failed run
    assert "no configuration has a completed run" in latex_table(read_runs([tmp_path / "2"]))


def test_a_selected_on_column_only_when_the_groups_differ_in_it(tmp_path):
    write_run(tmp_path / "0", ["protocol=paper"], {"recall@1": 0.5})
    write_run(tmp_path / "1", ["protocol=rigorous"], {"recall@1": 0.6})
    (tmp_path / "1" / "metrics.json").write_text(
        '{"metrics": {"recall@1": 0.6}, "best_epoch": 3, "status": "completed", "selected_on": "validation"}')
    tex = latex_table(read_runs([tmp_path]))
    assert "protocol & runs & selected on & R@1 \\\\" in tex and "\\begin{tabular}{lrlc}" in tex
    assert body_rows(tex)["rigorous"] == ["1", "validation", "\\textbf{60.0}"]
    assert "Epochs selected on" not in tex


def test_latex_special_characters_are_escaped():
    assert escape("cross_entropy") == "cross\\_entropy"
    assert escape("a&b%c$d#e{f}g~h^i\\j") == (
        "a\\&b\\%c\\$d\\#e\\{f\\}g\\textasciitilde{}h\\textasciicircum{}i\\textbackslash{}j")


def test_collect_results_writes_the_latex_table_beside_the_csv(tmp_path, capsys):
    seed_sweep(tmp_path / "sweep", ("cross_entropy", "contrastive"))
    assert collect_main([str(tmp_path / "sweep"), "--compare", "loss=cross_entropy"]) == 0
    written = tmp_path / "sweep" / "results.tex"
    assert f"LaTeX: {written}" in capsys.readouterr().out
    assert "$^\\dagger$" in written.read_text()
    assert collect_main([str(tmp_path / "sweep"), "--latex", str(tmp_path / "table.tex")]) == 0
    assert "\\toprule" in (tmp_path / "table.tex").read_text() and "dagger" not in (tmp_path / "table.tex").read_text()
