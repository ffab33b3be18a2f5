import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import tiny_config
from PIL import Image

from ganforge import train
from ganforge.checkpoint import find_checkpoint, load_checkpoint
from ganforge.cli import main

TINY = ["--set", "g_width=8", "--set", "d_width=8", "--set", "z_dim=16", "--set", "batch_size=256",
        "--set", "log_every=5", "--set", "n_samples=16", "--set", "g_depth=0", "--set", "d_depth=0", "--quiet"]


def run_cli(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_train_then_sample_png_and_npy(tmp_path, capsys):
    code, out, _ = run_cli(capsys, "train", "--steps", "6", "--out", str(tmp_path), *TINY)
    assert code == 0
    run = tmp_path / "00000-dcgan-digits"
    assert out.strip() == str(run)
    code, out, _ = run_cli(capsys, "sample", str(run), "--n", "10", "--seed", "3", "--out", str(tmp_path / "s.npy"))
    assert code == 0
    arr = np.load(tmp_path / "s.npy")
    assert arr.shape == (10, 28, 28) and arr.dtype == np.uint8
    code, _, _ = run_cli(capsys, "sample", str(run), "--n", "10", "--seed", "3", "--out", str(tmp_path / "s.png"))
    assert code == 0
    with Image.open(tmp_path / "s.png") as grid:
        assert grid.size == (4 * 30 + 2, 3 * 30 + 2)  # 4 per row, 28 pixels + 2 padding each
    run_cli(capsys, "sample", str(run), "--n", "10", "--seed", "3", "--out", str(tmp_path / "t.npy"))
    assert np.array_equal(arr, np.load(tmp_path / "t.npy"))  # same seed, same images


def test_three_channel_npy(tmp_path, capsys):
    run = train(tiny_config(steps=2, image_size=32, channels=3), runs_dir=tmp_path, progress=False)
    code, _, _ = run_cli(capsys, "sample", str(run), "--n", "5", "--out", str(tmp_path / "c.npy"))
    assert code == 0 and np.load(tmp_path / "c.npy").shape == (5, 32, 32, 3)


@pytest.mark.parametrize("argv,message", [
    (["train", "--set", "nonsense=1"], "unknown key 'nonsense'"),
    (["train", "--set", "batch_size=many"], "batch_size='many': expected int"),
    (["train", "--set", "lr_g=-1"], "lr_g=-1.0: must be positive"),
    (["train", "--set", "loss=wasserstein"], "loss='wasserstein': unknown loss"),
    (["train", "--set", "batch_size"], "expected key=value"),
    (["train", "--data", "cifar"], "data='cifar': unknown data"),
    (["train", "--data", "folder:/no/such/folder", "--steps", "1"], "no such folder"),
    (["train", "--data", "mnist", "--data-dir", "/no/such", "--steps", "1"], "Looked in"),
    (["train", "--preset", "huge"], "unknown preset"),
    (["sample", "/no/such/run", "--out", "x.png"], "no such checkpoint"),
    (["sample", "model.pkl", "--out", "x.png"], "never unpickles"),
])
def test_bad_input_is_a_clear_error(capsys, tmp_path, argv, message):
    code, _, err = run_cli(capsys, *argv, *(["--out", str(tmp_path)] if argv[0] == "train" else []))
    assert code == 2
    assert message in err and "Traceback" not in err


@pytest.mark.parametrize("argv", [["train", "--steps", "0"], ["train", "--steps", "3", "--minutes", "1"],
                                  ["train", "--model", "vae"], ["sample"]])
def test_argparse_rejects_bad_flags(capsys, argv):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert "error" in capsys.readouterr().err


def test_sample_output_must_be_png_or_npy(tmp_path, capsys):
    run = train(tiny_config(steps=1), runs_dir=tmp_path, progress=False)
    code, _, err = run_cli(capsys, "sample", str(run), "--out", str(tmp_path / "x.jpg"))
    assert code == 2 and ".png" in err


def test_resume_keeps_the_run_config(tmp_path, capsys):
    run = train(tiny_config(steps=3), runs_dir=tmp_path, progress=False)
    code, _, err = run_cli(capsys, "train", "--resume", str(run), "--model", "mlp")
    assert code == 2 and "--model" in err
    code, out, _ = run_cli(capsys, "train", "--resume", str(run), "--steps", "6", "--quiet")
    assert code == 0 and out.strip() == str(run)
    assert find_checkpoint(run).name == "step-00000006.json"
    code, _, err = run_cli(capsys, "train", "--resume", str(run), "--quiet")
    assert code == 0 and "already trained to step 6" in err


def test_ctrl_c_saves_and_resume_continues(tmp_path):
    """SIGINT in the middle of training: a checkpoint, the resume command, exit status 0."""
    cmd = [sys.executable, "-m", "ganforge", "train", "--steps", "100000", "--out", str(tmp_path), *TINY]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    stats = tmp_path / "00000-dcgan-digits" / "stats.jsonl"
    deadline = time.time() + 120
    while not (stats.is_file() and stats.stat().st_size > 0) and time.time() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    run = tmp_path / "00000-dcgan-digits"
    assert out.strip() == str(run)
    assert f"ganforge train --resume {run}" in err
    meta, _ = load_checkpoint(run)
    assert meta["step"] >= 5
    resumed = train(resume=run, budget={"steps": meta["step"] + 3}, progress=False)
    assert load_checkpoint(resumed)[0]["step"] == meta["step"] + 3
