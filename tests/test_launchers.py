"""Clusters through Hydra's submitit launcher: configs/hydra/launcher/slurm.yaml asks SLURM for one
task per GPU, and a two-job multirun goes through submitit's local executor (the code path SLURM
jobs take, run on this machine), a failing job included."""

from hydra import compose, initialize_config_dir

from dml_bench.results import collect
from tests.helpers.config import CONFIG_DIR
from tests.helpers.tiny_runs import tiny_args, tiny_glyphs, tiny_train


def test_slurm_launcher_runs_one_ddp_task_per_gpu():
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose(config_name="train", overrides=["hydra/launcher=slurm", "trainer=ddp",
                                                      "hydra.launcher.gpus_per_node=8", "hydra.launcher.partition=gpu"],
                      return_hydra_config=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert (launcher.partition, launcher.gpus_per_node, launcher.tasks_per_node) == ("gpu", 8, 8)
    assert cfg.trainer.distributed is True


def test_two_job_multirun_through_submitit_local(tmp_path):
    data = tiny_glyphs(tmp_path / "data")
    sweep = tmp_path / "sweep"
    tiny_train("-m", "hydra/launcher=submitit_local", *tiny_args(data, "trainer.amp=fp8,none", "trainer.epochs=1",
                                                             f"hydra.sweep.dir={sweep}"))
    assert (sweep / "1" / "metrics.json").is_file() and (sweep / "1" / ".hydra" / "config.yaml").is_file()
    _, headers, rows = collect([sweep], per_run=True)
    status = {row[headers.index("trainer.amp")]: row[headers.index("status")] for row in rows}
    assert status == {"fp8": "failed: trainer.amp=fp8 is not one of auto, bf16, fp16, none.", "none": "completed"}
