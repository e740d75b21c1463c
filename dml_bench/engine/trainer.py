"""The training loop: plain and explicit, in the order a reader expects.

fit: [resume] -> evaluate epoch 0 -> for each epoch: train_one_epoch -> evaluate -> checkpoint.
Every evaluation, epoch 0's (before training) included, is a candidate for the reported epoch: the
best on ``monitor``, a later epoch winning a tie (as the paper's official code selects).
A checkpoint holds everything the rest of the run depends on (weights, optimizer, schedule,
scaler, RNG states, position in the epoch, best metrics, the evaluations so far), so a run resumed
from it ends exactly as the uninterrupted run would.
"""

import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from dml_bench.data.samplers import start_epoch, supports_mid_epoch_resume
from dml_bench.engine import checkpoint as ckpt
from dml_bench.engine.recorders import Recorder
from dml_bench.evaluation.evaluator import Evaluation
from dml_bench.evaluation.metric_names import NUM_QUERIES, eval_tag
from dml_bench.runtime.device import autocast
from dml_bench.runtime.distributed import (
    World,
    average_gradients,
    broadcast_object,
    gather_batch,
    unwrap,
)
from dml_bench.runtime.errors import UserError
from dml_bench.runtime.interruption import Interrupted, signal_of
from dml_bench.runtime.oom import suggest_smaller_batch
from dml_bench.runtime.progress import progress_bar
from dml_bench.runtime.tables import markdown_table

log = logging.getLogger(__name__)

# A probe maps the embeddings of an evaluation (``Evaluation.embeddings``) to tagged values.
Probe = Callable[[dict[str, torch.Tensor]], dict[str, float]]


class NonFiniteLossError(UserError):
    pass


class NonFiniteWeightsError(UserError):
    pass


@dataclass(frozen=True)
class TrainerSettings:
    """How the trainer runs: ``trainer.*`` of the config, resolved by the training script.

    ``run_dir`` holds checkpoints/last.pt and best.pt. ``monitor`` selects the best epoch, epoch 0
    included (``Trainer.is_better``), compared in percent rounded to ``monitor_decimals`` decimals
    when that is set (``protocol=paper``: 2, as the official code compares Recall@1); with
    ``patience``, training stops after that many evaluations without a new best.
    ``checkpoint_every_steps`` also writes last.pt every that many optimizer steps, mid-epoch.
    Under DDP (``world`` of several ranks) each rank trains on its slice of every global batch and
    embeds its shard of the evaluation split(s); rank 0 alone computes the metrics. ``config`` is
    stored in checkpoints (resume and evaluate read it).
    """

    run_dir: Path
    epochs: int
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    world: World = field(default_factory=World)
    amp_dtype: torch.dtype | None = None
    channels_last: bool = False
    eval_every: int = 1
    monitor: str = "recall@1"
    monitor_decimals: int | None = None  # compare the monitor in % rounded to this many decimals
    patience: int | None = None
    log_every_steps: int = 10
    grad_clip: float | None = None
    checkpoint_every_steps: int | None = None
    progress: bool = True
    selected_on: str = "test"  # the split the evaluator evaluates (metrics.json records it)
    config: dict | None = None


class Trainer:
    """Trains ``model`` with ``loss`` (and an optional ``miner``), evaluating with ``evaluator``.

    ``recorder`` records the run (history.jsonl, metrics.json, TensorBoard: see
    ``engine.recorders``). ``probes`` map a name to a function of each evaluation's embeddings
    (e.g. the MI terms); their values are recorded as scalars and in the history under that name.
    """

    def __init__(
        self,
        model: nn.Module,
        loss: nn.Module,
        optimizer: torch.optim.Optimizer,
        train_loader,
        evaluator,
        settings: TrainerSettings,
        *,
        miner=None,
        scheduler=None,
        recorder: Recorder | None = None,
        probes: Mapping[str, Probe] | None = None,
    ):
        self.model, self.loss, self.miner = model, loss, miner
        self.optimizer, self.scheduler = optimizer, scheduler
        self.train_loader, self.evaluator = train_loader, evaluator
        self.settings = settings
        self.recorder = recorder or Recorder()
        self.probes = dict(probes or {})
        self.device, self.world, self.amp_dtype = settings.device, settings.world, settings.amp_dtype
        self.memory_format = torch.channels_last if settings.channels_last else torch.preserve_format
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16
                                           and self.device.type == "cuda")
        self.progress = settings.progress and self.world.is_main
        self.checkpoint_dir = Path(settings.run_dir) / "checkpoints"
        sampler = getattr(train_loader, "sampler", None)
        if settings.checkpoint_every_steps and not supports_mid_epoch_resume(sampler):
            raise UserError(f"trainer.checkpoint_every_steps needs a sampler that can resume mid-epoch "
                            f"(set_epoch(epoch, start_batch=...)); {type(sampler).__name__} cannot: "
                            "set trainer.checkpoint_every_steps=null.")
        # epoch: epochs completed; batches_done, loss_sum, loss_window: the epoch in progress.
        self.epoch, self.global_step = 0, 0
        self.batches_done, self.loss_sum, self.loss_window = 0, torch.zeros((), device=self.device), []
        self.start_time, self.elapsed_before = time.time(), 0.0  # elapsed_before: resumed runs' time
        self.best = {"epoch": None, "value": -math.inf, "metrics": None}
        self.history: list[dict] = []  # one record per evaluation (rank 0)
        self.doing = "the evaluation before training"  # what an interruption stops (Interrupted.during)

    # ---- training -------------------------------------------------------------------------
    def train_step(self, images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        images = images.to(self.device, non_blocking=True, memory_format=self.memory_format)
        targets = targets.to(self.device, non_blocking=True)
        with autocast(self.device, self.amp_dtype):
            embeddings = self.model(images)
        embeddings = embeddings.float()
        if self.world.size > 1:  # every rank computes the loss of the whole global batch
            embeddings, targets = gather_batch(embeddings), gather_batch(targets)
        indices_tuple = self.miner(embeddings, targets) if self.miner is not None else None
        loss = self.loss(embeddings, targets, indices_tuple)
        if not torch.isfinite(loss):
            raise NonFiniteLossError(
                f"The loss became {loss.item()} at epoch {self.epoch + 1}, step {self.global_step + 1}. "
                f"{self.last_good_checkpoint()} Lower the learning rate (optimizer.lr=...) or check "
                "the data and the loss parameters."
            )
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if self.world.size > 1:
            average_gradients(self.loss.parameters())
        if self.settings.grad_clip:
            self.scaler.unscale_(self.optimizer)
            params = [p for group in self.optimizer.param_groups for p in group["params"]]
            torch.nn.utils.clip_grad_norm_(params, self.settings.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        if self.scheduler is not None:
            self.scheduler.step()
        self.global_step += 1
        return loss.detach()

    def train_one_epoch(self) -> float:
        """Train epoch ``self.epoch + 1`` from batch ``self.batches_done`` on (past 0 when resumed
        from a mid-epoch checkpoint); returns the epoch's mean loss."""
        self.model.train()
        self.loss.train()
        epoch = self.epoch + 1
        self.doing = f"epoch {epoch}"
        start_epoch(getattr(self.train_loader, "sampler", None), epoch, self.batches_done)
        epoch_batches = self.batches_done + len(self.train_loader)
        bar = progress_bar(self.train_loader, desc=f"epoch {epoch}/{self.settings.epochs}", leave=False,
                           disable=not self.progress)
        rank_batch = getattr(self.train_loader, "batch_size", None)
        global_batch = rank_batch * self.world.size if rank_batch else None
        for images, targets, _ in bar:
            with suggest_smaller_batch("a training step", "trainer.batch_size", global_batch):
                loss = self.train_step(images, targets)
            self.loss_sum += loss
            self.batches_done += 1
            self.loss_window.append(loss)
            if self.global_step % self.settings.log_every_steps == 0:
                mean = torch.stack(self.loss_window).mean().item()
                self.loss_window.clear()
                self.recorder.scalars({"train/loss": mean, "train/lr": self.optimizer.param_groups[0]["lr"]},
                                      self.global_step)
                bar.set_postfix(loss=f"{mean:.4f}")
            every = self.settings.checkpoint_every_steps
            if every and self.global_step % every == 0 and self.batches_done < epoch_batches:
                self.save_checkpoint("last.pt")
        mean = (self.loss_sum / max(self.batches_done, 1)).item()
        self.batches_done, self.loss_sum = 0, torch.zeros((), device=self.device)
        return mean

    # ---- evaluation -----------------------------------------------------------------------
    def evaluate(self, train_loss: float | None, elapsed: float) -> tuple[dict, Evaluation | None]:
        """Every rank embeds its share of the evaluation split(s); rank 0 computes the metrics, as
        a single process would, and the other ranks get them (and no Evaluation)."""
        self.doing = f"the evaluation of epoch {self.epoch}" if self.epoch else "the evaluation before training"
        evaluation = self.evaluator(unwrap(self.model), self.device, self.amp_dtype)
        if not self.world.is_main:
            return broadcast_object(None, self.world), None
        metrics = evaluation.metrics
        probed = {name: probe(evaluation.embeddings) for name, probe in self.probes.items()}
        scalars = {eval_tag(name): value for name, value in metrics.items() if name != NUM_QUERIES}
        for values in probed.values():
            scalars.update(values)
        self.recorder.scalars(scalars, self.global_step)
        record = {"epoch": self.epoch, "step": self.global_step, "train_loss": train_loss,
                  "elapsed_s": round(elapsed, 2), "metrics": metrics, **probed}
        self.history.append(record)
        self.recorder.evaluation(record)
        self.recorder.flush()
        log.info("epoch %d: %s", self.epoch,
                 ", ".join(f"{k} {v:.4f}" for k, v in metrics.items() if k != NUM_QUERIES))
        return broadcast_object(metrics, self.world), evaluation

    def monitored(self, metrics: dict) -> float:
        """The value that selects the epoch: ``monitor``, or, with ``monitor_decimals``, ``monitor``
        in percent rounded to that many decimals (two SOP hit counts can round alike)."""
        monitor, decimals = self.settings.monitor, self.settings.monitor_decimals
        if monitor not in metrics:
            raise UserError(f"trainer.monitor={monitor} is not a computed metric; choose one of "
                            f"{sorted(k for k in metrics if k != NUM_QUERIES)}.")
        return metrics[monitor] if decimals is None else round(100 * metrics[monitor], decimals)

    def is_better(self, metrics: dict) -> bool:
        """At least as good as the best so far: a later epoch wins a tie."""
        return self.monitored(metrics) >= self.best["value"]

    def select(self, metrics: dict, evaluation: Evaluation | None) -> None:
        """This epoch's evaluation becomes the one the run reports."""
        self.best = {"epoch": self.epoch, "value": self.monitored(metrics), "metrics": metrics}
        self.recorder.selected(self.epoch, evaluation)

    def evaluate_and_select(self, train_loss: float | None) -> None:
        """Evaluate; a new best becomes the reported evaluation and checkpoints/best.pt."""
        metrics, evaluation = self.evaluate(train_loss, self.elapsed())
        if self.is_better(metrics):
            self.select(metrics, evaluation)
            self.save_checkpoint("best.pt")

    def should_stop(self) -> bool:
        """Early stopping: ``patience`` evaluations since the best one (a resumed run counts the
        evaluations before the crash too: its checkpoint holds them)."""
        patience = self.settings.patience
        if patience is None:
            return False
        since_best = [r for r in self.history if r["epoch"] > self.best["epoch"]]
        if len(since_best) < patience:
            return False
        log.info("stopping early at epoch %d: %d evaluations without a better %s than epoch %s",
                 self.epoch, len(since_best), self.settings.monitor, self.best["epoch"])
        return True

    def stop_early(self) -> bool:
        """``should_stop``, decided by rank 0 (which alone has the history) for every rank;
        checked before each epoch, so that a resumed run that had stopped early stays stopped."""
        return broadcast_object(self.world.is_main and self.should_stop(), self.world)

    # ---- checkpoints ----------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {
            "model": unwrap(self.model).state_dict(),
            "loss": self.loss.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "scaler": self.scaler.state_dict(),
            "epoch": self.epoch,
            "global_step": self.global_step,
            "epoch_progress": {"batches": self.batches_done, "loss_sum": self.loss_sum,
                               "loss_window": list(self.loss_window)},
            "elapsed_s": self.elapsed(),
            "best": self.best,
            "history": self.history,
            # Rank 0's states serve every rank: all ranks start from the same seed and draw the
            # same random numbers (data augmentation draws from per-sample seeds instead).
            "rng": ckpt.rng_states(self.device),
            "config": self.settings.config,
        }

    def load_state_dict(self, state: dict) -> None:
        unwrap(self.model).load_state_dict(state["model"])
        self.loss.load_state_dict(state["loss"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None and state["scheduler"] is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.epoch, self.global_step, self.best = state["epoch"], state["global_step"], state["best"]
        self.history = state["history"]
        progress = state["epoch_progress"]
        self.batches_done, self.loss_sum = progress["batches"], progress["loss_sum"].to(self.device)
        self.loss_window = [loss.to(self.device) for loss in progress["loss_window"]]
        self.elapsed_before = state["elapsed_s"]
        ckpt.restore_rng_states(state["rng"], self.device)

    def save_checkpoint(self, name: str) -> None:
        """Write checkpoints/NAME on rank 0. Weights or statistics (BatchNorm's) that are no longer
        finite are never written: the previous checkpoint stays the last good one."""
        tensors = [t for module in (self.model, self.loss) for t in module.state_dict().values()
                   if t.is_floating_point()]
        if not all(torch.isfinite(t).all() for t in tensors):
            epoch = self.epoch + (self.batches_done > 0)  # mid-epoch: the epoch in progress
            raise NonFiniteWeightsError(
                f"The weights or BatchNorm statistics became non-finite at epoch {epoch}, step "
                f"{self.global_step}. {self.last_good_checkpoint()} Lower the learning rate "
                "(optimizer.lr=...) or set trainer.grad_clip."
            )
        if self.world.is_main:
            self.recorder.flush()  # what the run recorded up to here survives a resume from this checkpoint
            ckpt.save_checkpoint(self.checkpoint_dir / name, self.state_dict())

    def last_good_checkpoint(self) -> str:
        """The checkpoints that exist: last.pt, else best.pt (before last.pt, only epoch 0's)."""
        last, best = self.checkpoint_dir / "last.pt", self.checkpoint_dir / "best.pt"
        if last.exists():
            return f"The last good checkpoint is {last}."
        if best.exists():
            return f"No last.pt was written yet; the last good checkpoint is {best} (epoch 0, before training)."
        return "No checkpoint was written yet."

    def resume(self, path: Path) -> None:
        """Continue from a checkpoint, with the evaluations it knew."""
        self.load_state_dict(ckpt.load_checkpoint(path))  # on the CPU: RNG states must stay there
        log.info("resumed from %s after epoch %d and %d more steps (step %d)", path, self.epoch,
                 self.batches_done, self.global_step)

    def elapsed(self) -> float:
        return self.elapsed_before + time.time() - self.start_time

    # ---- the loop -------------------------------------------------------------------------
    def fit(self, resume_from: Path | None = None) -> dict:
        """Train and evaluate every epoch; ``resume_from`` continues from that checkpoint. An
        interruption (Ctrl-C, SIGTERM) leaves the recorders' records on disk and raises Interrupted."""
        self.start_time = time.time()
        if resume_from is not None:
            self.resume(resume_from)
        self.recorder.open(None if resume_from is None else self.global_step, self.history)
        try:
            self.run_epochs(evaluate_first=resume_from is None)
        except KeyboardInterrupt as stop:
            self.recorder.interrupted()
            raise Interrupted(signal_of(stop), self.doing) from stop
        if not self.world.is_main:
            return {"metrics": self.best["metrics"], "best_epoch": self.best["epoch"]}
        summary = self.finish(self.elapsed())
        self.recorder.close()
        return summary

    def run_epochs(self, evaluate_first: bool) -> None:
        epochs = self.settings.epochs
        if evaluate_first:
            self.evaluate_and_select(None)
        while self.epoch < epochs and not self.stop_early():
            train_loss = self.train_one_epoch()
            self.epoch += 1
            if self.epoch % self.settings.eval_every == 0 or self.epoch == epochs:
                self.evaluate_and_select(train_loss)
            self.save_checkpoint("last.pt")
        if epochs == 0:
            self.save_checkpoint("last.pt")

    def finish(self, wall_time: float) -> dict:
        history = self.history
        summary = {
            "metrics": self.best["metrics"],
            "best_epoch": self.best["epoch"],
            "monitor": self.settings.monitor,
            "selected_on": self.settings.selected_on,
            "epochs": self.settings.epochs,
            "last_epoch": self.epoch,
            "initial_metrics": history[0]["metrics"] if history else None,
            "final_metrics": history[-1]["metrics"] if history else None,
            "wall_time_s": round(wall_time, 2),
            "status": "completed",
        }
        self.recorder.summary(summary)
        names = [k for k in self.best["metrics"] if k != NUM_QUERIES]
        rows = [[f"{label} ({r['epoch']})", *(r["metrics"][k] for k in names)]
                for label, r in (("start", history[0]), ("best", {"epoch": self.best["epoch"],
                                 "metrics": self.best["metrics"]}), ("last", history[-1]))]
        caption = "" if self.settings.selected_on == "test" else (
            f"\n{self.settings.selected_on} split (the held-out training classes that select the epoch):")
        print(caption + "\n" + markdown_table(["epoch", *names], rows))
        return summary
