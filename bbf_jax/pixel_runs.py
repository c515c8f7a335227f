"""What the CarRacing runners (PPO, SAC + DrQ) share: the run directory's files,
evaluation with raw returns, ``eval.json`` and ``curves.png``.

A run directory holds ``episodes.csv`` (raw training returns and lengths against
``agent_step``), ``train_log.csv`` (the agent's metrics), ``evals.csv`` (each
evaluation's mean raw return), ``eval.json`` (the final evaluation's returns, the
evaluation curve, parameter count, steps, wall time) and ``curves.png``. These runs
write no checkpoints: a directory that already holds one is refused.
"""

from __future__ import annotations

import json
import pathlib
from collections.abc import Callable

import numpy as np

from bbf_jax.config import CarRacingConfig
from bbf_jax.envs.car_racing import CarRacing
from bbf_jax.envs.evaluation import env_seeds, play_episodes
from bbf_jax.metrics_io import CsvLog, fresh_run_dirs

SOLVED_RETURN = 900.0  # CarRacing's "solved"


class PixelRun:
    """The files of one CarRacing run in ``run_dir``.

    Raises:
      ValueError: ``run_dir`` already holds a run.
    """

    def __init__(self, run_dir, agent: str, metric_names: tuple[str, ...]):
        (self.dir,) = fresh_run_dirs([run_dir], agent)
        self.agent = agent
        self.episodes = CsvLog(self.dir / "episodes.csv",
                               ["agent_step", "episode_return", "episode_length"])
        self.train = CsvLog(self.dir / "train_log.csv", ["agent_step", *metric_names])
        self.evals = CsvLog(self.dir / "evals.csv", ["agent_step", "mean_return"])
        self.evaluations: list[dict] = []

    def episode(self, agent_step: int, episode_return: float, length: int) -> None:
        self.episodes.write({"agent_step": agent_step, "episode_return": float(episode_return),
                             "episode_length": int(length)})

    def evaluate(self, env_cfg: CarRacingConfig, num_episodes: int, seed: int,
                 act: Callable[[np.ndarray], np.ndarray], agent_step: int) -> dict:
        """Plays ``num_episodes`` fresh envs (env i seeded with child i of ``seed``)
        together, ``act`` mapping a batch of observations to env actions; records and
        returns ``{"agent_step", "returns" (raw), "mean_return"}``."""
        returns = play_episodes([CarRacing(env_cfg) for _ in range(num_episodes)],
                                env_seeds(seed, num_episodes), act,
                                lambda reward, info: info["raw_reward"])
        record = {"agent_step": agent_step, "returns": returns.tolist(),
                  "mean_return": float(returns.mean())}
        self.evaluations.append(record)
        self.evals.write({"agent_step": agent_step, "mean_return": record["mean_return"]})
        return record

    def write_result(self, **fields) -> dict:
        """``eval.json`` (``fields`` plus the final evaluation and the curve) and
        ``curves.png``; returns the result."""
        final = self.evaluations[-1]
        result = {"agent_name": self.agent, **fields, "returns": final["returns"],
                  "mean_return": final["mean_return"], "evaluations": self.evaluations}
        (self.dir / "eval.json").write_text(json.dumps(result, indent=1))
        plot_curves(self.dir)
        return result


def summary(result: dict) -> str:
    """The line ``bbf-train`` prints for a CarRacing run's result."""
    return (f"seed {result['seed']}: mean evaluation return {result['mean_return']:.1f} over "
            f"{len(result['returns'])} episodes after {result['agent_steps']} agent steps")


def plot_curves(run_dir) -> pathlib.Path:
    """``curves.png``: raw training episode returns and evaluation means against agent
    steps."""
    from matplotlib.figure import Figure

    run_dir = pathlib.Path(run_dir)
    result = json.loads((run_dir / "eval.json").read_text())
    fig = Figure(figsize=(7, 4))
    ax = fig.subplots()
    episodes = np.atleast_1d(np.genfromtxt(run_dir / "episodes.csv", delimiter=",",
                                           names=True))
    if episodes.size:
        ax.plot(episodes["agent_step"], episodes["episode_return"], ".", ms=3, alpha=0.5,
                label="training episodes")
    evals = result["evaluations"]
    ax.plot([e["agent_step"] for e in evals], [e["mean_return"] for e in evals], "k-o",
            label="evaluation mean")
    ax.axhline(SOLVED_RETURN, color="grey", ls="--", lw=1, label="solved (900)")
    ax.set(xlabel="agent steps", ylabel="return (raw)",
           title=f"{result['agent_name']} on CarRacing-v3, seed {result['seed']}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = run_dir / "curves.png"
    fig.savefig(path, dpi=100)
    return path
