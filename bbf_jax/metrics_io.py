"""Host-side writers of run logs: CSV files and TensorBoard event files."""

from __future__ import annotations

import csv
import pathlib
import sys

# The files whose presence means a directory already holds a run of an agent with its
# own runner (LunarLander, CarRacing), which writes no checkpoints.
RUN_FILES = ("episodes.csv", "train_log.csv", "evals.csv", "eval.json")


def fresh_run_dirs(run_dirs, agent: str) -> list[pathlib.Path]:
    """Creates the directories of runs that cannot resume, once none holds a run.

    Raises:
      ValueError: a directory already holds a run (any of ``RUN_FILES``); nothing is
        created then.
    """
    run_dirs = [pathlib.Path(d) for d in run_dirs]
    for d in run_dirs:
        found = [f for f in RUN_FILES if (d / f).exists()]
        if found:
            raise ValueError(f"{d} already holds a run ({', '.join(found)}); {agent} runs "
                             "do not resume: choose a new --base_dir")
    for d in run_dirs:
        d.mkdir(parents=True, exist_ok=True)
    return run_dirs


class CsvLog:
    """Append-only CSV with a fixed header, safe to resume.

    On resume, rows whose ``agent_step`` is beyond the checkpoint are dropped (they
    were written after the checkpoint by a run that was then killed).
    """

    def __init__(self, path: pathlib.Path, fields: list[str]):
        self.path = pathlib.Path(path)
        self.fields = list(fields)
        if not self.path.exists():
            with self.path.open("w", newline="") as f:
                csv.writer(f).writerow(self.fields)

    def truncate_after(self, agent_step: int) -> None:
        with self.path.open(newline="") as f:
            rows = list(csv.DictReader(f))
        keep = [r for r in rows if int(float(r["agent_step"])) <= agent_step]
        with self.path.open("w", newline="") as f:
            writer = csv.DictWriter(f, self.fields, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(keep)

    def write(self, row: dict) -> None:
        with self.path.open("a", newline="") as f:
            csv.DictWriter(f, self.fields, extrasaction="ignore").writerow(
                {k: _fmt(row.get(k, "")) for k in self.fields}
            )


def _fmt(v):
    if isinstance(v, float):
        return f"{v:.7g}"
    return v


class NullLog:
    """Stands in for :class:`CsvLog` or :class:`TensorBoard` on processes that do not
    write logs (all but process 0 of a multi-process run)."""

    def __init__(self, *args, **kwargs):
        pass

    def truncate_after(self, agent_step: int) -> None:
        pass

    def write(self, row: dict) -> None:
        pass

    def scalars(self, step: int, values: dict) -> None:
        pass

    def close(self) -> None:
        pass


def _summary_writer():
    """tensorboardX's ``SummaryWriter``, imported without PyTorch.

    tensorboardX imports torch whenever it is installed (2-3 s of CPU per process), only to
    accept torch tensors; these logs hold Python floats. So torch is hidden from that
    import unless something has imported it already."""
    if "torch" in sys.modules:
        from tensorboardX import SummaryWriter

        return SummaryWriter
    sys.modules["torch"] = None  # ``import torch`` raises ImportError
    try:
        from tensorboardX import SummaryWriter
    finally:
        del sys.modules["torch"]
    return SummaryWriter


class TensorBoard:
    """Scalar summaries in ``base_dir/tb`` (tensorboardX); events past a resumed step
    are purged so curves do not double back."""

    def __init__(self, base_dir: pathlib.Path, purge_step: int | None = None):
        self._writer = _summary_writer()(str(pathlib.Path(base_dir) / "tb"), purge_step=purge_step)

    def scalars(self, step: int, values: dict) -> None:
        for k, v in values.items():
            self._writer.add_scalar(k, float(v), step)

    def close(self) -> None:
        self._writer.close()
