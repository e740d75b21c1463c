"""The training loop: plain and explicit, in the order a reader expects.

fit: [resume] -> evaluate epoch 0 -> for each epoch: train_one_epoch -> evaluate -> checkpoint.
A checkpoint holds everything the rest of the run depends on (weights, optimizer, schedule,
scaler, RNG states, position in the epoch, best metrics), so a run resumed from it ends exactly
as the uninterrupted run would.
"""

import logging
import math
import time
from pathlib import Path

import torch
from torch import nn
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from dml_bench.engine import checkpoint as ckpt
from dml_bench.engine.distributed import (
    World,
    average_gradients,
    broadcast_object,
    gather_batch,
    unwrap,
)
from dml_bench.engine.oom import suggest_smaller_batch
from dml_bench.engine.run_files import append_jsonl, read_jsonl, write_json, write_jsonl
from dml_bench.engine.tables import markdown_table
from dml_bench.errors import UserError
from dml_bench.evaluation.embed import autocast
from dml_bench.evaluation.metric_names import NUM_QUERIES, eval_tag

log = logging.getLogger(__name__)


class NonFiniteLossError(UserError):
    pass


class NonFiniteWeightsError(UserError):
    pass


class Trainer:
    """Trains ``model`` with ``loss`` (and an optional ``miner``), evaluating with ``evaluator``.

    Writes under ``run_dir``: history.jsonl (one line per evaluation), metrics.json (the metrics
    of the best epoch on ``monitor``), checkpoints/last.pt and best.pt, and TensorBoard events
    in tb/. With ``patience``, training stops after that many evaluations without a new best.
    ``eval_probes`` maps a name to a function called after each evaluation (e.g. the MI terms of
    the embeddings just computed); its dict of floats is logged to TensorBoard, keys as tags, and
    stored in the history line under that name.
    ``checkpoint_every_steps`` also writes last.pt every that many optimizer steps, in the middle
    of epochs. Under DDP (``world``), ``model`` is the DDP-wrapped model, each rank trains on its
    slice of every global batch, and rank 0 alone evaluates and writes files.
    """

    def __init__(
        self,
        *,
        model: nn.Module,
        loss: nn.Module,
        optimizer: torch.optim.Optimizer,
        train_loader,
        evaluator,
        run_dir: str | Path,
        epochs: int,
        device: torch.device,
        scheduler=None,
        miner=None,
        amp_dtype: torch.dtype | None = None,
        channels_last: bool = False,
        eval_every: int = 1,
        monitor: str = "recall@1",
        patience: int | None = None,
        log_every_steps: int = 10,
        grad_clip: float | None = None,
        config: dict | None = None,
        progress: bool = True,
        eval_probes: dict | None = None,
        checkpoint_every_steps: int | None = None,
        world: World | None = None,
    ):
        self.model, self.loss, self.miner = model, loss, miner
        self.optimizer, self.scheduler = optimizer, scheduler
        self.train_loader, self.evaluator = train_loader, evaluator
        self.run_dir = Path(run_dir)
        self.epochs, self.device = epochs, device
        self.amp_dtype = amp_dtype
        self.memory_format = torch.channels_last if channels_last else torch.preserve_format
        self.scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16 and device.type == "cuda")
        self.eval_every, self.monitor, self.patience = eval_every, monitor, patience
        self.log_every_steps, self.grad_clip = log_every_steps, grad_clip
        self.eval_probes = eval_probes or {}
        self.checkpoint_every_steps, self.world = checkpoint_every_steps, world or World()
        self.config, self.progress = config, progress and self.world.is_main
        # epoch: epochs completed; batches_done, loss_sum, loss_window: the epoch in progress.
        self.epoch, self.global_step = 0, 0
        self.batches_done, self.loss_sum, self.loss_window = 0, torch.zeros((), device=device), []
        self.start_time, self.elapsed_before = time.time(), 0.0  # elapsed_before: resumed runs' time
        self.best = {"epoch": None, "value": -math.inf, "metrics": None}
        self.history_path = self.run_dir / "history.jsonl"
        self.checkpoint_dir = self.run_dir / "checkpoints"
        self.writer = None

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
        if self.grad_clip:
            self.scaler.unscale_(self.optimizer)
            params = [p for group in self.optimizer.param_groups for p in group["params"]]
            torch.nn.utils.clip_grad_norm_(params, self.grad_clip)
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
        sampler = getattr(self.train_loader, "sampler", None)
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch, start_batch=self.batches_done)
        epoch_batches = self.batches_done + len(self.train_loader)
        bar = tqdm(self.train_loader, desc=f"epoch {epoch}/{self.epochs}", leave=False,
                   disable=not self.progress)
        rank_batch = getattr(self.train_loader, "batch_size", None)
        global_batch = rank_batch * self.world.size if rank_batch else None
        for images, targets, _ in bar:
            with suggest_smaller_batch("a training step", "trainer.batch_size", global_batch):
                loss = self.train_step(images, targets)
            self.loss_sum += loss
            self.batches_done += 1
            self.loss_window.append(loss)
            if self.global_step % self.log_every_steps == 0:
                mean = torch.stack(self.loss_window).mean().item()
                self.loss_window.clear()
                if self.world.is_main:
                    self.writer.add_scalar("train/loss", mean, self.global_step)
                    self.writer.add_scalar("train/lr", self.optimizer.param_groups[0]["lr"], self.global_step)
                bar.set_postfix(loss=f"{mean:.4f}")
            if (self.checkpoint_every_steps and self.global_step % self.checkpoint_every_steps == 0
                    and self.batches_done < epoch_batches):
                self.save_checkpoint("last.pt")
        mean = (self.loss_sum / max(self.batches_done, 1)).item()
        self.batches_done, self.loss_sum = 0, torch.zeros((), device=self.device)
        return mean

    # ---- evaluation -----------------------------------------------------------------------
    def evaluate(self, train_loss: float | None, elapsed: float) -> dict:
        """Rank 0 evaluates on its own, exactly as a single process would; the other ranks wait
        for its metrics."""
        if not self.world.is_main:
            return broadcast_object(None, self.world)
        batch_size = getattr(getattr(self.evaluator, "query_loader", None), "batch_size", None)
        with suggest_smaller_batch("evaluation", "evaluation.batch_size", batch_size):
            metrics = self.evaluator(unwrap(self.model), self.device, self.amp_dtype)
        for name, value in metrics.items():
            if name != NUM_QUERIES:
                self.writer.add_scalar(eval_tag(name), value, self.global_step)
        probed = {name: probe() for name, probe in self.eval_probes.items()}
        for values in probed.values():
            for tag, value in values.items():
                self.writer.add_scalar(tag, value, self.global_step)
        self.writer.flush()
        record = {"epoch": self.epoch, "step": self.global_step, "train_loss": train_loss,
                  "elapsed_s": round(elapsed, 2), "metrics": metrics, **probed}
        append_jsonl(self.history_path, record)
        log.info("epoch %d: %s", self.epoch,
                 ", ".join(f"{k} {v:.4f}" for k, v in metrics.items() if k != NUM_QUERIES))
        return broadcast_object(metrics, self.world)

    def is_better(self, metrics: dict) -> bool:
        if self.monitor not in metrics:
            raise UserError(f"trainer.monitor={self.monitor} is not a computed metric; choose one of "
                            f"{sorted(k for k in metrics if k != NUM_QUERIES)}.")
        return metrics[self.monitor] > self.best["value"]

    def should_stop(self) -> bool:
        """Early stopping: ``patience`` evaluations since the best one (from the history file, so a
        resumed run counts the evaluations before the crash too)."""
        if self.patience is None:
            return False
        since_best = [r for r in read_jsonl(self.history_path) if r["epoch"] > (self.best["epoch"] or 0)]
        if len(since_best) < self.patience:
            return False
        log.info("stopping early at epoch %d: %d evaluations without a better %s than epoch %s",
                 self.epoch, len(since_best), self.monitor, self.best["epoch"])
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
            # Rank 0's states serve every rank: all ranks start from the same seed and draw the
            # same random numbers (data augmentation draws from per-sample seeds instead).
            "rng": ckpt.rng_states(self.device),
            "config": self.config,
        }

    def load_state_dict(self, state: dict) -> None:
        unwrap(self.model).load_state_dict(state["model"])
        self.loss.load_state_dict(state["loss"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None and state["scheduler"] is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.epoch, self.global_step, self.best = state["epoch"], state["global_step"], state["best"]
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
            ckpt.save_checkpoint(self.checkpoint_dir / name, self.state_dict())

    def last_good_checkpoint(self) -> str:
        path = self.checkpoint_dir / "last.pt"
        return f"The last good checkpoint is {path}." if path.exists() else "No checkpoint was written yet."

    def resume(self, path: Path) -> None:
        """Continue from a checkpoint; history lines written after it are dropped."""
        self.load_state_dict(ckpt.load_checkpoint(path))  # on the CPU: RNG states must stay there
        if self.world.is_main:
            kept = [r for r in read_jsonl(self.history_path) if r["epoch"] <= self.epoch]
            write_jsonl(self.history_path, kept)
        log.info("resumed from %s after epoch %d and %d more steps (step %d)", path, self.epoch,
                 self.batches_done, self.global_step)

    def elapsed(self) -> float:
        return self.elapsed_before + time.time() - self.start_time

    # ---- the loop -------------------------------------------------------------------------
    def fit(self, resume_from: Path | None = None) -> dict:
        """Train and evaluate every epoch; ``resume_from`` continues from that checkpoint."""
        self.start_time = time.time()
        if self.world.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        if resume_from is not None:
            self.resume(resume_from)
        if self.world.is_main:
            # Events logged after the checkpoint by an interrupted run are purged (all of them
            # when this run starts afresh in the folder of one that never wrote a checkpoint).
            purge_step = self.global_step + 1 if resume_from is not None else 0
            self.writer = SummaryWriter(self.run_dir / "tb", purge_step=purge_step)
        if resume_from is None:
            if self.world.is_main:
                write_jsonl(self.history_path, [])
            metrics = self.evaluate(None, self.elapsed())
            if self.epochs == 0:
                self.best = {"epoch": 0, "value": metrics[self.monitor], "metrics": metrics}
        while self.epoch < self.epochs and not self.stop_early():
            train_loss = self.train_one_epoch()
            self.epoch += 1
            if self.epoch % self.eval_every == 0 or self.epoch == self.epochs:
                metrics = self.evaluate(train_loss, self.elapsed())
                if self.is_better(metrics):
                    self.best = {"epoch": self.epoch, "value": metrics[self.monitor], "metrics": metrics}
                    self.save_checkpoint("best.pt")
            self.save_checkpoint("last.pt")
        if self.epochs == 0:
            self.save_checkpoint("best.pt")
            self.save_checkpoint("last.pt")
        if not self.world.is_main:
            return {"metrics": self.best["metrics"], "best_epoch": self.best["epoch"]}
        self.writer.close()
        return self.finish(self.elapsed())

    def finish(self, wall_time: float) -> dict:
        history = read_jsonl(self.history_path)
        summary = {
            "metrics": self.best["metrics"],
            "best_epoch": self.best["epoch"],
            "monitor": self.monitor,
            "epochs": self.epochs,
            "last_epoch": self.epoch,
            "initial_metrics": history[0]["metrics"] if history else None,
            "final_metrics": history[-1]["metrics"] if history else None,
            "wall_time_s": round(wall_time, 2),
            "status": "completed",
        }
        write_json(self.run_dir / "metrics.json", summary)
        names = [k for k in self.best["metrics"] if k != NUM_QUERIES]
        rows = [[f"{label} ({r['epoch']})", *(r["metrics"][k] for k in names)]
                for label, r in (("start", history[0]), ("best", {"epoch": self.best["epoch"],
                                 "metrics": self.best["metrics"]}), ("last", history[-1]))]
        print("\n" + markdown_table(["epoch", *names], rows) + f"\n\nrun folder: {self.run_dir}")
        return summary
