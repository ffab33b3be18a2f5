"""Nothing lost: real SIGKILLs and resumes, divergence rolled back, full disks, runs killed before their
first checkpoint, and the warnings for a starved G and for mode collapse."""

import errno
import os
import random
import shutil
import subprocess
import sys
import time

import pytest
import torch
from conftest import tiny_config

from ganforge import training
from ganforge.checkpoint import load_checkpoint
from ganforge.cli import main
from ganforge.errors import GanforgeError
from ganforge.families import MODELS
from ganforge.record import Recorder, new_run_dir
from ganforge.state import TrainState
from ganforge.stats import read_stats
from ganforge.training import train, train_run

# a DCGAN of a few thousand weights, a checkpoint after every step (many kills land inside a write),
# and an epoch end every 78 steps
KILL_RUN = ["--set", "g_width=8", "--set", "d_width=8", "--set", "z_dim=16", "--set", "batch_size=128",
            "--set", "log_every=5", "--set", "n_samples=16", "--set", "checkpoint_every=1", "--set", "g_depth=0",
            "--set", "d_depth=0", "--quiet"]  # depth 0: as tiny_config


def _ganforge(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "ganforge", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})


def _saved_step(out) -> int | None:
    steps = [int(p.stem.split("-")[1]) for p in out.glob("*/checkpoints/step-*.json")] if out.is_dir() else []
    return max(steps, default=None)


def train_with_kills(out, steps: int, kills: int, seed: int, within: float = 0.4, run_args=KILL_RUN) -> tuple:
    """Train `run_args` (KILL_RUN) for `steps`, SIGKILLing the process `kills` times and resuming after each. A kill comes at a random
    moment of start-up (one in five), or at a random moment up to `within` s after the process has saved a new
    checkpoint: inside a step, a checkpoint write, a stats line, an epoch's panel. -> (run, kills, the step saved
    before each kill, and whether that kill waited for a new checkpoint)."""
    rng = random.Random(seed)
    run, killed, moments, waited = None, 0, [], []
    while True:
        before = _saved_step(out)
        proc = _ganforge("train", "--resume", str(run), "--quiet") if run else \
            _ganforge("train", "--out", str(out), "--steps", str(steps), *run_args)
        if killed < kills:
            early = rng.random() < 0.2
            if early:
                time.sleep(rng.uniform(0.2, 3.0))
            else:
                deadline = time.time() + 120
                while proc.poll() is None and _saved_step(out) in (before, None) and time.time() < deadline:
                    time.sleep(0.02)
                time.sleep(rng.uniform(0.0, within))
            if proc.poll() is None:
                proc.kill()  # SIGKILL: no handler runs, nothing is flushed
                proc.communicate()
                killed += 1
                moments.append(_saved_step(out))
                waited.append(not early)
                found = sorted(out.iterdir()) if out.is_dir() else []
                run = found[0] if found else None
                if run is not None and not (run / "config.json").is_file():  # killed while making the folder
                    shutil.rmtree(run)
                    run = None
                continue
        _, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err[-2000:]
        return run or min(out.iterdir()), killed, moments, waited


def check_kills(tmp_path, steps: int, kills: int, seed: int, within: float, run_args=KILL_RUN) -> dict:
    """A run of `run_args` killed `kills` times ends bit-exact with one never killed; -> its checkpoint's tensors."""
    reference = _ganforge("train", "--out", str(tmp_path / "reference"), "--steps", str(steps), *run_args)
    _, err = reference.communicate(timeout=600)
    assert reference.returncode == 0, err[-2000:]
    run, killed, moments, waited = train_with_kills(tmp_path / "killed", steps, kills, seed, within, run_args)
    assert killed == kills and any(waited), (moments, waited)
    # every kill that waited for a new checkpoint came while training was under way, after that checkpoint
    assert all(m is not None and (i == 0 or moments[i - 1] is None or m > moments[i - 1])
               for i, (m, w) in enumerate(zip(moments, waited)) if w), (moments, waited)
    ref_meta, ref = load_checkpoint(next((tmp_path / "reference").iterdir()))
    meta, got = load_checkpoint(run)
    assert meta["step"] == ref_meta["step"] == steps
    assert ref.keys() == got.keys()
    for key in ref:
        assert torch.equal(ref[key], got[key]), (key, moments)
    stats = [s["step"] for s in read_stats(run).lines]
    assert stats == list(range(5, steps + 1, 5))  # nothing lost, nothing twice
    return got


def test_sigkill_at_3_random_moments_then_resume_ends_bit_exact(tmp_path):
    check_kills(tmp_path, steps=150, kills=3, seed=1, within=0.4)


@pytest.mark.slow
def test_sigkill_at_20_random_moments_then_resume_ends_bit_exact(tmp_path):
    check_kills(tmp_path, steps=600, kills=20, seed=2, within=1.0)  # steps enough that the 20th kill still lands


def test_a_run_killed_before_its_first_checkpoint_resumes_from_the_start(tmp_path, capsys):
    cfg = tiny_config(steps=4)
    run = new_run_dir(tmp_path, cfg)  # the folder and its config.json, as a kill right after would leave them
    assert main(["train", "--resume", str(run), "--quiet"]) == 0
    assert "no checkpoint yet; starting the run again from step 0" in capsys.readouterr().err
    assert load_checkpoint(run)[0]["step"] == 4


# --- divergence
def _poison_at(monkeypatch, steps: set[int]):
    """Make G's weights NaN just before the given steps (counted from 1) run, as a blow-up would."""
    original = training.train_step

    def train_step(state, batch):
        if state.step + 1 in steps:
            steps.discard(state.step + 1)  # once per listed step: the replay after a rollback is clean
            with torch.no_grad():
                next(state.G.parameters()).fill_(float("nan"))
        return original(state, batch)

    monkeypatch.setattr(training, "train_step", train_step)


def test_a_nan_rolls_back_to_the_last_checkpoint_with_lower_learning_rates(tmp_path, monkeypatch, capsys):
    _poison_at(monkeypatch, {13})
    trainer = train_run(tiny_config(steps=20, checkpoint_every=5), runs_dir=tmp_path, progress=False)
    events = read_stats(trainer.run_dir).lines
    rollbacks = [e for e in events if e.get("event") == "rollback"]
    assert len(rollbacks) == 1 and rollbacks[0]["at_step"] == 13 and rollbacks[0]["step"] == 10
    assert rollbacks[0]["lr_g"] == pytest.approx(trainer.cfg.lr_g / 2) and "rolled back to step 10" in capsys.readouterr().err
    meta, tensors = load_checkpoint(trainer.run_dir)
    assert meta["step"] == 20 and meta["rollbacks"] == 1
    assert meta["opt_g"]["param_groups"][0]["lr"] == pytest.approx(trainer.cfg.lr_g / 2)  # kept on resume too
    assert all(torch.isfinite(t).all() for t in tensors.values() if t.is_floating_point())
    steps = [e["step"] for e in events if "d_loss" in e]
    assert steps == [5, 10, 15, 20]  # the lines after the checkpoint were dropped, then logged again


def test_on_a_gpu_the_finiteness_flags_stay_on_the_device_until_a_log_line_or_a_checkpoint(tmp_path, monkeypatch):
    """A GPU reads the flags only with the stats and before checkpoints (no host sync per step); the rollback
    still goes to the last good checkpoint, and no checkpoint is written after a non-finite step."""
    from types import SimpleNamespace

    from ganforge.distributed import SINGLE

    gpu = SimpleNamespace(device=torch.device("cuda"), nonfinite=None, group=SINGLE)  # the policy alone
    TrainState.watch(gpu, torch.tensor(float("nan")), torch.tensor(0.0))
    TrainState.watch(gpu, torch.tensor(1.0), torch.tensor(0.0))
    assert TrainState.diverged(gpu, read=False) is None and gpu.nonfinite is not None  # kept, not read
    assert TrainState.diverged(gpu, read=True) == "d_loss" and gpu.nonfinite is None
    cpu = SimpleNamespace(device=torch.device("cpu"), nonfinite=None, group=SINGLE)
    TrainState.watch(cpu, torch.tensor(0.0), torch.tensor(float("inf")))
    assert TrainState.diverged(cpu, read=False) == "g_loss"  # a CPU reads every step: exact

    as_on_a_gpu = TrainState.diverged
    monkeypatch.setattr(TrainState, "diverged", lambda self, read: as_on_a_gpu(self, read) if read else None)
    _poison_at(monkeypatch, {13})
    trainer = train_run(tiny_config(steps=20, checkpoint_every=5), runs_dir=tmp_path, progress=False)
    rollbacks = [e for e in read_stats(trainer.run_dir).events if e.get("event") == "rollback"]
    assert len(rollbacks) == 1 and rollbacks[0]["at_step"] == 15 and rollbacks[0]["step"] == 10
    meta, tensors = load_checkpoint(trainer.run_dir)
    assert meta["step"] == 20 and all(torch.isfinite(t).all() for t in tensors.values() if t.is_floating_point())


def test_a_run_that_keeps_diverging_stops_with_advice_and_keeps_its_last_good_checkpoint(tmp_path, monkeypatch):
    _poison_at(monkeypatch, {7, 8, 9, 10})
    with pytest.raises(GanforgeError, match="training diverged: non-finite d_loss at step .* after 2 rollback") as e:
        train(tiny_config(steps=20, checkpoint_every=5, max_rollbacks=2), runs_dir=tmp_path, progress=False)
    assert "lr_g" in str(e.value) and "spectral_norm" in str(e.value)
    meta, tensors = load_checkpoint(next(tmp_path.iterdir()))
    assert meta["step"] == 5 and all(torch.isfinite(t).all() for t in tensors.values() if t.is_floating_point())


def _recorder(tmp_path, cfg) -> Recorder:
    rec = Recorder(TrainState(cfg, new_run_dir(tmp_path, cfg), MODELS[cfg.model].load_data(cfg)))
    rec.open({})
    return rec


def test_d_winning_every_time_warns_once(tmp_path, capsys):
    rec = _recorder(tmp_path, tiny_config())

    class Bar:
        def set_postfix(self, **_):
            pass

    for _ in range(6):  # D(x) 0.999, D(G(z)) 0.001 on every line
        rec.log({"d_loss": 0.01, "g_loss": 7.0, "d_real": 0.999, "d_fake": 0.001}, 100.0, Bar())
    rec.close()
    events = rec.folder.stats().lines
    warnings = [e for e in events if e.get("event") == "warning"]
    assert len(warnings) == 1 and warnings[0]["kind"] == "d_wins"
    assert "G gets little gradient" in capsys.readouterr().err


def test_low_recall_warns_of_mode_collapse(tmp_path, monkeypatch, capsys):
    from ganforge.metrics import evaluate
    monkeypatch.setattr(evaluate, "evaluate", lambda *a, **k: {"fid": 80.0, "recall": 0.01, "extractor": "pixels"})
    rec = _recorder(tmp_path, tiny_config(eval_every=1, eval_extractor="pixels", eval_n=10))
    rec.measure()
    rec.close()
    assert "mode collapse?" in capsys.readouterr().err
    assert '"kind": "collapse"' in rec.folder.stats_path.read_text()


# --- disks
def test_a_full_disk_at_save_is_a_clear_error_and_the_last_checkpoint_stays_intact(tmp_path, monkeypatch):
    import ganforge.state as state_module
    real_save, calls = state_module.save_checkpoint, []

    def save_checkpoint(folder, step, *args, **kwargs):
        calls.append(step)
        if step == 10:
            (folder / ".step-00000010.safetensors.tmp").write_bytes(b"half")  # what a failed write leaves
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(folder, step, *args, **kwargs)

    monkeypatch.setattr(state_module, "save_checkpoint", save_checkpoint)
    with pytest.raises(GanforgeError, match="No space left on device. The last good one, step-00000005, is intact"):
        train(tiny_config(steps=20, checkpoint_every=5), runs_dir=tmp_path, progress=False)
    run = next(tmp_path.iterdir())
    assert load_checkpoint(run)[0]["step"] == 5
    assert not list((run / "checkpoints").glob(".*.tmp"))


def test_a_run_folder_that_cannot_be_made_is_a_clear_error(tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    assert main(["train", "--steps", "1", "--out", str(blocker / "runs"), "--quiet"]) == 2
    assert "cannot create a run folder" in capsys.readouterr().err
