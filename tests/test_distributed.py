"""Devices, precision, torch.compile and several processes (torchrun with gloo, on the CPU)."""

import datetime
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import skip_or_fail, tiny_config
from safetensors.torch import load_file

from ganforge import train
from ganforge.checkpoint import load_checkpoint
from ganforge.cli import main
from ganforge.config import TrainConfig
from ganforge.errors import GanforgeError
from ganforge.losses import gradient_penalty, r1_penalty
from ganforge.stats import read_stats
from ganforge.training import train_run

WORKER = Path(__file__).parent / "ddp_worker.py"
# an MLP GAN without dropout or batch norm: its training does not depend on how a batch is split
NO_BATCH_COUPLING = {"model": "mlp", "mlp_d_dropout": False, "mlp_g_hidden": 64, "mlp_d_hidden": 32, "z_dim": 16,
                     "log_every": 5, "n_samples": 16}


def gpu(test):
    """A GPU test: `pytest -m gpu` on a machine with CUDA; skipped where there is none (no CI machine here has one)."""
    return pytest.mark.gpu(pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")(test))



def torchrun(nproc: int, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}", *args]
    done = subprocess.run(command, cwd=cwd, env=env, check=False, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


@pytest.fixture(scope="module")
def two_process_run(tmp_path_factory):
    """10 steps in 2 processes with 16 images each; every rank saves the weights it ends with."""
    out = tmp_path_factory.mktemp("ddp")
    values = NO_BATCH_COUPLING | {"batch_size": 16, "steps": 10, "data": "digits"}
    torchrun(2, str(WORKER), str(out), json.dumps(values), cwd=out)
    return out, values


def test_two_ranks_end_with_identical_weights(two_process_run):
    out, _ = two_process_run
    rank0, rank1 = load_file(out / "rank0.safetensors"), load_file(out / "rank1.safetensors")
    assert rank0.keys() == rank1.keys() and any(k.startswith("G_ema/") for k in rank0)
    for key in rank0:
        assert torch.equal(rank0[key], rank1[key]), key


def test_two_processes_of_batch_b_match_one_process_of_batch_2b(two_process_run, tmp_path):
    out, values = two_process_run
    one = train_run(TrainConfig(**(values | {"batch_size": 32})).validate(), runs_dir=tmp_path, progress=False)
    ranked = load_file(out / "rank0.safetensors")
    for name, tensor in one.G.state_dict().items():
        torch.testing.assert_close(ranked["G/" + name], tensor, rtol=1e-4, atol=1e-5)
    for name, tensor in one.D.state_dict().items():
        torch.testing.assert_close(ranked["D/" + name], tensor, rtol=1e-4, atol=1e-5)
    # and the check can fail: one process of batch 16 (half the data per step) ends elsewhere
    half = train_run(TrainConfig(**values).validate(), runs_dir=tmp_path, progress=False)
    assert not torch.allclose(ranked["G/net.0.weight"], half.G.state_dict()["net.0.weight"], rtol=1e-4, atol=1e-5)


def test_only_rank_0_writes_and_a_two_process_run_resumes_as_one(two_process_run, capsys):
    out, _ = two_process_run
    run = Path((out / "run_dir.txt").read_text())
    assert len(list(run.parent.iterdir())) == 1  # one run folder, not one per rank
    meta, _ = load_checkpoint(run)
    assert meta["world_size"] == 2 and meta["step"] == 10 and meta["images_seen"] == 10 * 32
    stats = read_stats(run).lines
    assert [s["step"] for s in stats] == [5, 10]  # one line per log step, not one per rank
    train(resume=run, budget={"steps": 16}, progress=False)
    meta, _ = load_checkpoint(run)
    assert meta["world_size"] == 1 and meta["step"] == 16
    assert meta["images_seen"] == 10 * 32 + 6 * 16  # the global batch went from 2 x 16 to 1 x 16
    assert "resuming a 2-process run with 1 process(es)" in capsys.readouterr().err


def test_nproc_shortcut_runs_torchrun_and_prints_the_run_folder_once(tmp_path):
    done = subprocess.run([sys.executable, "-m", "ganforge", "train", "--nproc", "2", "--model", "mlp", "--steps", "4",
                           "--set", "mlp_g_hidden=32", "--set", "mlp_d_hidden=16", "--set", "log_every=2",
                           "--out", str(tmp_path), "--quiet"], check=False, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    printed = [line for line in done.stdout.splitlines() if line.strip()]
    assert printed == [str(tmp_path / "00000-mlp-digits")]
    meta, _ = load_checkpoint(printed[0])
    assert meta["world_size"] == 2 and meta["step"] == 4


def test_nproc_holds_its_rendezvous_port_from_the_start(monkeypatch):
    """The port the workers are told is bound by the launcher's c10d store while they start: no other program
    can take it in between (a free port picked, released, then used, could be)."""
    import socket

    from ganforge import distributed

    seen = []

    class Worker:
        def __init__(self, command, env):
            port = int(env["MASTER_PORT"])
            with socket.socket() as s, pytest.raises(OSError):
                s.bind(("127.0.0.1", port))  # taken: the store listens there
            store = torch.distributed.TCPStore("127.0.0.1", port, is_master=False, timeout=datetime.timedelta(seconds=10))
            store.set(f"rank{env['RANK']}", "here")  # the workers are the store's clients
            seen.append((env["RANK"], env["TORCHELASTIC_USE_AGENT_STORE"], store.get(f"rank{env['RANK']}")))

        def poll(self):
            return 0

    monkeypatch.setattr(distributed.subprocess, "Popen", Worker)
    assert distributed.launch(2, ["train"]) == 0
    assert seen == [("0", "True", b"here"), ("1", "True", b"here")]


def nproc_train(*args: str) -> None:
    done = subprocess.run([sys.executable, "-m", "ganforge", "train", "--nproc", "2", *args, "--quiet"], check=False,
                          capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]


@pytest.mark.parametrize("model", [
    ["--model", "dcgan", "--loss", "wgan-gp", "--set", "diffaugment=color,translation,cutout"],
    ["--model", "light", "--image-size", "32", "--set", "ada=true"]], ids=["dcgan-wgan-gp", "light-ada"])
def test_two_processes_stopped_and_resumed_end_bit_identical_to_a_straight_run(tmp_path, model):
    """Each rank's own draws (DiffAugment's transforms, the gradient penalty's mixing) go on where they stopped:
    rank 0 saves every rank's RNG state. Adaptive augmentation's p follows every rank's D scores: one p for all."""
    settings = [*model, "--set", "g_width=8", "--set", "d_width=8", "--set", "z_dim=8", "--set", "batch_size=16",
                "--set", "log_every=2", "--set", "n_samples=4"]
    nproc_train(*settings, "--steps", "6", "--out", str(tmp_path / "straight"))
    nproc_train(*settings, "--steps", "3", "--out", str(tmp_path / "stopped"))
    name = f"00000-{model[1]}-digits"
    stopped = tmp_path / "stopped" / name
    assert "rng/torch/rank1" in load_checkpoint(stopped)[1]
    nproc_train("--resume", str(stopped), "--steps", "6")
    straight, resumed = (load_checkpoint(tmp_path / d / name)[1] for d in ("straight", "stopped"))
    assert resumed.keys() == straight.keys()
    for key in straight:
        assert torch.equal(resumed[key], straight[key]), key


def test_ctrl_c_stops_every_process_at_the_same_step_with_a_checkpoint(tmp_path):
    """Ctrl-C in a terminal reaches the whole process group: torchrun and both workers."""
    command = [sys.executable, "-m", "ganforge", "train", "--nproc", "2", "--model", "mlp", "--steps", "100000",
               "--set", "mlp_g_hidden=32", "--set", "mlp_d_hidden=16", "--set", "log_every=5", "--out", str(tmp_path),
               "--quiet"]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    stats = tmp_path / "00000-mlp-digits" / "stats.jsonl"
    deadline = time.time() + 120
    while not (stats.is_file() and stats.stat().st_size > 0) and time.time() < deadline:
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-3000:]
    run = tmp_path / "00000-mlp-digits"
    assert out.strip() == str(run) and f"ganforge train --resume {run}" in err
    meta, _ = load_checkpoint(run)
    assert meta["step"] >= 5 and meta["world_size"] == 2


@pytest.mark.slow
def test_every_loss_option_trains_in_two_processes(tmp_path):
    """The DDP paths of batch norm, several D forwards per step, penalties on D's input gradient and
    DiffAugment, on a cGAN."""
    values = {"model": "cgan", "loss": "wgan-gp", "r1_gamma": 1.0, "diffaugment": "color,translation",
              "g_width": 8, "d_width": 8, "z_dim": 8, "batch_size": 32, "steps": 6, "log_every": 3, "n_samples": 10}
    torchrun(2, str(WORKER), str(tmp_path), json.dumps(values), cwd=tmp_path)
    rank0, rank1 = load_file(tmp_path / "rank0.safetensors"), load_file(tmp_path / "rank1.safetensors")
    for key in rank0:
        assert torch.equal(rank0[key], rank1[key]), key


# --- devices and precision
def test_device_and_precision_errors_say_what_to_do(tmp_path):
    if not torch.cuda.is_available():
        with pytest.raises(GanforgeError, match="no CUDA device is available here"):
            train(tiny_config(device="cuda"), runs_dir=tmp_path, progress=False)
    with pytest.raises(GanforgeError, match="fp16 needs a CUDA device"):
        train(tiny_config(device="cpu", precision="fp16"), runs_dir=tmp_path, progress=False)
    with pytest.raises(GanforgeError, match="device"):
        tiny_config(device="tpu")
    with pytest.raises(GanforgeError, match="precision"):
        tiny_config(precision="fp8")


def test_bf16_autocast_trains_on_the_cpu(tmp_path, monkeypatch):
    from ganforge.losses.non_saturating import NonSaturating

    seen = []
    original = NonSaturating.discriminator

    def discriminator(self, critic, real, fake, cond=None):  # what D's step computes in: G's forgeries, D's scores
        seen.append((fake.dtype, critic(real, cond).dtype, torch.get_autocast_dtype("cpu")))
        return original(self, critic, real, fake, cond)

    monkeypatch.setattr(NonSaturating, "discriminator", discriminator)
    run = train(tiny_config(precision="bf16", steps=10), runs_dir=tmp_path, progress=False)
    assert len(seen) == 10 and set(seen) == {(torch.bfloat16, torch.bfloat16, torch.bfloat16)}
    stats = read_stats(run).lines
    assert stats[-1]["step"] == 10 and all(torch.isfinite(torch.tensor(s["d_loss"])) for s in stats)
    _, tensors = load_checkpoint(run)
    assert tensors["G/project.weight"].dtype == torch.float32  # weights stay fp32; only the compute is bf16


def test_penalties_under_loss_scaling_survive_where_half_precision_underflows():
    """A critic in float16 whose input gradient passes through 2^-26, below float16's smallest number: taken
    unscaled it underflows to 0 (and the penalties are wrong); under a loss scale of 2^12 both penalties equal
    the float32 ones."""
    w = torch.randn(48, generator=torch.Generator().manual_seed(0))

    def critic(dtype):
        return lambda x: ((x.to(dtype) * 2.0**26).flatten(1) @ w.to(dtype)) * 2.0**-26

    real, fake = 1e-5 * torch.randn(8, 3, 4, 4), 1e-5 * torch.randn(8, 3, 4, 4)

    def gp(dtype, scale=1.0):
        return gradient_penalty(critic(dtype), real, fake, generator=torch.Generator().manual_seed(0), scale=scale)

    def r1(dtype, scale=1.0):
        x = real.clone().requires_grad_(True)
        return r1_penalty(critic(dtype)(x), x, scale=scale)

    torch.testing.assert_close(gp(torch.float32), (w.norm() - 1).square())  # the gradient is w everywhere
    torch.testing.assert_close(r1(torch.float32), w.square().sum())
    assert gp(torch.float16) == 1.0 and r1(torch.float16) == 0.0  # unscaled: the gradient underflowed to 0
    torch.testing.assert_close(gp(torch.float16, 2.0**12), gp(torch.float32), rtol=1e-3, atol=0)
    torch.testing.assert_close(r1(torch.float16, 2.0**12), r1(torch.float32), rtol=1e-3, atol=0)


def test_compile_falls_back_with_a_warning_when_no_compiler_is_found(tmp_path, monkeypatch, capsys):
    from ganforge import distributed
    monkeypatch.setattr(distributed.shutil, "which", lambda name: None)
    run = train(tiny_config(compile=True, steps=2), runs_dir=tmp_path, progress=False)
    assert "warning: --compile: no C++ compiler" in capsys.readouterr().err
    assert load_checkpoint(run)[0]["step"] == 2


@pytest.mark.slow
def test_compiled_training_matches_eager_training(tmp_path):
    """torch.compile (inductor's C++ backend on the CPU) computes the same steps, to float tolerance."""
    from torch._dynamo.eval_frame import OptimizedModule
    from torch._dynamo.utils import counters

    from ganforge.distributed import compiler_missing

    if why := compiler_missing(torch.device("cpu")):
        skip_or_fail(why)
    values = NO_BATCH_COUPLING | {"batch_size": 32, "steps": 4}
    eager = train_run(TrainConfig(**values).validate(), runs_dir=tmp_path, progress=False)
    counters.clear()
    compiled = train_run(TrainConfig(**values, compile=True).validate(), runs_dir=tmp_path, progress=False)
    assert isinstance(compiled.G_train, OptimizedModule) and not isinstance(eager.G_train, OptimizedModule)
    assert counters["stats"]["unique_graphs"] >= 1  # dynamo captured graphs, which inductor compiled
    for name, tensor in eager.G.state_dict().items():
        torch.testing.assert_close(compiled.G.state_dict()[name], tensor, rtol=1e-3, atol=1e-4)


def test_resume_may_change_the_device_settings_but_not_the_model(tmp_path, capsys):
    run = train(tiny_config(steps=2), runs_dir=tmp_path, progress=False)
    assert main(["train", "--resume", str(run), "--steps", "4", "--precision", "bf16", "--quiet"]) == 0
    meta, _ = load_checkpoint(run)
    assert meta["step"] == 4 and meta["config"]["precision"] == "bf16"
    assert main(["train", "--resume", str(run), "--steps", "6", "--model", "mlp"]) == 2
    assert "--device, --precision, --compile, --nproc" in capsys.readouterr().err


# --- GPUs: run on a machine with CUDA (skipped elsewhere; no CI machine here has one)
@gpu
@pytest.mark.parametrize("precision, dtype", [("fp32", torch.float32), ("bf16", torch.bfloat16),
                                              ("fp16", torch.float16)])
def test_gpu_trains_in_the_precision_asked_for_and_resumes_bit_exact(tmp_path, monkeypatch, precision, dtype):
    """D's step computes in the precision asked for, on the GPU; a run stopped at step 3 and resumed to 6 ends with
    the weights, optimiser and loss scaler of a straight run of 6 (cuDNN's deterministic algorithms on)."""
    from ganforge.losses.non_saturating import NonSaturating

    monkeypatch.setattr(torch.backends.cudnn, "deterministic", True)
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)
    seen = []
    original = NonSaturating.discriminator

    def discriminator(self, critic, real, fake, cond=None):
        seen.append((real.device.type, critic(real, cond).dtype))
        return original(self, critic, real, fake, cond)

    monkeypatch.setattr(NonSaturating, "discriminator", discriminator)
    settings = {"device": "cuda", "precision": precision}
    straight = train(tiny_config(**settings, steps=6), runs_dir=tmp_path / "straight", progress=False)
    assert set(seen) == {("cuda", dtype)}, seen
    stopped = train(tiny_config(**settings, steps=3), runs_dir=tmp_path / "stopped", progress=False)
    train(resume=stopped, budget={"steps": 6}, progress=False)
    (meta_a, a), (meta_b, b) = load_checkpoint(straight), load_checkpoint(stopped)
    assert meta_b["step"] == 6 and a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    if precision == "fp16":  # the scaler's state goes on where it stopped
        assert meta_a["scaler_d"] == meta_b["scaler_d"] and meta_a["scaler_g"] == meta_b["scaler_g"]


@gpu
def test_gpu_and_cpu_follow_the_same_loss_trajectory_without_tf32(tmp_path, monkeypatch):
    """fp32 on the GPU with TF32 off follows the CPU's losses over 20 steps within float rounding's drift; with
    TF32 on, matrix products round to 10 bits and the runs may part, so the comparison turns it off."""
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    losses = {}
    for device in ("cpu", "cuda"):
        run = train(tiny_config(device=device, precision="fp32", steps=20, log_every=1, ema_decay=None),
                    runs_dir=tmp_path / device, progress=False)
        lines = [line for line in read_stats(run).lines if "d_loss" in line]
        losses[device] = torch.tensor([[line["d_loss"], line["g_loss"]] for line in lines])
    assert losses["cpu"].shape == losses["cuda"].shape == (20, 2)
    torch.testing.assert_close(losses["cuda"], losses["cpu"], rtol=2e-3, atol=2e-3)
    assert (losses["cpu"][1:] != losses["cpu"][:-1]).any()  # the losses moved: the comparison compares training
