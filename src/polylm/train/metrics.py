"""The run's metrics: `metrics.jsonl` (one object per logged step), `validation.jsonl`, TensorBoard event files.

Only rank 0 writes. On resume, records past the checkpoint's step are dropped from both JSONL files and from
TensorBoard (`purge_step`), since those steps are computed again.
"""

from __future__ import annotations

import json
from pathlib import Path

from torch.utils.tensorboard import SummaryWriter


class MetricsLog:
    def __init__(self, run_dir: Path, resumed_step: int | None, tensorboard: bool) -> None:
        self.train_path = run_dir / "metrics.jsonl"
        self.validation_path = run_dir / "validation.jsonl"
        for path in (self.train_path, self.validation_path):
            kept = path.read_text().splitlines() if resumed_step is not None and path.exists() else []
            kept = [line for line in kept if json.loads(line)["step"] <= resumed_step]
            path.write_text("".join(line + "\n" for line in kept))
        purge = resumed_step + 1 if resumed_step is not None else None
        self.writer = SummaryWriter(str(run_dir / "tensorboard"), purge_step=purge) if tensorboard else None

    def _append(self, path: Path, record: dict) -> None:
        with path.open("a") as handle:
            handle.write(json.dumps(record) + "\n")

    def _scalars(self, prefix: str, record: dict, step: int) -> None:
        if self.writer is None:
            return
        for key, value in record.items():
            if isinstance(value, dict):
                for name, inner in value.items():
                    self.writer.add_scalar(f"{prefix}{key}/{name}", inner, step)
            elif isinstance(value, int | float) and key != "step":
                self.writer.add_scalar(f"{prefix}{key}", value, step)

    def train(self, record: dict) -> None:
        self._append(self.train_path, record)
        self._scalars("train/", record, record["step"])

    def validation(self, record: dict) -> None:
        self._append(self.validation_path, record)
        self._scalars("validation/", record, record["step"])

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
