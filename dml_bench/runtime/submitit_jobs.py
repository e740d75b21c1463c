"""What dml_bench's submitit launchers (``hydra/launcher=slurm`` and ``slurm_local``) add to
hydra-submitit-launcher's, each job of a multirun being a process (a SLURM job) of its own:

- A failed run fails its job. The plain launcher hands the run's error back to the launching
  process as a result, so that submitit logs "Job completed successfully" and SLURM accounts a
  completed job. Here the job raises it (``dml_bench.runtime.entry.report_user_errors`` lets it through
  under these launchers); the launching process logs each failed job and still waits for the
  others, and the multirun ends normally, as with Hydra's basic launcher.
- A preempted or timed-out job continues its run. When SLURM signals the job, submitit asks the
  launcher what to requeue (its ``checkpoint`` protocol); here, the same job with ``resume=`` its
  run folder once the run has written ``checkpoints/last.pt``, so that the requeued job continues
  from that checkpoint in that folder (``dml_bench.engine.resume``).

Hydra only loads launcher plugins from the ``hydra_plugins`` package: the launcher classes are
declared in ``hydra_plugins/dml_bench_launchers``, on top of ``SubmititJobs``.
"""

import logging
import os
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, filter_overrides
from omegaconf import OmegaConf

log = logging.getLogger(__name__)

LAUNCHERS = "hydra_plugins.dml_bench_launchers."


def in_dml_bench_submitit_job() -> bool:
    """Whether the current Hydra job was started by one of these launchers."""
    if not HydraConfig.initialized():
        return False
    return str(HydraConfig.get().launcher.get("_target_", "")).startswith(LAUNCHERS)


def requeued_overrides(overrides: list[str]) -> list[str]:
    """The overrides of the job to requeue: the job's own, plus ``resume=RUN_DIR`` once the run has
    a checkpoint there (before that, the job starts afresh)."""
    kept = [override for override in overrides if not override.startswith("resume=")]
    # The job's folder once its run has started (before, Hydra's config is the sweep's, without one).
    run_dir = OmegaConf.select(HydraConfig.get(), "runtime.output_dir") if HydraConfig.initialized() else None
    if run_dir is not None and (Path(run_dir) / "checkpoints" / "last.pt").is_file():
        kept.append(f"resume={run_dir}")
    return kept


class SubmititJobs:
    """Mixed in before hydra-submitit-launcher's ``BaseSubmititLauncher`` (see the module's doc)."""

    def __call__(self, sweep_overrides, *args) -> JobReturn:
        result = super().__call__(sweep_overrides, *args)
        if result.status is JobStatus.FAILED:
            _ = result.return_value  # raises the run's error, so that the job fails
        return result

    def checkpoint(self, sweep_overrides, *args):
        overrides = requeued_overrides(sweep_overrides)
        resume = [override for override in overrides if override.startswith("resume=")]
        log.warning("job interrupted (preempted or out of time); requeued, it %s",
                    f"continues with {resume[0]}" if resume else "starts afresh (no checkpoint yet)")
        return super().checkpoint(overrides, *args)

    def launch(self, job_overrides, initial_job_idx) -> list[JobReturn]:
        """hydra-submitit-launcher's ``launch`` (version 1.2), but a failed job does not end it."""
        import submitit  # as the launcher does: its plugin discovery stays fast
        from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf

        params = dict(self.params)
        init = {"folder": params.pop("submitit_folder")}
        if "max_num_timeout" in params:
            init[f"{self._EXECUTOR}_max_num_timeout"] = params.pop("max_num_timeout")
        executor = submitit.AutoExecutor(cluster=self._EXECUTOR, **init)
        shared = set(OmegaConf.structured(BaseQueueConf).keys())
        executor.update_parameters(**{k if k in shared else f"{self._EXECUTOR}_{k}": v for k, v in params.items()})

        sweep = self.config.hydra.sweep
        log.info("Submitit '%s' sweep output dir : %s", self._EXECUTOR, sweep.dir)
        Path(str(sweep.dir)).mkdir(parents=True, exist_ok=True)
        if "mode" in sweep:
            os.chmod(str(sweep.dir), mode=int(str(sweep.mode), 8))
        numbers = range(initial_job_idx, initial_job_idx + len(job_overrides))
        for number, overrides in zip(numbers, job_overrides):
            log.info("\t#%d : %s", number, " ".join(filter_overrides(overrides)))
        jobs = executor.map_array(self, [list(o) for o in job_overrides], ["hydra.sweep.dir"] * len(job_overrides),
                                  list(numbers), [f"job_id_for_{n}" for n in numbers],
                                  [Singleton.get_state()] * len(job_overrides))
        return [self.collect(job, number, overrides) for job, number, overrides in zip(jobs, numbers, job_overrides)]

    @staticmethod
    def collect(job, number: int, overrides) -> JobReturn:
        """The job's result; for a failed job, an error logged here and a result without a value."""
        error = job.exception()  # waits for the job
        if error is None:
            return job.results()[0]
        log.error("job #%d (%s) failed: see its run folder's log, and %s", number,
                  " ".join(filter_overrides(overrides)), job.paths.stderr)
        return JobReturn(overrides=list(overrides), status=JobStatus.COMPLETED)  # no value, as the basic launcher's
