"""Training metrics: one JSON line per optimizer step in ``metrics.jsonl``, optionally mirrored to TensorBoard."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path
from typing import Any

from paretoalign.atomic_io import dumps_json, write_jsonl_atomic
from paretoalign.errors import InputError

METRICS_FILE = "metrics.jsonl"


class MetricsLog:
    """Appends step records to `run_dir/metrics.jsonl`; on resume, drops records past the resumed step first."""

    def __init__(self, run_dir: str | Path | None, *, resume_step: int = 0, tensorboard: bool = False) -> None:
        self.records: list[dict[str, Any]] = []
        self.path = Path(run_dir) / METRICS_FILE if run_dir is not None else None
        self._writer = None
        if self.path is not None:
            kept = []
            if self.path.is_file():
                for line in self.path.read_text(encoding="utf-8").splitlines():
                    if line.strip():
                        row = json.loads(line)
                        if resume_step and int(row.get("step", 0)) <= resume_step:
                            kept.append(row)
            write_jsonl_atomic(self.path, kept)
            self.records = kept
        if tensorboard:
            if run_dir is None:
                raise InputError("tensorboard logging needs an output_dir", field="tensorboard")
            if importlib.util.find_spec("tensorboard") is None:
                raise InputError("tensorboard=true needs the 'tensorboard' package: pip install "
                                 "'paretoalign[tensorboard]'", field="tensorboard")
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(str(Path(run_dir) / "tensorboard"), purge_step=resume_step + 1)

    def log(self, record: dict[str, Any]) -> None:
        """Record one step (a dict with an integer 'step' and numbers)."""
        clean = {k: (float(v) if isinstance(v, float) and math.isfinite(v) else v) for k, v in record.items()}
        self.records.append(clean)
        if self.path is not None:
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(dumps_json(clean) + "\n")  # NaN / inf as null: valid JSON
        if self._writer is not None:
            for key, value in clean.items():
                if key != "step" and isinstance(value, (int, float)) and not isinstance(value, bool):
                    self._writer.add_scalar(key, value, clean["step"])

    def close(self) -> None:
        """Flush and close TensorBoard, if open."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None
