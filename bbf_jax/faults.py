"""How a run stops on a fault: preemption signals and non-finite training values.

``bbf-train`` exits with :data:`EXIT_PREEMPTED` after :class:`Preempted` and with
:data:`EXIT_NONFINITE` after :class:`NonFiniteStop`; both leave every file of the run
consistent with the newest checkpoint.
"""

from __future__ import annotations

import json
import pathlib
import shutil

import numpy as np

EXIT_PREEMPTED = 75  # sysexits.h EX_TEMPFAIL: try again later (rerun to resume)
EXIT_NONFINITE = 3


class Preempted(Exception):
    """The run stopped on a signal after writing a checkpoint of ``agent_step``."""

    def __init__(self, agent_step: int, signum: int):
        super().__init__(agent_step, signum)
        self.agent_step, self.signum = agent_step, signum


class NonFiniteStop(Exception):
    """A loss or the gradient norm was not finite (``RunConfig.on_nonfinite = 'stop'``).

    ``str(e)`` is the one-line message; ``e.directory`` the diagnostic directory.
    """

    def __init__(self, message: str, directory: pathlib.Path):
        super().__init__(message)
        self.directory = directory


def nonfinite_names(flags, checked) -> list[str]:
    """The quantities set in the ``NonFinite`` bits ``flags`` (any shape), in order; bit i
    stands for ``checked[i]`` (the learner's ``NONFINITE_CHECKED``)."""
    bits = int(np.bitwise_or.reduce(np.asarray(flags, np.int64).ravel()))
    return [k for i, k in enumerate(checked) if bits >> i & 1]


def nonfinite_message(flags, agent_step: int, first_grad_step: int, checked) -> str:
    """One line: the quantities that broke first, the agent step and that gradient step.

    ``flags`` are the ``(G,)`` ``NonFinite`` bits of a dispatch whose first gradient step
    is ``first_grad_step`` (1-based count of the run's gradient steps). Only the first bad
    step's quantities are named: after it the parameters themselves may be NaN.
    """
    flags = np.asarray(flags).ravel()
    j = int(np.flatnonzero(flags)[0])
    return (f"non-finite {', '.join(nonfinite_names(flags[j], checked))} at agent step "
            f"{agent_step} "
            f"(gradient step {first_grad_step + j})")


def write_nonfinite_report(directory, message: str, agent_step: int, first_grad_step: int,
                           flags, metrics: dict, indices, checkpoints,
                           checked) -> pathlib.Path:
    """Writes the diagnostic directory of a non-finite dispatch and returns it.

    Contents: ``message.txt`` (the one line), ``batch.json`` (agent step, the dispatch's
    gradient steps, per step which quantities were not finite and every scalar metric,
    and the replay indices ``(G, B)`` of the batch: raveled ``t * n_envs + b``; JSON
    with ``NaN``/``Infinity`` as Python writes them) and ``checkpoint/<step>``: a copy of
    the newest complete checkpoint in ``checkpoints``, the last good state (absent when
    none was written yet).
    """
    directory = pathlib.Path(directory)
    if directory.exists():
        shutil.rmtree(directory)
    directory.mkdir(parents=True)
    flags = np.asarray(flags).ravel()
    g = flags.size
    report = {
        "message": message,
        "agent_step": agent_step,
        "gradient_steps": list(range(first_grad_step, first_grad_step + g)),
        "nonfinite": [nonfinite_names(f, checked) for f in flags],
        "metrics": {k: np.asarray(v, np.float64).reshape(g).tolist()
                    for k, v in sorted(metrics.items()) if np.size(v) == g},
        "indices": np.asarray(indices).reshape(g, -1).tolist(),
    }
    (directory / "batch.json").write_text(json.dumps(report, indent=1))
    steps = [int(p.name) for p in pathlib.Path(checkpoints).glob("*") if p.name.isdigit()]
    if steps:
        step = str(max(steps))
        shutil.copytree(pathlib.Path(checkpoints) / step, directory / "checkpoint" / step)
    (directory / "message.txt").write_text(message + "\n")
    return directory
