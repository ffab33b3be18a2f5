"""ganforge export: ONNX graphs that give torch's images at any batch size, and model folders that load as the run."""

import dataclasses
import json
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import make_shapes_folder, skip_or_fail, tiny_config
from PIL import Image

import ganforge
from ganforge.checkpoint import find_checkpoint, is_model_folder
from ganforge.cli import main
from ganforge.config import TrainConfig, settle
from ganforge.data import load_data, to_uint8
from ganforge.errors import GanforgeError
from ganforge.export import TOLERANCE, export, train_command
from ganforge.runfolder import RunFolder
from ganforge.sampling import noise

README = Path(__file__).resolve().parents[1] / "README.md"
SNIPPET_MARK = "<!-- tests/test_export.py runs the next code block without torch -->"


def need_onnx():
    try:
        import onnx  # noqa: F401
        import onnxruntime
        import onnxscript  # noqa: F401
    except ImportError as e:
        skip_or_fail(f"ONNX export needs onnx, onnxruntime and onnxscript ({e}); pip install 'ganforge[export]'")
    return onnxruntime


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two-step runs of the smallest models of every family: mlp, dcgan, cgan, light on the digits, StackGAN's Stage-I and
    Stage-II on 16 captioned shapes."""
    out = tmp_path_factory.mktemp("runs")
    found = {model: ganforge.train(tiny_config(model=model, z_dim=8, steps=2, mlp_g_hidden=16, mlp_d_hidden=16),
                                   runs_dir=out, progress=False) for model in ("mlp", "dcgan", "cgan")}
    found["light"] = ganforge.train(tiny_config(model="light", image_size=32, g_width=4, d_width=4, z_dim=8, steps=2),
                                    runs_dir=out, progress=False)
    shapes = make_shapes_folder(tmp_path_factory.mktemp("shapes"), 16)
    text = TrainConfig(model="stackgan1", data=f"captions:{shapes}", image_size=32, g_width=8, d_width=8, z_dim=8,
                       c_dim=8, text_dim=16, text_pretrain_steps=5, batch_size=16, log_every=2, n_samples=16, steps=2)
    found["stackgan1"] = ganforge.train(text.validate(), runs_dir=out, progress=False)
    stage2 = dataclasses.replace(text, model="stackgan2", stage1=str(found["stackgan1"]), image_size=None)
    found["stackgan2"] = ganforge.train(stage2.validate(), runs_dir=out, progress=False)
    return found


EXPORTED: dict[str, Path] = {}  # model -> its ONNX file, for the tests after the first


def onnx_of(runs, model: str, folder: Path) -> Path:
    if model not in EXPORTED:
        EXPORTED[model] = export(runs[model], "onnx", folder / f"{model}.onnx")
    return EXPORTED[model]


# --- ONNX
@pytest.mark.parametrize("model", ["mlp", "dcgan", "cgan", "light", "stackgan1", "stackgan2"])
def test_onnx_gives_torchs_images_at_any_batch_size(runs, model, tmp_path, capfd):
    ort = need_onnx()
    out = tmp_path / "g.onnx"
    assert main(["export", str(runs[model]), "--format", "onnx", "--out", str(out)]) == 0
    printed = capfd.readouterr()
    assert printed.out == f"{out}\n" and printed.err == ""  # the exporter's chatter stays off the console
    EXPORTED[model] = out
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    meta = session.get_modelmeta().custom_metadata_map
    ckpt = json.loads(find_checkpoint(runs[model]).read_text())
    assert meta["model"] == model and meta["ganforge_version"] == ganforge.__version__
    assert meta["checkpoint_sha256"] == ckpt["sha256"] and meta["generator"] == "G_ema"
    assert meta["step"] == "2" and "standard normal" in meta["noise"] and "ganforge.sampling.noise" in meta["noise"]
    g, text = ganforge.load(runs[model]), model.startswith("stackgan")
    for n, seed in ((1, 7), (13, 8)):  # neither is a size the export was traced or checked at
        if text:
            embedded = g.encoder.encode(["a red disc"]).repeat(n, 1)
            feed = {"noise": noise(n, g.noise_dim, seed).numpy(), "text": embedded.numpy()}
            coarse, fine = g(["a red disc"], n, seed)  # what `ganforge t2i` draws for that caption
            expected = [coarse] if fine is None else [fine, coarse]  # "image", then Stage-II's "stage1"
            other = [x for x in g(["a red disc"], n, seed + 1) if x is not None][-1]
        else:
            feed = {"z": noise(n, g.z_dim, seed).numpy()}
            if model == "cgan":
                feed["label"] = (torch.arange(n) % 10).numpy()
            expected, other = [g.sample(n, seed)], g.sample(n, seed + 1)  # every class in turn, for the cgan
        got = session.run(None, feed)
        # two steps from the start, G's images are about 1e-3 in size: differences are measured against that
        scale = [want.abs().max().item() for want in expected]
        assert [image.shape for image in got] == [tuple(want.shape) for want in expected]
        for image, want, size in zip(got, expected, scale):
            assert np.abs(image - want.numpy()).max() <= TOLERANCE * size
        assert np.abs(got[0] - other.numpy()).max() > 0.1 * scale[0]  # another seed, other images: the check can fail
    inputs = {i.name: (i.type, i.shape) for i in session.get_inputs()}
    outputs = [(o.name, o.shape[0]) for o in session.get_outputs()]
    if text:
        width = 16 + 8 * (model == "stackgan2")  # z and Stage-I's eps, and Stage-II's eps
        assert meta["noise_dim"] == str(width) and meta["text_dim"] == "16" and meta["text_encoder"] == "builtin"
        assert inputs == {"noise": ("tensor(float)", ["batch", width]), "text": ("tensor(float)", ["batch", 16])}
        size = "64" if model == "stackgan2" else "32"
        assert (meta["image_size"], meta["channels"], meta["classes"]) == (size, "3", "[]")
        assert outputs == [("image", "batch")] + ([("stage1", "batch")] if model == "stackgan2" else [])
    else:
        size = "32" if model == "light" else "28"
        assert meta["z_dim"] == "8" and (meta["image_size"], meta["channels"]) == (size, "1")
        assert json.loads(meta["classes"]) == ([str(i) for i in range(10)] if model == "cgan" else [])
        assert inputs["z"] == ("tensor(float)", ["batch", 8])
        assert inputs.get("label") == (("tensor(int64)", ["batch"]) if model == "cgan" else None)
        assert outputs == [("image", "batch")]


def test_an_export_that_differs_from_torch_is_refused_and_nothing_written(runs, tmp_path, monkeypatch, capsys):
    need_onnx()
    import ganforge.export

    monkeypatch.setattr(ganforge.export, "parity", lambda *args: 0.01)
    out = tmp_path / "g.onnx"
    assert main(["export", str(runs["dcgan"]), "--format", "onnx", "--out", str(out)]) == 2
    assert "ganforge export: error: the ONNX export differs from torch by 0.01" in capsys.readouterr().err
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_the_readme_snippet_draws_with_onnxruntime_and_numpy_alone(runs, tmp_path):
    """The README's snippet, as written there, in a process where `import torch` fails."""
    need_onnx()
    text = README.read_text()
    code = re.search(r"```python\n(.*?)```", text[text.index(SNIPPET_MARK):], re.DOTALL).group(1)
    assert len(code.strip().splitlines()) <= 10
    (tmp_path / "g.onnx").write_bytes(onnx_of(runs, "dcgan", tmp_path).read_bytes())
    check = "\nnp.save('z.npy', z)\nnp.save('images.npy', images)\n"
    done = subprocess.run([sys.executable, "-c", 'import sys; sys.modules["torch"] = None\n' + code + check],
                          check=False, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    z, images = (torch.from_numpy(np.load(tmp_path / f"{name}.npy")) for name in ("z", "images"))
    g = ganforge.load(runs["dcgan"])
    expected = g(z)  # torch's images of the same z (about 1e-3 in size, two steps from the start)
    assert z.shape == (16, 8) and (expected - images).abs().max() <= TOLERANCE * expected.abs().max()
    written = sorted(p for p in tmp_path.glob("*.png"))
    assert len(written) == 1
    row = np.asarray(Image.open(written[0]))
    assert row.shape == (28, 16 * 28) and np.array_equal(row, np.hstack(to_uint8(images)[:, 0].numpy()))


def test_without_onnx_the_error_says_what_to_install(runs, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    assert main(["export", str(runs["dcgan"]), "--format", "onnx", "--out", str(tmp_path / "g.onnx")]) == 2
    assert "pip install 'ganforge[export]'" in capsys.readouterr().err and not (tmp_path / "g.onnx").exists()


# --- the model folder
def test_a_model_folder_draws_what_the_run_draws(runs, tmp_path, monkeypatch, capsys):
    out = tmp_path / "dcgan-digits"
    assert main(["export", str(runs["dcgan"]), "--format", "folder", "--out", str(out)]) == 0
    assert capsys.readouterr().out == f"{out}\n"
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "config.json", "model.safetensors", "samples.png"]
    config = json.loads((out / "config.json").read_text())
    ckpt = json.loads(find_checkpoint(runs["dcgan"]).read_text())
    assert config["format"] == "ganforge-model" and config["tensors"] == "model.safetensors"
    assert config["source_sha256"] == ckpt["sha256"] and config["generator"] == "G_ema" and config["step"] == 2
    assert config["model_spec"] == ckpt["model_spec"] and config["config"] == ckpt["config"]
    from safetensors.torch import load_file
    assert {k.split("/")[0] for k in load_file(out / "model.safetensors")} == {"G_ema"}  # no D, optimizer, RNG
    assert find_checkpoint(out) == out / "config.json" and is_model_folder(out) and not is_model_folder(runs["dcgan"])
    assert torch.equal(ganforge.load(out).sample(4, seed=0), ganforge.load(runs["dcgan"]).sample(4, seed=0))
    assert main(["sample", str(out), "--n", "4", "--out", str(tmp_path / "x.png")]) == 0
    assert Image.open(tmp_path / "x.png").size == (62, 62)  # 2 x 2 images of 28 pixels, 2-pixel gaps
    assert Image.open(out / "samples.png").size == (8 * 30 + 2,) * 2  # the card's 64 samples
    card = (out / "README.md").read_text()
    assert "![samples](samples.png)" in card and "None were measured" in card and "ganforge eval dcgan-digits" in card
    assert "ganforge sample dcgan-digits" in card and "ganforge.load(\"dcgan-digits\")" in card
    with pytest.raises(GanforgeError, match="holds no G "):  # it keeps the EMA alone
        ganforge.load(out, ema=False)
    capsys.readouterr()
    assert main(["train", "--resume", str(out)]) == 2 and "cannot be resumed" in capsys.readouterr().err
    # the card's command trains this very config, through the command line
    command = re.search(r"```bash\n(ganforge train .*?)\n```", card).group(1)
    trained = []

    def train(cfg, **kwargs):
        trained.append(cfg)
        return Path("run")

    monkeypatch.setattr("ganforge.training.train", train)
    assert main(shlex.split(command)[1:]) == 0
    # as the run did, it leaves the data's defaults to the data, which settles them as before
    assert settle(trained[0], load_data("digits"))[0].to_dict() == ckpt["config"] | {"steps": 2}
    assert "image_size" not in command and "channels" not in command
    # an earlier export may be replaced; with --no-ema it keeps G
    assert main(["export", str(runs["dcgan"]), "--format", "folder", "--out", str(out), "--no-ema"]) == 0
    assert json.loads((out / "config.json").read_text())["generator"] == "G"
    assert torch.equal(ganforge.load(out).sample(4, seed=0), ganforge.load(runs["dcgan"], ema=False).sample(4, seed=0))


def test_a_text_to_image_model_folder_carries_its_text_encoder(runs, tmp_path):
    out = export(runs["stackgan1"], "folder", tmp_path / "shapes")
    from safetensors.torch import load_file
    # the encoder whole, as the checkpoint has it (its image side is small, and the JSON names it)
    assert {k.split("/")[0] for k in load_file(out / "model.safetensors")} == {"G_ema", "text", "text_image"}
    run, folder = ganforge.load(runs["stackgan1"]), ganforge.load(out)
    assert torch.equal(run(["a red disc"], 4, 0)[0], folder(["a red disc"], 4, 0)[0])
    card = (out / "README.md").read_text()
    assert "ganforge t2i shapes" in card and "a red square" in card and "benchmarks/text_to_image.py" in card


def test_the_card_shows_the_runs_measurements(runs, tmp_path):
    run = shutil.copytree(runs["mlp"], tmp_path / "run")
    measured = {"step": 2, "epoch": 0.05, "images_seen": 512, "seconds": 1.0, "extractor": "classifier:digits",
                "n_fake": 2000, "fid": 123.4567, "kid": 0.25, "precision": 0.5, "recall": 0.125, "density": 0.75,
                "coverage": 0.0625}
    with open(run / "stats.jsonl", "a") as f:
        f.write(json.dumps(measured) + "\n")
    out = export(run, "folder", tmp_path / "mlp")
    card = (out / "README.md").read_text()
    assert "| 2 | 512 | classifier:digits | 2000 | 123.4567 | 0.2500 | 0.5000 | 0.1250 | 0.7500 | 0.0625 |" in card
    assert "None were measured" not in card
    assert json.loads((out / "config.json").read_text())["evals"] == [measured]
    again = export(out, "folder", tmp_path / "again")  # from the folder itself: the measurements travel with it
    assert "123.4567" in (again / "README.md").read_text()


def test_export_eval_measures_for_the_card_as_ganforge_eval_does(runs, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("ganforge.metrics.evaluate.default_extractor", lambda data, spec: "pixels")  # no classifier
    out = tmp_path / "measured"
    assert main(["export", str(runs["mlp"]), "--format", "folder", "--out", str(out), "--eval", "100"]) == 0
    card = (out / "README.md").read_text()
    evals = json.loads((out / "config.json").read_text())["evals"]
    assert len(evals) == 1 and evals[0]["at_export"] and evals[0]["extractor"] == "pixels"
    assert "Measured at export" in card and f"| 2 | {evals[0]['images_seen']} | pixels | 100 | {evals[0]['fid']:.4f} |" in card
    capsys.readouterr()
    assert main(["export", str(runs["mlp"]), "--format", "onnx", "--out", str(tmp_path / "g.onnx"), "--eval", "9"]) == 2
    assert "an ONNX export has none" in capsys.readouterr().err


def test_eval_and_the_studio_take_a_model_folder(runs, tmp_path, capsys):
    out = export(runs["mlp"], "folder", tmp_path / "mlp")
    assert main(["eval", str(out), "--n", "100", "--extractor", "pixels"]) == 0  # against the run's data, digits
    assert "fid" in capsys.readouterr().out.lower()
    try:
        from ganforge.studio.app import discover
    except ImportError as e:
        skip_or_fail(f"the studio needs FastAPI ({e}); pip install 'ganforge[studio]'")
    assert RunFolder(runs["mlp"]).is_run() and not RunFolder(out).is_run()
    assert discover([out]) == ([("mlp", out / "config.json")], [])  # a model, named by its folder; no run to watch


# --- the card's command, and refusals
def test_the_train_command_leaves_out_what_the_other_keys_imply():
    cfg = TrainConfig(loss="wgan-gp", spectral_norm=False, g_width=8, batch_size=64, minutes=3.0).validate()
    command, inexact = train_command(cfg.to_dict(), 120)
    assert inexact == [] and command == ("ganforge train --model dcgan --data digits --steps 120 --seed 0 "
                                         "--set loss=wgan-gp --set batch_size=64 --set g_width=8")
    assert cfg.n_critic == 5 and cfg.d_norm == "layer"  # the loss's, so not in the command


def test_refusals_name_what_is_wrong_and_write_nothing(runs, tmp_path, capsys):
    untrained = tmp_path / "00009-dcgan-digits"  # a run stopped before its first checkpoint
    untrained.mkdir()
    (untrained / "config.json").write_text(json.dumps(tiny_config().to_dict()))
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "notes.txt").write_text("mine")
    for argv, message in [
        ([str(untrained), "--format", "folder", "--out", str(tmp_path / "a")], "no checkpoint found"),
        ([str(untrained), "--format", "onnx", "--out", str(tmp_path / "a.onnx")], "no checkpoint found"),
        ([str(runs["dcgan"]), "--format", "onnx", "--out", str(tmp_path / "g.png")], "a file ending in .onnx"),
        ([str(runs["dcgan"]), "--format", "onnx", "--out", str(taken)], "a file ending in .onnx"),
        ([str(runs["dcgan"]), "--format", "folder", "--out", str(taken)], "not empty and not an earlier export"),
        ([str(runs["dcgan"]), "--format", "folder", "--out", str(taken / "notes.txt")], "is not a folder"),
    ]:
        assert main(["export", *argv]) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("ganforge export: error: ") and re.search(message, err), err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["00009-dcgan-digits", "taken"]
    assert [p.name for p in taken.iterdir()] == ["notes.txt"]
    with pytest.raises(SystemExit) as exit_:
        main(["export", str(runs["dcgan"]), "--format", "tflite", "--out", str(tmp_path / "g")])
    assert exit_.value.code == 2 and "ganforge export: error: argument --format: invalid choice" in capsys.readouterr().err
    with pytest.raises(GanforgeError, match="unknown export format 'tflite'"):
        export(runs["dcgan"], "tflite", tmp_path / "g")
