import json
import shutil

import pytest
import torch
from conftest import skip_or_fail, tiny_config

from ganforge import load, train
from ganforge.checkpoint import find_checkpoint, load_checkpoint, save_checkpoint
from ganforge.data import load_data
from ganforge.errors import GanforgeError
from ganforge.runfolder import RunFolder
from ganforge.state import TrainState
from ganforge.stats import read_stats


def _weights(run_dir):
    _, tensors = load_checkpoint(run_dir)
    return {k: v for k, v in tensors.items() if k.startswith(("G/", "G_ema/", "D/", "opt_"))}


def test_run_folder_holds_everything(tmp_path):
    run = train(tiny_config(steps=50), runs_dir=tmp_path, progress=False)  # 39 steps an epoch: one epoch end
    assert run.name == "00000-dcgan-digits"
    config = json.loads((run / "config.json").read_text())
    assert config["steps"] == 50 and config["model_spec"]["image_size"] == 28
    stats = read_stats(run).lines
    assert [s["step"] for s in stats] == list(range(5, 51, 5))
    for key in ("epoch", "images_seen", "d_loss", "g_loss", "d_real", "d_fake", "seconds"):
        assert all(key in s for s in stats)
    assert stats[-1]["images_seen"] == 50 * 256
    assert all(0 <= s["d_real"] <= 1 and 0 <= s["d_fake"] <= 1 for s in stats)
    panels = sorted(p.name for p in (run / "samples").iterdir())
    assert panels == ["epoch_0000.png", "epoch_0001.png", "epoch_0002.png"]  # start, epoch 1, partway into 2
    for name in ("progress.png", "curves.png"):
        assert (run / name).stat().st_size > 5000
    assert find_checkpoint(run).name == "step-00000050.json"
    folder = RunFolder(run)  # the one place the names above live
    assert folder.is_run() and folder.config() == config and folder.stats().lines == stats
    assert [p.name for p in folder.panels()] == panels and folder.panel_path(2).is_file()
    assert folder.checkpoint_files()[-1] == find_checkpoint(run) and folder.curves_path.is_file()
    assert not RunFolder(tmp_path).is_run()
    assert train(tiny_config(steps=5), runs_dir=tmp_path, progress=False).name == "00001-dcgan-digits"


# the MLP; and a conditional GAN with every stabiliser that draws random numbers or keeps state
RESUME_CASES = {"dcgan": {}, "mlp": {"mlp_g_hidden": 32, "mlp_d_hidden": 16, "mlp_d_pieces": 2},
                "cgan": {"loss": "wgan-gp", "n_critic": 3, "r1_gamma": 1.0, "spectral_norm": True,
                         "diffaugment": "color,translation,cutout"}}


@pytest.mark.parametrize("model", RESUME_CASES)
def test_resume_is_bit_exact(tmp_path, model):
    """40 steps straight == 20 steps, stop (inside an epoch), resume to 40 (across an epoch end);
    G, its EMA, D and both optimizers."""
    extra = RESUME_CASES[model]
    straight = train(tiny_config(model=model, steps=40, **extra), runs_dir=tmp_path / "a", progress=False)
    half = train(tiny_config(model=model, steps=20, **extra), runs_dir=tmp_path / "b", progress=False)
    meta, _ = load_checkpoint(half)
    assert meta["batch_in_epoch"] == 20 and meta["epoch"] == 0  # stopped inside the first epoch
    resumed = train(resume=half, budget={"steps": 40}, progress=False)
    a, b = _weights(straight), _weights(resumed)
    assert a.keys() == b.keys() and len(a) > 10 and any(k.startswith("G_ema/") for k in a)
    for key in a:
        assert torch.equal(a[key], b[key]), key
    lines = read_stats(resumed).lines
    assert [s["step"] for s in lines if "event" not in s] == list(range(5, 41, 5))  # no duplicates after the resume
    assert [s for s in lines if "event" in s] == [{"step": 20, "event": "resume", "changed": {"steps": [20, 40]}}]


def test_resume_differs_without_the_rng_state(tmp_path):
    """The check above can fail: a resume that drops the noise RNG gives other weights."""
    straight = train(tiny_config(steps=30), runs_dir=tmp_path / "a", progress=False)
    half = train(tiny_config(steps=15), runs_dir=tmp_path / "b", progress=False)
    meta, tensors = load_checkpoint(half)
    tensors["rng/noise"] = torch.Generator().manual_seed(123).get_state()
    save_checkpoint(half / "checkpoints", meta["step"], tensors,
                    {k: v for k, v in meta.items() if k not in ("format", "format_version", "ganforge_version",
                                                                "step", "tensors", "sha256")})
    resumed = train(resume=half, budget={"steps": 30}, progress=False)
    assert not torch.equal(_weights(straight)["G/project.weight"], _weights(resumed)["G/project.weight"])


def test_same_seed_same_weights_other_seed_other_weights(tmp_path):
    a = _weights(train(tiny_config(steps=6), runs_dir=tmp_path, progress=False))
    b = _weights(train(tiny_config(steps=6), runs_dir=tmp_path, progress=False))
    c = _weights(train(tiny_config(steps=6, seed=1), runs_dir=tmp_path, progress=False))
    assert torch.equal(a["G/project.weight"], b["G/project.weight"])
    assert not torch.equal(a["G/project.weight"], c["G/project.weight"])


def test_checkpoint_round_trip_rebuilds_g(tmp_path):
    run = train(tiny_config(steps=5, image_size=32, channels=3), runs_dir=tmp_path, progress=False)
    G = load(run)
    meta = G.meta
    assert meta["step"] == 5 and meta["model_spec"]["channels"] == 3
    x = G.sample(4, seed=3)
    assert x.shape == (4, 3, 32, 32)
    assert torch.equal(x, G.sample(4, seed=3)) and not torch.equal(x, G.sample(4, seed=4))


def test_damaged_or_foreign_checkpoints_are_refused(tmp_path):
    run = train(tiny_config(steps=5), runs_dir=tmp_path, progress=False)
    tensors_file = next((run / "checkpoints").glob("*.safetensors"))
    blob = bytearray(tensors_file.read_bytes())
    blob[-1] ^= 0xFF
    tensors_file.write_bytes(bytes(blob))
    with pytest.raises(GanforgeError, match="damaged"):
        load(run)
    pickle = tmp_path / "model.pt"
    pickle.write_bytes(b"whatever")
    with pytest.raises(GanforgeError, match="never unpickles"):
        load(pickle)


def test_wrong_shape_names_the_tensor(tmp_path):
    run = train(tiny_config(steps=5), runs_dir=tmp_path, progress=False)
    meta, _ = load_checkpoint(run)
    meta["model_spec"]["g_width"] = 4  # the file's tensors are for width 8
    path = find_checkpoint(run)
    path.write_text(json.dumps(meta))
    with pytest.raises(GanforgeError, match=r"G(_ema)?: tensor '[\w.]+' has shape .*, the model expects"):
        load(run)


def test_one_sided_label_smoothing_and_inverted_labels_train(tmp_path):
    run = train(tiny_config(steps=10, real_label=0.0, label_smoothing=0.1),
                runs_dir=tmp_path, progress=False)
    assert json.loads((run / "config.json").read_text())["fake_label"] == 1.0  # one option flips both
    stats = read_stats(run).lines
    assert stats[-1]["d_real"] < stats[-1]["d_fake"]  # D near 0 means real in this convention


def test_tensorboard_events(tmp_path):
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        skip_or_fail("tensorboard is not installed (pip install 'ganforge[tensorboard]')")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = train(tiny_config(steps=10, tensorboard=True), runs_dir=tmp_path, progress=False)
    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    assert [e.step for e in events.Scalars("d_loss")] == [5, 10]
    assert events.Tags()["images"] == ["samples"]


def test_lr_decay_falls_linearly_to_zero_over_the_budgets_end(tmp_path):
    cfg = tiny_config(steps=40, lr_decay=0.5)
    s = TrainState(cfg, tmp_path, load_data("digits"))

    def rates():
        return s.optimizers["G"].param_groups[0]["lr"] / cfg.lr_g, s.optimizers["D"].param_groups[0]["lr"] / cfg.lr_d

    for step, factor in ((0, 1.0), (20, 1.0), (30, 0.5), (40, 0.0)):
        s.step = step
        s.schedule_lr()
        assert rates() == pytest.approx((factor, factor)), step
    s.step, s.rollbacks = 30, 1  # a rollback's factor and the schedule's multiply
    s.schedule_lr()
    assert rates() == pytest.approx((0.25, 0.25))
    s = TrainState(tiny_config(steps=None, minutes=2.0, lr_decay=1.0), tmp_path, load_data("digits"))
    s.seconds = 90.0  # a budget in minutes: the share of the training time spent
    s.schedule_lr()
    assert rates() == pytest.approx((0.25, 0.25))
    with pytest.raises(GanforgeError, match="lr_decay"):
        tiny_config(lr_decay=1.5)


def test_lr_decay_resumes_exactly(tmp_path):
    """A run stopped at step 20 of 40 and resumed == the same run straight through, with the rates falling."""
    straight = train(tiny_config(steps=40, lr_decay=0.5, checkpoint_every=20, keep_checkpoints=9),
                     runs_dir=tmp_path, progress=False)
    stopped = tmp_path / "stopped"
    shutil.copytree(straight, stopped)
    for path in (stopped / "checkpoints").glob("step-*"):
        if int(path.name[5:13]) > 20:
            path.unlink()
    a, b = _weights(straight), _weights(train(resume=stopped, progress=False))
    assert a.keys() == b.keys() and all(torch.equal(a[key], b[key]) for key in a)
    meta, _ = load_checkpoint(straight)
    assert json.dumps(meta["opt_g"]).count('"lr": 0.0') == 1  # the last step's rate is 0
