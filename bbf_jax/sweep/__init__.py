"""Sweeps: a grid of bbf-train runs (variants x games x seeds), run locally or as a SLURM
job array, restart-safe.

Entry point: ``bbf-sweep`` (``bbf_jax.sweep.cli``); ``python -m bbf_jax.sweep`` runs the
same. Modules: ``grid`` (expansion, bbf-train command lines), ``manifest`` (sweep.json),
``status`` (per-run state and the progress line), ``executor`` (local runs, array-task
share), ``slurm`` (the job-array script).
"""
