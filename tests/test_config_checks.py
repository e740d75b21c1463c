"""Config values of the wrong type or range are refused before anything is built, in one paragraph
that names every bad key, its value, what it must be and an example; every shipped config passes.
Options that this run ignores (trainer.amp=bf16 on a CPU, a launcher without -m) say so once."""

import logging

import pytest
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import OmegaConf, read_write

from dml_bench.config_checks import CHECKS, check_config, warn_unused_plugins
from dml_bench.evaluate import evaluate
from dml_bench.evaluation.knn import BACKENDS
from dml_bench.evaluation.retrieval import DISTANCES
from dml_bench.runtime.device import resolve_amp
from dml_bench.runtime.errors import UserError
from dml_bench.train import train
from tests.helpers.config import CONFIG_DIR, compose_config, config_options
from tests.helpers.runs import exit_code, hydra_job, run_train
from tests.helpers.tiny_runs import ENV, assert_reported_once, tiny_csv, tiny_csv_args

GROUPS = sorted(path.name for path in CONFIG_DIR.iterdir() if path.is_dir() and path.name != "hydra")
SHIPPED = [(group, option) for group in GROUPS for option in config_options(group)]


@pytest.mark.parametrize(("group", "option"), SHIPPED, ids=[f"{g}={o}" for g, o in SHIPPED])
def test_every_shipped_config_passes_untouched(group, option):
    cfg = compose_config([f"{group}={option}"])
    composed = OmegaConf.to_container(cfg)
    check_config(cfg)
    assert OmegaConf.to_container(cfg) == composed


def test_the_evaluate_config_passes():
    check_config(compose_config(["save_embeddings=true", "visualize=true"], config_name="evaluate"))


@pytest.mark.parametrize("override", [
    *(f"evaluation.backend={backend}" for backend in BACKENDS),
    *(f"evaluation.distance={distance}" for distance in DISTANCES),
    "trainer.device=cuda:1", "trainer.device=auto", "trainer.epochs=0", "trainer.num_workers=auto",
    "trainer.num_workers=0", "trainer.patience=null", "trainer.patience=3", "trainer.grad_clip=2",
    "trainer.deterministic=true", "optimizer.lr=1e-3", "optimizer.weight_decay=0", "seed=4294967295",
    "evaluation.recall_ks=[1,10,100]",
])
def test_valid_values_pass(override):
    check_config(compose_config(["experiment=quickstart", override]))


def test_every_example_passes_its_check():
    assert all(kind.accepts(example) for kind, example in CHECKS.values())


@pytest.mark.parametrize(("override", "group"), [
    ("trainer.epochs=abc", None), ("trainer.epochs=1.5", None), ("trainer.epochs=2.0", None),
    ("trainer.epochs=-1", None), ("trainer.epochs=true", None), ("trainer.batch_size=abc", None),
    ("trainer.batch_size=-4", None), ("optimizer.lr=abc", None), ("optimizer.lr=0", None), ("seed=abc", None),
    ("seed=-1", None), ("trainer.device=gpu", None), ("trainer.progress=yes", None), ("trainer.num_workers=-1", None),
    ("evaluation.distance=cos", None), ("evaluation.backend=bogus", None), ("evaluation.batch_size=0", None),
    ("evaluation.recall_ks=[1,0]", None), ("sampler.m=0", "sampler=m_per_class"),
    ("sampler.per_epoch=batches", "sampler=m_per_class"),
])
def test_a_bad_value_is_one_paragraph_naming_the_key_the_value_and_an_example(override, group):
    key = override.split("=")[0]
    with pytest.raises(UserError) as error:
        check_config(compose_config(["experiment=quickstart", *([group] if group else []), override]))
    message = str(error.value)
    assert message.startswith(f"{override} must be ") and f", e.g. {key}=" in message, message
    assert "\n" not in message and message.endswith(".")


def test_the_train_command_names_every_bad_key_before_building_anything(tmp_path):
    result = run_train("experiment=quickstart", f"hydra.run.dir={tmp_path}", "trainer.epochs=1.5",
                       "sampler=m_per_class", "sampler.m=0", "trainer.device=gpu", env=ENV, check=False)
    paragraph = assert_reported_once(result, tmp_path, "^trainer.device=gpu")
    assert paragraph == ("trainer.device=gpu must be one of auto, cpu, cuda, cuda:N, e.g. trainer.device=cpu; "
                         "trainer.epochs=1.5 must be an integer >= 0, e.g. trainer.epochs=8; "
                         "sampler.m=0 must be an integer >= 1, e.g. sampler.m=4.")
    assert not (tmp_path / "run_info.json").exists()


def test_evaluate_checks_the_typed_values_before_reading_the_checkpoint(tmp_path, capsys):
    with hydra_job([f"checkpoint={tmp_path / 'missing.pt'}", "evaluation.backend=bogus"], config_name="evaluate",
                   output_dir=tmp_path / "evaluate") as cfg:
        assert exit_code(evaluate, cfg) == 1
    assert capsys.readouterr().err == ("\nError: evaluation.backend=bogus must be one of auto, faiss, torch, "
                                       "symmetric, e.g. evaluation.backend=auto.\n")


def warnings(caplog) -> list[str]:
    return [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING]


def test_amp_on_a_cpu_run_and_a_launcher_without_multirun_warn_once(tmp_path, caplog):
    data = tiny_csv(tmp_path / "data")
    args = tiny_csv_args(data, tmp_path / "run", "trainer.epochs=0", "trainer.batch_size=8", "trainer.amp=bf16",
                         "hydra/launcher=slurm_local")
    with caplog.at_level(logging.WARNING), hydra_job(args) as cfg:
        assert exit_code(train, cfg) == 0
    assert (tmp_path / "run" / "metrics.json").is_file()
    said = warnings(caplog)
    assert said.count("trainer.amp=bf16 is ignored on cpu (autocast runs on CUDA only): this run computes in "
                      "float32.") == 1, said
    assert said.count("hydra/launcher=slurm_local applies to multiruns (-m) only: this command runs here, on this "
                      "machine.") == 1, said


@pytest.mark.parametrize(("amp", "device", "dtype", "warned"), [
    ("bf16", "cpu", None, True), ("fp16", "cpu", None, True), ("none", "cpu", None, False),
    ("auto", "cpu", None, False), ("bf16", "cuda", torch.bfloat16, False), ("fp16", "cuda", torch.float16, False),
])
def test_amp_is_ignored_off_cuda_with_a_warning(amp, device, dtype, warned, caplog):
    with caplog.at_level(logging.WARNING):
        assert resolve_amp(amp, torch.device(device)) == dtype
    assert len(warnings(caplog)) == warned


@pytest.mark.parametrize(("plugin", "mode", "warned"), [
    ("hydra/launcher=slurm", RunMode.RUN, True), ("hydra/launcher=slurm_local", RunMode.MULTIRUN, False),
    (None, RunMode.RUN, False), ("search=contrastive", RunMode.RUN, True),
    ("search=contrastive", RunMode.MULTIRUN, False),
])
def test_a_launcher_or_a_search_warns_only_outside_a_multirun(plugin, mode, warned, tmp_path, caplog):
    with hydra_job([plugin] if plugin else [], output_dir=tmp_path):
        with read_write(HydraConfig.get()):
            HydraConfig.get().mode = mode
        with caplog.at_level(logging.WARNING):
            warn_unused_plugins()
    assert len(warnings(caplog)) == warned
    if warned and plugin.startswith("search="):
        assert warnings(caplog)[0].startswith("search=contrastive (hydra/sweeper=equal_budget) applies to "
                                              "multiruns (-m) only: this command trains one run")
