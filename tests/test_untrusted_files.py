"""Checkpoints and sweep folders come from anywhere: loading or using one never runs code from it.

Each file here is crafted as an attacker would: a pickle whose loading appends to a marker file
(tests/helpers/payloads.py), or a config whose ``_target_`` is ``torch.load`` of such a pickle.
A control shows each payload does run when the file is used unsafely; the tests assert that
dml_bench refuses it in one paragraph and leaves the marker empty."""

import random

import numpy as np
import pytest
import torch
import yaml
from hydra.utils import instantiate
from omegaconf import OmegaConf

from dml_bench.comparison.concatenated import evaluate_concatenated
from dml_bench.comparison.search import retrain_commands
from dml_bench.convert_checkpoint import main as convert_main
from dml_bench.engine.checkpoint import load_checkpoint, restore_rng_states, rng_states, save_checkpoint
from dml_bench.evaluate import evaluate
from dml_bench.runtime.errors import UserError
from dml_bench.runtime.trusted_targets import check_targets, project_targets
from scripts.retrain_best import main as retrain_main
from tests.helpers.config import compose_config
from tests.helpers.payloads import one_paragraph, pickled_payload, ran
from tests.helpers.runs import exit_code, hydra_job
from tests.test_search import constructed_sweep

CPU = torch.device("cpu")


def old_format_state() -> dict:
    """A checkpoint as dml_bench saved it before it stored only plain data: the generators' states
    as Python and numpy objects (a tuple of tuples, a numpy array)."""
    return {"model": {"weight": torch.arange(6.0)}, "epoch": 3, "config": {"seed": 0},
            "rng": {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}}


def test_a_checkpoint_carrying_a_pickled_object_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "marker"
    checkpoint = pickled_payload(tmp_path / "best.pt", marker, model={}, epoch=1)
    with pytest.raises(UserError) as raised:
        load_checkpoint(checkpoint)
    assert not ran(marker)
    message = one_paragraph(str(raised.value))
    assert message.startswith(f"Refusing to load the checkpoint {checkpoint}: it holds Python objects")
    assert f"`python -m dml_bench.convert_checkpoint {checkpoint} --i-trust-this-file`" in message
    torch.load(checkpoint, weights_only=False)  # the control: loaded unsafely, the payload runs
    assert ran(marker)


def test_an_old_format_checkpoint_is_refused_and_converts_with_the_command_it_names(tmp_path, capsys):
    random.seed(7)
    np.random.seed(7)
    state = old_format_state()
    expected = (random.random(), np.random.rand())
    checkpoint = tmp_path / "last.pt"
    torch.save(state, checkpoint)
    with pytest.raises(UserError, match="convert it once to the safe format"):
        load_checkpoint(checkpoint)
    with pytest.raises(SystemExit) as refused:  # the command, without the user's word
        convert_main([str(checkpoint)])
    assert refused.value.code == 2 and "add --i-trust-this-file" in capsys.readouterr().err
    assert convert_main([str(checkpoint), "--i-trust-this-file"]) == 0
    loaded = load_checkpoint(checkpoint)  # the safe loader alone
    assert loaded["epoch"] == 3 and torch.equal(loaded["model"]["weight"], torch.arange(6.0))
    random.seed(0)
    np.random.seed(0)
    restore_rng_states(loaded["rng"], CPU)
    assert (random.random(), np.random.rand()) == expected  # the generators continue where they were


def test_the_converter_refuses_a_file_that_holds_no_checkpoint_data(tmp_path, capsys):
    checkpoint = tmp_path / "odd.pt"
    torch.save({"model": {}, "extra": complex(1, 2)}, checkpoint)
    assert convert_main([str(checkpoint), "--i-trust-this-file"]) == 1
    assert "checkpoint['extra'] is a builtins.complex, which no dml_bench checkpoint holds" in \
        one_paragraph(capsys.readouterr().err)


def test_rng_states_round_trip_through_a_safe_checkpoint(tmp_path):
    random.seed(3)
    np.random.seed(3)
    torch.manual_seed(3)
    save_checkpoint(tmp_path / "last.pt", {"rng": rng_states(CPU)})
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    restore_rng_states(torch.load(tmp_path / "last.pt", weights_only=True)["rng"], CPU)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected


def torch_load_transform(tmp_path):
    """A transform config whose target loads a pickle of a payload (``weights_only: false``):
    tensors only in the checkpoint, the code in another file that its config names."""
    marker = tmp_path / "marker"
    other = pickled_payload(tmp_path / "other.pt", marker)
    return {"_target_": "torch.load", "f": str(other), "weights_only": False}, marker


def crafted_checkpoint(tmp_path, transform: dict):
    """A checkpoint of tensors and plain data only, whose config's test transform is ``transform``."""
    config = OmegaConf.to_container(compose_config(["experiment=quickstart"]), resolve=True)
    config["dataset"]["test_transform"] = transform
    path = tmp_path / "run" / "checkpoints" / "best.pt"
    path.parent.mkdir(parents=True)
    save_checkpoint(path, {"model": {"w": torch.zeros(2)}, "epoch": 1, "config": config})
    return path


def test_evaluate_refuses_a_target_that_the_checkpoints_config_brings(tmp_path, capsys):
    transform, marker = torch_load_transform(tmp_path)
    instantiate(transform)  # the control: instantiating that config runs the other file's payload
    assert ran(marker)
    marker.unlink()
    checkpoint = crafted_checkpoint(tmp_path, transform)
    with hydra_job([f"checkpoint={checkpoint}", "trainer.progress=false"], config_name="evaluate",
                   output_dir=tmp_path / "evaluate") as cfg:
        assert exit_code(evaluate, cfg) == 1
    assert not ran(marker)
    message = one_paragraph(capsys.readouterr().err)
    assert message.startswith(f"Refusing to use the config from the checkpoint {checkpoint}: it names a _target_ "
                              "that neither dml_bench's configs nor this command name: torch.load (at "
                              "dataset.test_transform._target_).")
    assert message.endswith("accept it explicitly: add trust_targets=[torch.load] to the command.")


def test_collect_results_concatenated_refuses_the_same_checkpoint(tmp_path):
    transform, marker = torch_load_transform(tmp_path)
    checkpoint = crafted_checkpoint(tmp_path, transform)
    with pytest.raises(UserError, match=r"torch\.load \(at dataset\.test_transform\._target_\).*"
                                        r"add --trust-target torch\.load\.$"):
        evaluate_concatenated([checkpoint])
    assert not ran(marker)


def test_nested_targets_count_and_the_user_can_accept_one(tmp_path):
    config = {"model": {"_target_": "dml_bench.models.Embedder",
                        "parts": [{"_target_": "builtins.eval", "source": "1"}]}}
    with pytest.raises(UserError, match=r"builtins\.eval \(at model\.parts\[0\]\._target_\)"):
        check_targets(config, "x.yaml", (), lambda names: names)
    check_targets(config, "x.yaml", {"builtins.eval"}, lambda names: names)  # accepted: no error
    assert {"torch.optim.SGD", "dml_bench.data.transforms.TestTransform"} <= project_targets()


def malicious_sweep(tmp_path):
    """A search folder whose best trial's .hydra/hydra.yaml adds a torch.load test transform."""
    sweep = constructed_sweep(tmp_path)
    transform, marker = torch_load_transform(tmp_path)
    hydra_file = sweep / "1" / ".hydra" / "hydra.yaml"
    hydra = yaml.safe_load(hydra_file.read_text())
    hydra["hydra"]["overrides"]["task"].append(
        f"+dataset.test_transform={{_target_:torch.load,f:'{transform['f']}',weights_only:false}}")
    hydra_file.write_text(yaml.safe_dump(hydra))
    return sweep, marker


def test_retrain_best_refuses_a_target_that_the_sweep_folder_brings(tmp_path, capsys):
    sweep, marker = malicious_sweep(tmp_path)
    assert retrain_main([str(sweep), "--seeds", "1"]) == 1  # not a dry run
    assert not ran(marker) and not (sweep / "retrain").exists()
    message = one_paragraph(capsys.readouterr().err)
    assert message.startswith(f"Refusing to use the config from {sweep / '1' / '.hydra' / 'hydra.yaml'}: it names "
                              "a _target_ that neither dml_bench's configs nor this command name: torch.load (at "
                              "dataset.test_transform._target_).")
    assert message.endswith("accept it explicitly: add --trust-target torch.load.")
    (command,), _, _ = retrain_commands(sweep, 1, tmp_path / "out", trusted=["torch.load"])  # accepted explicitly
    assert any("_target_:torch.load" in override for override in command)


def test_numpy_values_in_a_state_are_saved_as_plain_data(tmp_path):
    """A metric that arrives as a numpy scalar (or an array) is saved as a number (a list), so the
    checkpoint still loads with weights_only=True."""
    save_checkpoint(tmp_path / "best.pt", {"best": {"metrics": {"recall@1": np.float64(0.25)}},
                                           "keys": np.arange(3, dtype=np.uint32)})
    loaded = load_checkpoint(tmp_path / "best.pt")
    assert loaded["best"]["metrics"]["recall@1"] == 0.25 and type(loaded["best"]["metrics"]["recall@1"]) is float
    assert loaded["keys"] == [0, 1, 2]
