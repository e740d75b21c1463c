"""The smaller cases of what dml_bench refuses to trust (issue 22, item 7): a hand-edited table is
never replaced, evaluation outputs say what produced them, 16-bit images keep their shades, and a
decompression bomb or a checkpoint of NaN weights is an error naming the file."""

import json
import shutil
import struct
import zlib

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

from dml_bench.data.decode import read_rgb
from dml_bench.data.retrieval_dataset import RetrievalDataset
from dml_bench.engine.checkpoint import save_checkpoint
from dml_bench.evaluate import evaluate
from dml_bench.runtime.errors import UserError
from scripts.collect_results import main as collect_main
from tests.helpers.config import compose_config
from tests.helpers.payloads import one_paragraph
from tests.helpers.runs import exit_code, hydra_job
from tests.helpers.tiny_runs import tiny_csv
from tests.test_statistics import seed_sweep


def test_collect_results_never_replaces_a_table_it_did_not_write(tmp_path, capsys):
    seed_sweep(tmp_path / "sweep", ("cross_entropy", "contrastive"))
    paper = tmp_path / "paper"
    paper.mkdir()
    (paper / "results.tex").write_text("\\begin{tabular}{l} my edited table \\end{tabular}\n")
    assert collect_main([str(tmp_path / "sweep"), "--csv", str(paper / "table1.csv")]) == 1
    message = one_paragraph(capsys.readouterr().err)
    assert message.startswith(f"{paper / 'results.tex'} exists and was not written by collect_results.py")
    assert (paper / "results.tex").read_text() == "\\begin{tabular}{l} my edited table \\end{tabular}\n"
    assert not (paper / "table1.csv").exists()  # nothing written
    assert collect_main([str(tmp_path / "sweep"), "--csv", str(paper / "table1.csv"),
                         "--latex", str(paper / "results.tex")]) == 0  # named explicitly: replaced
    assert collect_main([str(tmp_path / "sweep"), "--csv", str(paper / "table1.csv")]) == 0  # its own: replaced
    assert "\\toprule" in (paper / "results.tex").read_text()


def test_eval_metrics_record_the_settings_that_produced_them(quickstart_run, tmp_path):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    shutil.copy(quickstart_run / "checkpoints" / "best.pt", run / "checkpoints")
    overrides = [f"checkpoint={run / 'checkpoints' / 'best.pt'}", "evaluation.recall_ks=[1,3]",
                 "trainer.progress=false"]
    with hydra_job(overrides, config_name="evaluate", output_dir=tmp_path / "evaluate") as cfg:
        assert exit_code(evaluate, cfg) == 0
    saved = json.loads((run / "checkpoints" / "best_eval_metrics.json").read_text())
    assert saved["overrides"] == overrides
    assert saved["config"]["evaluation"]["recall_ks"] == [1, 3] and set(saved["metrics"]) >= {"recall@1", "recall@3"}
    assert saved["config"]["model"] == torch.load(quickstart_run / "checkpoints" / "best.pt")["config"]["model"]


def test_a_16_bit_png_keeps_its_shades(tmp_path):
    values = (np.arange(32 * 32).reshape(32, 32) * 64).astype(np.uint16)  # 0 .. 65472
    Image.fromarray(values).save(tmp_path / "deep.png")
    assert Image.open(tmp_path / "deep.png").mode.startswith("I")
    rgb = read_rgb(tmp_path / "deep.png")
    expected = np.rint(values / 257).astype(np.uint8)  # 65535 -> 255, by hand
    assert rgb.shape == (3, 32, 32) and all(np.array_equal(rgb[c].numpy(), expected) for c in range(3))
    assert len(np.unique(rgb.numpy())) == len(np.unique(expected)) > 200  # not clipped to a few values


def png_header(path, width: int, height: int):
    """A PNG that declares ``width`` x ``height`` pixels in a few bytes (a decompression bomb's header)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0"))
                     + chunk(b"IEND", b""))
    return path


def test_a_decompression_bomb_is_an_error_naming_the_file(tmp_path):
    data = tiny_csv(tmp_path / "data")
    png_header(data / "images" / "train_0.png", 30_000, 30_000)  # 900 Mpixels in 60 bytes
    dataset = RetrievalDataset(data, "train")
    with pytest.raises(UserError) as raised:
        dataset.load_image(0)
    message = one_paragraph(str(raised.value))
    assert message.startswith(f"Cannot read image {data / 'images' / 'train_0.png'} (listed in "
                              f"{data / 'splits' / 'train.csv'}): Image size (900000000 pixels) exceeds limit")


def test_a_checkpoint_of_nan_weights_is_refused_naming_it(tmp_path, capsys):
    config = OmegaConf.to_container(compose_config(["experiment=quickstart"]), resolve=True)
    checkpoint = tmp_path / "run" / "checkpoints" / "last.pt"
    checkpoint.parent.mkdir(parents=True)
    save_checkpoint(checkpoint, {"model": {"embedder.weight": torch.tensor([1.0, float("nan")]),
                                           "embedder.bias": torch.zeros(2)}, "epoch": 2, "config": config})
    with hydra_job([f"checkpoint={checkpoint}", "trainer.progress=false"], config_name="evaluate",
                   output_dir=tmp_path / "evaluate") as cfg:
        assert exit_code(evaluate, cfg) == 1
    assert one_paragraph(capsys.readouterr().err).startswith(
        f"The checkpoint {checkpoint} holds non-finite weights (NaN or Inf) in 1 of its tensors, e.g. embedder.weight")
