"""Live logging of a run to TensorBoard and Weights & Biases: losses, learning rate, the accuracy matrix as it grows.

Off by default; a run config turns it on with ``logging: {tensorboard: true, wandb: {project: NAME}}``. The runner
calls four methods (``start_stream``, ``on_step``, ``on_row``, ``close``); the libraries are used directly (torch's
``SummaryWriter`` and the ``wandb`` client), imported only when asked for. The global step is the training
iteration counted over the stream's tasks, so a resumed run continues where the killed one stopped, and the W&B
run id is the run's name with its config hash, so a resumed run logs into the same W&B run (``resume="allow"``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from condu_bench.errors import UserError


class RunObserver:
    """Fans a run's training signals out to TensorBoard and/or W&B."""

    def __init__(self, directory: Path, run_name: str, run_config: dict[str, Any], tensorboard: bool, wandb: Any):
        self.writer = None
        self.wandb_run = None
        self.prefix = ""
        self.offsets: list[int] = [0]
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(log_dir=str(directory / "tensorboard"))
        if wandb is not None:
            try:
                import wandb as wandb_client
            except ImportError as exc:
                raise UserError("logging.wandb needs the wandb client: pip install wandb (or drop logging.wandb)") from exc
            (directory / "wandb").mkdir(parents=True, exist_ok=True)
            self.wandb_run = wandb_client.init(project=wandb.project, entity=wandb.entity, mode=wandb.mode,
                                               name=run_name, id=run_name.replace("/", "-"), resume="allow",
                                               dir=str(directory), config=run_config, reinit="create_new")

    def start_stream(self, index: int, name: str, iterations: list[int]) -> None:
        """A stream starts (or resumes): its tasks' iteration counts give each task's first global step."""
        self.prefix = "" if index == 0 else f"{name}/"
        self.offsets = [sum(iterations[:k]) for k in range(len(iterations) + 1)]

    def on_step(self, task_index: int, step: int, loss: float, lr: float) -> None:
        global_step = self.offsets[task_index] + step
        self._scalars({"train/loss": loss, "train/lr": lr}, global_step)

    def on_row(self, task_index: int, rows: list[list[float]], step_names: list[str], column_names: list[str]) -> None:
        """The accuracy row after task ``task_index``, logged at the task's last step; the matrix so far as a table."""
        global_step = self.offsets[task_index + 1]
        row = rows[-1]
        values = {f"accuracy/{name}": acc for name, acc in zip(column_names, row)}
        values["accuracy/mean"] = sum(row) / len(row)
        self._scalars(values, global_step)
        if self.writer is not None:
            header = "| step | " + " | ".join(column_names) + " |\n|---|" + "---|" * len(column_names) + "\n"
            body = "".join(f"| {s} | " + " | ".join(f"{a:.2f}" for a in r) + " |\n" for s, r in zip(step_names, rows))
            self.writer.add_text(f"{self.prefix}accuracy_matrix", header + body, global_step)
        if self.wandb_run is not None:
            import wandb

            table = wandb.Table(columns=["step", *column_names], data=[[s, *r] for s, r in zip(step_names, rows)])
            self.wandb_run.log({f"{self.prefix}accuracy_matrix": table, "global_step": global_step})

    def _scalars(self, values: dict[str, float], global_step: int) -> None:
        values = {f"{self.prefix}{k}": v for k, v in values.items()}
        if self.writer is not None:
            for key, value in values.items():
                self.writer.add_scalar(key, value, global_step)
        if self.wandb_run is not None:
            self.wandb_run.log({**values, "global_step": global_step})

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        if self.wandb_run is not None:
            self.wandb_run.finish()


def make_observer(config: Any, directory: Path, run_name: str, run_config: dict[str, Any]) -> RunObserver | None:
    """The observer ``config`` (a :class:`~condu_bench.config.LoggingConfig`) asks for, or None when logging is off."""
    if not config.tensorboard and config.wandb is None:
        return None
    return RunObserver(directory, run_name, run_config, config.tensorboard, config.wandb)
