"""Run by tests/test_distributed.py under torchrun: trains with the given config and saves what this rank holds.

    python -m torch.distributed.run --standalone --nproc-per-node 2 tests/ddp_worker.py OUT_DIR CONFIG_JSON
"""

import json
import os
import sys
from pathlib import Path

from safetensors.torch import save_file

from ganforge.config import TrainConfig
from ganforge.io import pack_state
from ganforge.training import train_run

out, values = Path(sys.argv[1]), json.loads(sys.argv[2])
trainer = train_run(TrainConfig(**values), runs_dir=out / "runs", progress=False)
state = {**pack_state("G", trainer.G.state_dict()), **pack_state("D", trainer.D.state_dict()),
         **pack_state("G_ema", trainer.G_ema.state_dict())}
save_file({k: v.contiguous() for k, v in state.items()}, out / f"rank{os.environ['RANK']}.safetensors")
(out / "run_dir.txt").write_text(str(trainer.run_dir))
