"""One training run over several processes with torch.distributed: devices, process groups, launching.

`torchrun --nproc-per-node N -m ganforge train ...` (or `ganforge train --nproc N`, which starts
the N processes on this machine as torchrun would) starts N copies of the same training. Each process sees
RANK, WORLD_SIZE and LOCAL_RANK in its environment; `setup()` joins the group (gloo on CPUs, NCCL
on GPUs). Every rank holds the whole model; DistributedDataParallel averages the gradients, so the
ranks stay identical. Rank 0 alone writes the run folder.
"""

from __future__ import annotations

import datetime
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass

import torch
import torch.distributed as dist

from ganforge.errors import GanforgeError


@dataclass(frozen=True)
class Group:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    owner: bool = False  # whether setup() made the process group (and teardown() ends it)

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world > 1


SINGLE = Group()  # one process, no process group


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """auto -> CUDA when present (the local rank's GPU), else the CPU; cuda -> the local rank's GPU."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise GanforgeError(f"--device {name}: no CUDA device is available here "
                                f"(torch {torch.__version__}, CUDA build: {torch.version.cuda or 'no'}); use --device cpu")
        index = int(name.partition(":")[2] or local_rank)
        if index >= torch.cuda.device_count():
            raise GanforgeError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s) here")
        torch.cuda.set_device(index)
        return torch.device("cuda", index)
    if name != "cpu":
        raise GanforgeError(f"--device {name!r}: choose auto, cpu, cuda or cuda:N")
    return torch.device("cpu")


def compiler_missing(device: torch.device) -> str | None:
    """Why torch.compile cannot work here (no Triton for GPUs, no C++ compiler for CPUs), or None."""
    if device.type == "cuda":
        from torch.utils._triton import has_triton
        return None if has_triton() else "Triton is not installed, which torch.compile needs on GPUs"
    if not any(shutil.which(c) for c in (os.environ.get("CXX", "g++"), "g++", "c++", "clang++")):
        return "no C++ compiler (g++) was found, which torch.compile needs on CPUs"
    return None


def setup(device_name: str) -> Group:
    """Join the process group that torchrun's environment describes; a single process needs none."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Group()
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if dist.is_initialized():
        return Group(rank, world, local_rank)
    device = resolve_device(device_name, local_rank)
    # a long timeout: the others wait at a barrier while rank 0 prepares a large folder (hours for millions
    # of photos); a rank that fails is noticed by the launcher (launch() or torchrun), which stops the rest
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=datetime.timedelta(hours=12))
    return Group(rank, world, local_rank, owner=True)


def teardown(group: Group, failed: bool = False) -> None:
    """Leave the process group setup() made; after a failure without waiting for the others, who may never come."""
    if group.owner:
        if not failed:
            dist.barrier()
        dist.destroy_process_group()


def broadcast(group: Group, value):
    """Rank 0's value, on every rank."""
    if not group.enabled:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def any_rank(group: Group, flags: list[bool], device: torch.device) -> list[bool]:
    """For each flag, whether any rank says yes: how all ranks agree to stop at the same step."""
    if not group.enabled:
        return flags
    t = torch.tensor([float(f) for f in flags], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return [bool(v) for v in t.tolist()]


def sum_over_ranks(group: Group, t: torch.Tensor) -> torch.Tensor:
    """t summed over every rank (a copy; t itself where there is one process)."""
    if group.enabled:
        t = t.clone()
        dist.all_reduce(t)
    return t


def broadcast_buffers(group: Group, *modules: torch.nn.Module) -> None:
    """Rank 0's buffers (batch-norm statistics, which each rank updates from its own batch) on every rank."""
    if group.enabled:
        for module in modules:
            for buffer in module.buffers():
                dist.broadcast(buffer, src=0)


def launch(nproc: int, argv: list[str]) -> int:
    """Run `ganforge <argv>` in nproc processes on this machine, each with the environment torchrun would
    give it; returns the first non-zero exit code, or 0. As torchrun's agent does, this process hosts the
    rendezvous: a c10d TCPStore bound to port 0 on the loopback (the system picks a free port, held from
    then on: no other program can take it between choosing and binding), whose clients the workers are
    (TORCHELASTIC_USE_AGENT_STORE).

    The workers stay in this terminal's process group, so Ctrl-C reaches each of them: they agree on a
    step, rank 0 saves a checkpoint, and they exit. If one fails, the others are stopped.
    """
    if nproc < 1:
        raise GanforgeError(f"--nproc {nproc}: must be at least 1")
    store = dist.TCPStore("127.0.0.1", 0, is_master=True, wait_for_workers=False)
    env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(store.port), "WORLD_SIZE": str(nproc),
           "LOCAL_WORLD_SIZE": str(nproc), "TORCHELASTIC_USE_AGENT_STORE": "True",
           "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))}
    procs = [subprocess.Popen([sys.executable, "-m", "ganforge", *argv],
                              env={**env, "RANK": str(r), "LOCAL_RANK": str(r)}) for r in range(nproc)]
    failed_at = None
    while True:
        try:
            codes = [p.poll() for p in procs]
            if all(c is not None for c in codes):
                return next((c for c in codes if c), 0)
            if failed_at is None and any(codes):
                failed_at = time.monotonic()
                for p in procs:
                    if p.poll() is None:
                        p.terminate()  # the others stop too (they could only wait for the failed one)
            if failed_at is not None and time.monotonic() - failed_at > 30:
                for p in procs:
                    p.kill()
            time.sleep(0.1)
        except KeyboardInterrupt:
            continue  # the workers got it too; wait for their checkpoint
