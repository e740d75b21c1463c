"""dml_bench's submitit launchers (configs/hydra/launcher/slurm.yaml and slurm_local.yaml): Hydra
loads launchers only from this namespace package. What they add is ``dml_bench.runtime.submitit_jobs``.

Hydra imports this package at every start: without hydra-submitit-launcher (the ``slurm`` extra)
it declares nothing.
"""

from importlib.util import find_spec

if find_spec("hydra_plugins.hydra_submitit_launcher") is not None:
    from hydra_plugins.hydra_submitit_launcher import submitit_launcher

    from dml_bench.runtime.submitit_jobs import SubmititJobs

    class SlurmLauncher(SubmititJobs, submitit_launcher.SlurmLauncher):
        """Each job of a multirun a SLURM job."""

    class LocalLauncher(SubmititJobs, submitit_launcher.LocalLauncher):
        """Each job of a multirun a process of submitit's local executor: the SLURM code path on
        this machine."""
