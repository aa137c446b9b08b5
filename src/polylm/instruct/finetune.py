"""`polylm finetune`: instruction data made into training sequences, then the pretraining trainer.

The model of `model.path` (its tokenizer encodes the conversations) is tuned on the `polylm instruct prepare`
directory `data` with the same engines, checkpoints, resume and metrics as pretraining; the loss counts response
tokens only (`instruct.sft`). `RUN/sft_data.json` records how many sequences there are and which conversations
were too long for one.
"""

from __future__ import annotations

import sys
from pathlib import Path

from polylm.durable import write_json
from polylm.instruct.sft import InstructionData
from polylm.runlock import hold_run_dir
from polylm.tokenizer import Tokenizer
from polylm.train.config import FinetuneConfig
from polylm.train.trainer import train


def finetune(config: FinetuneConfig, run_dir: Path, resume: str | None = None) -> dict:
    """Tune until `run.max_steps`; the last step's metrics (as `train`)."""
    data = InstructionData(Path(config.data), Tokenizer.from_dir(config.model.path), config.sft, config.run.seed)
    with hold_run_dir(run_dir, "polylm finetune"):
        summary = {"sequences": len(data.train), "held_out_conversations": len(data.held_out), "dropped": data.dropped}
        write_json(run_dir / "sft_data.json", summary)
        if data.dropped:
            print(f"polylm: warning: {sum(data.dropped.values())} conversation(s) longer than a sequence left out "
                  f"(by split and language: {run_dir / 'sft_data.json'})", file=sys.stderr)  # fmt: skip
        return train(config, run_dir, resume=resume, data=data)
