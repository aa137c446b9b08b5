"""The run's metrics: `metrics.jsonl` (one object per logged step), `validation.jsonl`, TensorBoard event files.

Only rank 0 writes, through `polylm.durable`: each record is appended and fsynced, so what is on disk survives a
kill or a power cut. On resume, records past the checkpoint's step are dropped from both JSONL files by an atomic
rewrite (a kill during it leaves the old file whole) and from TensorBoard (`purge_step`), since those steps are
computed again; a torn last line, a record the kill cut, goes with them.
"""

from __future__ import annotations

from pathlib import Path

from torch.utils.tensorboard import SummaryWriter

from polylm.durable import append_jsonl, rewrite_jsonl, write_text
from polylm.errors import PolyLMError


def _step(path: Path, record: dict) -> int:
    step = record.get("step")
    if not isinstance(step, int):
        raise PolyLMError(f"{path}: a record without an integer 'step' ({str(record)[:80]}); the file is damaged")
    return step


def _check_complete(path: Path, records: list[dict], last_logged: int) -> None:
    """A record is appended and fsynced before its step's checkpoint, so the log must reach the last step logged
    before the checkpoint; if it does not, records were lost by something other than a kill: say so."""
    reached = records[-1]["step"] if records else 0
    if reached < last_logged:
        raise PolyLMError(
            f"{path}: ends at step {reached}, but the checkpoint resumed from had logged step {last_logged}; the "
            "file lost records (restored from an old copy?): put the complete file back, or start a new --out"
        )


class MetricsLog:
    def __init__(self, run_dir: Path, resumed_step: int | None, tensorboard: bool, log_every: int = 1) -> None:
        self.train_path = run_dir / "metrics.jsonl"
        self.validation_path = run_dir / "validation.jsonl"
        for path in (self.train_path, self.validation_path):
            if resumed_step is None:
                write_text(path, "")
                continue
            kept = rewrite_jsonl(path, lambda record, path=path: _step(path, record) <= resumed_step)
            if path == self.train_path:
                _check_complete(path, kept, resumed_step - resumed_step % log_every)
        purge = resumed_step + 1 if resumed_step is not None else None
        self.writer = SummaryWriter(str(run_dir / "tensorboard"), purge_step=purge) if tensorboard else None

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
        append_jsonl(self.train_path, [record])
        self._scalars("train/", record, record["step"])

    def validation(self, record: dict) -> None:
        append_jsonl(self.validation_path, [record])
        self._scalars("validation/", record, record["step"])

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
