"""Cluster job submission: the same training command as a Slurm job or a Kubeflow TFJob.

`launch.submit` builds a `job.Job` from its flags and the launch.train flags after `--`; the
scheduler's module (research.submit.slurm, research.submit.kubernetes) writes the sbatch script
or the TFJob manifest, submits it, and reports the job's state. research.submit.sweep expands one
command over a grid of config overrides into many runs: a Slurm job array, or a job per run.
"""
