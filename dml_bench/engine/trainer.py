"""The training loop: plain and explicit, in the order a reader expects.

fit: [resume] -> evaluate epoch 0 -> for each epoch: train_one_epoch -> evaluate -> checkpoint.
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
from dml_bench.engine.run_files import append_jsonl, read_jsonl, write_json, write_jsonl
from dml_bench.engine.tables import markdown_table
from dml_bench.errors import UserError
from dml_bench.evaluation.embed import autocast
from dml_bench.evaluation.metric_names import NUM_QUERIES, eval_tag

log = logging.getLogger(__name__)


class NonFiniteLossError(UserError):
    pass


class Trainer:
    """Trains ``model`` with ``loss`` (and an optional ``miner``), evaluating with ``evaluator``.

    Writes under ``run_dir``: history.jsonl (one line per evaluation), metrics.json (the metrics
    of the best epoch on ``monitor``), checkpoints/last.pt and best.pt, and TensorBoard events
    in tb/. With ``patience``, training stops after that many evaluations without a new best.
    ``eval_probes`` maps a name to a function called after each evaluation (e.g. the MI terms of
    the embeddings just computed); its dict of floats is logged to TensorBoard, keys as tags, and
    stored in the history line under that name.
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
        self.config, self.progress = config, progress
        self.eval_probes = eval_probes or {}
        self.epoch, self.global_step = 0, 0
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
        indices_tuple = self.miner(embeddings, targets) if self.miner is not None else None
        loss = self.loss(embeddings, targets, indices_tuple)
        if not torch.isfinite(loss):
            raise NonFiniteLossError(
                f"The loss became {loss.item()} at epoch {self.epoch}, step {self.global_step}. "
                f"The last good checkpoint is {self.checkpoint_dir / 'last.pt'}. Lower the "
                "learning rate (optimizer.lr=...) or check the data and the loss parameters."
            )
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
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
        self.model.train()
        self.loss.train()
        sampler = getattr(self.train_loader, "sampler", None)
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(self.epoch)
        total, count, window = torch.zeros((), device=self.device), 0, []
        bar = tqdm(self.train_loader, desc=f"epoch {self.epoch}/{self.epochs}", leave=False,
                   disable=not self.progress)
        for images, targets, _ in bar:
            loss = self.train_step(images, targets)
            total += loss
            count += 1
            window.append(loss)
            if self.global_step % self.log_every_steps == 0:
                mean = torch.stack(window).mean().item()
                window.clear()
                self.writer.add_scalar("train/loss", mean, self.global_step)
                self.writer.add_scalar("train/lr", self.optimizer.param_groups[0]["lr"], self.global_step)
                bar.set_postfix(loss=f"{mean:.4f}")
        return (total / max(count, 1)).item()

    # ---- evaluation -----------------------------------------------------------------------
    def evaluate(self, train_loss: float | None, elapsed: float) -> dict:
        metrics = self.evaluator(self.model, self.device, self.amp_dtype)
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
        return metrics

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

    # ---- checkpoints ----------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {
            "model": self.model.state_dict(),
            "loss": self.loss.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "scaler": self.scaler.state_dict(),
            "epoch": self.epoch,
            "global_step": self.global_step,
            "best": self.best,
            "rng": ckpt.rng_states(),
            "config": self.config,
        }

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.loss.load_state_dict(state["loss"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None and state["scheduler"] is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.epoch, self.global_step, self.best = state["epoch"], state["global_step"], state["best"]
        ckpt.restore_rng_states(state["rng"])

    def resume(self, path: Path) -> None:
        """Continue from a checkpoint; history lines written after it are dropped."""
        self.load_state_dict(ckpt.load_checkpoint(path, map_location=self.device))
        kept = [r for r in read_jsonl(self.history_path) if r["epoch"] <= self.epoch]
        write_jsonl(self.history_path, kept)
        log.info("resumed from %s at epoch %d (step %d)", path, self.epoch, self.global_step)

    # ---- the loop -------------------------------------------------------------------------
    def fit(self, resume_from: Path | None = None) -> dict:
        start = time.time()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if resume_from is not None:
            self.resume(resume_from)
            # Events logged after the checkpoint by the crashed run are purged.
            self.writer = SummaryWriter(self.run_dir / "tb", purge_step=self.global_step + 1)
        else:
            self.writer = SummaryWriter(self.run_dir / "tb")
            write_jsonl(self.history_path, [])
            metrics = self.evaluate(None, time.time() - start)
            if self.epochs == 0:
                self.best = {"epoch": 0, "value": metrics[self.monitor], "metrics": metrics}
        while self.epoch < self.epochs:
            self.epoch += 1
            train_loss = self.train_one_epoch()
            if self.epoch % self.eval_every == 0 or self.epoch == self.epochs:
                metrics = self.evaluate(train_loss, time.time() - start)
                if self.is_better(metrics):
                    self.best = {"epoch": self.epoch, "value": metrics[self.monitor], "metrics": metrics}
                    ckpt.save_checkpoint(self.checkpoint_dir / "best.pt", self.state_dict())
            ckpt.save_checkpoint(self.checkpoint_dir / "last.pt", self.state_dict())
            if self.should_stop():
                break
        if self.epochs == 0:
            ckpt.save_checkpoint(self.checkpoint_dir / "best.pt", self.state_dict())
            ckpt.save_checkpoint(self.checkpoint_dir / "last.pt", self.state_dict())
        self.writer.close()
        return self.finish(time.time() - start)

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
