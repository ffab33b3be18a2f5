"""Prepared data sets: decode once into memory-mapped shards, resume after a kill, refuse another set, detect damage;
LSUN's LMDB databases; caches keyed by what they were computed from."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import skip_or_fail
from PIL import Image

from ganforge.cli import main
from ganforge.data import folder as folder_module
from ganforge.data import load_data, prepare_source
from ganforge.data import prepared as prepared_module
from ganforge.data.folder import decode
from ganforge.data.prepared import ShardedImages, load_prepared, read_manifest
from ganforge.errors import GanforgeError
from ganforge.io import sha256_file
from ganforge.metrics import evaluate as evaluate_module
from ganforge.metrics.evaluate import evaluate, real_features
from ganforge.metrics.features import get_extractor
from ganforge.stats import read_stats


def make_folder(root: Path, count: int = 24, broken: bool = True, subfolders: bool = False) -> Path:
    """`count` small images of a disc whose colour and place vary with i, in a flat folder (or two class
    subfolders), plus one file that is not an image."""
    root.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        image = Image.new("RGB", (24 + i % 3 * 8, 20), (i * 10 % 256, 40, 200 - i * 5 % 200))
        image.paste((255, 255, 0), (4 + i % 7, 4, 12 + i % 7, 12))
        folder = root / (("even" if i % 2 == 0 else "odd") if subfolders else "")
        folder.mkdir(exist_ok=True)
        image.save(folder / f"{i:03d}.{'png' if i % 2 else 'jpg'}")
    if broken:
        (root / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not a png")
    return root


# ---- preparing -------------------------------------------------------------------------------------------------
def test_prepare_writes_shards_and_a_manifest_that_training_reads(tmp_path, monkeypatch):
    monkeypatch.setattr(prepared_module, "SHARD_MIN", 5)
    monkeypatch.setattr(prepared_module, "SHARD_BYTES", 1)  # 5 images per shard
    src = make_folder(tmp_path / "photos")
    out = prepare_source(f"folder:{src}", tmp_path / "prep", 16, 3, workers=1, progress=False)
    manifest = read_manifest(out)
    assert manifest["format"] == "ganforge-prepared" and manifest["format_version"] == 1
    assert manifest["count"] == 24 and manifest["shape"] == [3, 16, 16] and manifest["source"] == f"folder:{src}"
    assert manifest["ganforge_version"] and len(manifest["shards"]) == 5  # 25 files, 5 per shard, one skipped
    for shard in manifest["shards"]:
        assert sha256_file(out / shard["file"]) == shard["sha256"]
    assert manifest["skipped"]["count"] == 1 and "broken.png" in manifest["skipped"]["files"][0]
    with monkeypatch.context() as m:  # the hashes were stamped as the shards were written: not read again
        m.setattr(prepared_module, "sha256_file",
                  lambda path: pytest.fail(f"hashed {path} again") if path.suffix == ".npy" else sha256_file(path))
        data = load_data(f"prepared:{out}")
    assert isinstance(data.images, ShardedImages) and data.images.shape == (24, 3, 16, 16)
    files = sorted(p for p in src.iterdir() if p.name != "broken.png")
    for i in (0, 7, 23):  # in file order, decoded as folder.decode does
        assert torch.equal(data.images[i], torch.tensor(decode(files[i], 16, 3)))
    assert data.labels is None and data.content_sha256() == sha256_file(out / "manifest.json")
    with pytest.raises(GanforgeError, match="not image_size 32"):
        load_data(f"prepared:{out}", image_size=32)


def test_sharded_images_index_like_one_tensor():
    rng = np.random.default_rng(0)
    parts = [rng.integers(0, 256, (n, 1, 4, 4), dtype=np.uint8) for n in (3, 5, 1, 4)]
    whole, images = torch.from_numpy(np.concatenate(parts)), ShardedImages(parts)
    assert len(images) == 13 and images.shape == whole.shape and images.dim() == 4
    index = torch.tensor([12, 0, 3, 3, 8, 7, -1])
    assert torch.equal(images[index], whole[index])
    mask = torch.arange(13) % 3 == 0
    assert torch.equal(images[mask], whole[mask])
    assert torch.equal(images[2:11:2], whole[2:11:2]) and torch.equal(images[:], whole)
    assert torch.equal(images[4], whole[4]) and torch.equal(images[5, 0, 1], whole[5, 0, 1])
    assert torch.equal(images[1:3, 0], whole[1:3, 0])
    with pytest.raises(IndexError):
        images[torch.tensor([13])]


def test_folder_labels_and_captions_travel_with_the_images(tmp_path):
    src = make_folder(tmp_path / "classes", broken=False, subfolders=True)
    out = prepare_source(f"folder:{src}", tmp_path / "prep", 8, 1, workers=1, progress=False, folder_labels=True)
    data = load_prepared(out)
    assert data.classes == ["even", "odd"] and data.labels.tolist() == [0] * 12 + [1] * 12
    assert data.images.shape == (24, 1, 8, 8)
    built_in = load_prepared(prepare_source("digits", tmp_path / "digits", progress=False))
    digits = load_data("digits")
    assert torch.equal(built_in.images[:], digits.images) and torch.equal(built_in.labels, digits.labels)


def test_prepare_in_two_processes_gives_the_same_shards(tmp_path):
    src = make_folder(tmp_path / "many", count=600, broken=False)
    one = prepare_source(f"folder:{src}", tmp_path / "one", 8, 3, workers=1, progress=False)
    two = prepare_source(f"folder:{src}", tmp_path / "two", 8, 3, workers=2, progress=False)
    assert read_manifest(one)["shards"] == read_manifest(two)["shards"]


KILLABLE = """
import signal, sys, time
signal.signal(signal.SIGINT, signal.default_int_handler)  # Ctrl-C as in a terminal, even if our parent ignores it
from ganforge.data import folder, prepared
prepared.SHARD_MIN, prepared.SHARD_BYTES = 4, 1
slow = folder.decode
folder.decode = lambda *a: (time.sleep(0.2), slow(*a))[1]  # 8 s for the 40 images: time to stop it under load
from ganforge.cli import main
sys.exit(main(["prepare", "folder:" + sys.argv[1], "--image-size", "28", "--out", sys.argv[2], "--workers", "1"]))
"""


def _start_and_stop(src: Path, out: Path, sig: int) -> subprocess.CompletedProcess:
    """Start a slow preparation (4 images per shard), stop it with `sig` once two shards are written."""
    proc = subprocess.Popen([sys.executable, "-c", KILLABLE, str(src), str(out)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while len(list(out.glob("shard-*.json"))) < 2 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.02)
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=60)
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT])
def test_a_stopped_preparation_continues_where_it_stopped(tmp_path, monkeypatch, sig):
    src = make_folder(tmp_path / "photos", count=40, broken=False)
    out = tmp_path / "prep"
    stopped = _start_and_stop(src, out, sig)
    if sig == signal.SIGINT:
        assert stopped.returncode == 130 and "run the same command again to continue" in stopped.stderr
    else:
        assert stopped.returncode == -signal.SIGKILL
    assert not (out / "manifest.json").exists()  # never read as complete
    with pytest.raises(GanforgeError, match="has not finished"):
        load_data(f"prepared:{out}")
    done = len(list(out.glob("shard-*.json")))
    assert 2 <= done < 10
    calls = []
    monkeypatch.setattr(folder_module, "decode", lambda *a: calls.append(1) or decode(*a))
    monkeypatch.setattr(prepared_module, "SHARD_MIN", 4)
    monkeypatch.setattr(prepared_module, "SHARD_BYTES", 1)
    prepare_source(f"folder:{src}", out, 28, 3, workers=1, progress=False)
    assert len(calls) == 40 - 4 * done  # only the shards that were not finished
    fresh = prepare_source(f"folder:{src}", tmp_path / "fresh", 28, 3, workers=1, progress=False)
    assert read_manifest(out)["shards"] == read_manifest(fresh)["shards"]  # the same bytes as one go
    assert not list(out.glob("shard-*.json")) and not list(out.glob("*.tmp"))


def test_prepare_refuses_a_different_data_set(tmp_path):
    a, b = make_folder(tmp_path / "a", count=6), make_folder(tmp_path / "b", count=7)
    out = prepare_source(f"folder:{a}", tmp_path / "prep", 8, 3, workers=1, progress=False)
    assert prepare_source(f"folder:{a}", out, 8, 3, progress=False) == out  # the same set: nothing to do
    with pytest.raises(GanforgeError, match="holds a different prepared data set"):
        prepare_source(f"folder:{b}", out, 8, 3, progress=False)
    with pytest.raises(GanforgeError, match="holds a different prepared data set"):
        prepare_source(f"folder:{a}", out, 16, 3, progress=False)
    Image.new("RGB", (9, 9)).save(a / "new.png")
    with pytest.raises(GanforgeError, match="its files have changed since"):
        prepare_source(f"folder:{a}", out, 8, 3, progress=False)
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(GanforgeError, match="not empty and holds no prepared data set"):
        prepare_source(f"folder:{a}", tmp_path / "busy", 8, 3, progress=False)


def test_damaged_manifest_or_shard_is_a_clear_error_naming_it(tmp_path):
    out = prepare_source(f"folder:{make_folder(tmp_path / 'a', count=6)}", tmp_path / "prep", 8, 3, progress=False)
    load_prepared(out)  # verified once
    time.sleep(0.05)  # the change below gets a later modification time than the stamp's, as any edit does
    shard = out / "shard-00000.npy"
    blob = bytearray(shard.read_bytes())
    blob[-1] ^= 0xFF
    shard.write_bytes(bytes(blob))
    with pytest.raises(GanforgeError, match=r"shard-00000\.npy: damaged"):
        load_prepared(out)
    shard.write_bytes(bytes(blob[:-10]))
    with pytest.raises(GanforgeError, match=r"shard-00000\.npy: damaged"):
        load_prepared(out)
    shard.unlink()
    with pytest.raises(GanforgeError, match=r"shard-00000\.npy: missing"):
        load_prepared(out)
    (out / "manifest.json").write_text('{"format": "ganforge-prepared", "count": ')
    with pytest.raises(GanforgeError, match=r"manifest\.json: damaged"):
        load_prepared(out)
    assert main(["train", "--data", f"prepared:{out}", "--steps", "1"]) == 2  # a clear error, not a traceback


def test_the_cli_prepares_and_trains_from_the_prepared_set(tmp_path, capsys):
    src = make_folder(tmp_path / "photos", count=40)
    assert main(["prepare", f"folder:{src}", "--image-size", "28", "--out", str(tmp_path / "prep"), "--quiet"]) == 0
    out = capsys.readouterr()
    assert out.out.strip() == str(tmp_path / "prep") and "40 images of 3x28x28 (1 skipped)" in out.err
    assert main(["train", "--data", f"prepared:{tmp_path / 'prep'}", "--steps", "2", "--set", "batch_size=8",
                 "--set", "g_width=8", "--set", "d_width=8", "--out", str(tmp_path / "runs"), "--quiet"]) == 0
    assert (tmp_path / "runs" / "00000-dcgan-prepared-prep" / "samples" / "epoch_0000.png").is_file()
    assert main(["prepare", "folder:/no/such/folder"]) == 2
    assert "no such folder" in capsys.readouterr().err


def test_a_changed_folder_is_prepared_again(tmp_path):
    src = make_folder(tmp_path / "photos", count=6, broken=False)
    first = load_data(f"folder:{src}", 8, 3)
    Image.new("RGB", (8, 8), (0, 255, 0)).save(src / "000.jpg")
    again = load_data(f"folder:{src}", 8, 3)
    assert again.content_sha256() != first.content_sha256()
    assert again.images[0][1].float().mean() > 200 > first.images[0][1].float().mean()


def test_two_processes_loading_one_new_folder_share_one_preparation(tmp_path):
    src = make_folder(tmp_path / "photos", count=300, broken=False)
    code = f"from ganforge.data import load_data; print(load_data('folder:{src}', 8, 3).content_sha256())"
    env = {**os.environ, "GANFORGE_CACHE": str(tmp_path / "cache")}
    procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                              text=True) for _ in range(2)]
    outputs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), outputs
    assert outputs[0][0] == outputs[1][0]
    assert len(list((tmp_path / "cache" / "prepared").iterdir())) == 1
    assert not list((tmp_path / "cache").rglob("*.tmp"))


# ---- LSUN ------------------------------------------------------------------------------------------------------
def _lmdb():
    try:
        import lmdb
    except ImportError:
        skip_or_fail("the lmdb package is not installed (pip install 'ganforge[lsun]')")
    return lmdb


def make_lsun(path: Path, colors: list[tuple[int, int, int]], bad: int = 0) -> Path:
    """An LMDB database as LSUN distributes them: keys are 40 hex digits, values encoded images (webp and jpeg,
    alternately), each a wide image whose centre square is the colour and whose sides are black."""
    import hashlib
    import io

    lmdb = _lmdb()
    path.mkdir(parents=True)
    with lmdb.open(str(path), map_size=1 << 26) as env, env.begin(write=True) as txn:
        for i, color in enumerate(colors):
            image = Image.new("RGB", (96, 64), (0, 0, 0))
            image.paste(color, (16, 0, 80, 64))
            buffer = io.BytesIO()
            image.save(buffer, format="WEBP" if i % 2 == 0 else "JPEG", quality=95)
            txn.put(hashlib.sha1(f"{path.name}{i}".encode()).hexdigest().encode(), buffer.getvalue())
        for i in range(bad):
            txn.put(f"{'f' * 39}{i}".encode(), b"RIFF\x00\x00 not an image")
    return path


def test_lsun_lmdb_is_read_center_cropped_and_prepared(tmp_path, capsys):
    colors = [(250, 0, 0), (0, 250, 0), (0, 0, 250), (250, 250, 0), (0, 250, 250)]
    db = make_lsun(tmp_path / "bedroom_train_lmdb", colors, bad=1)
    data = load_data(f"lsun:{db}", 16, 3)
    assert data.images.shape == (5, 3, 16, 16) and data.labels is None
    assert "skipped 1 of 6 entries" in capsys.readouterr().err
    means = data.images[:].float().mean(dim=(2, 3))  # the centre square only: no black sides left
    assert {tuple(round(v / 250) for v in m.tolist()) for m in means} == {tuple(c // 250 for c in x) for x in colors}
    assert data.images[:, :, :, 2:-2].amax(dim=1).min() > 200  # every pixel coloured: the sides were cropped off
    make_lsun(tmp_path / "scenes" / "church_outdoor_train_lmdb", colors[:2])
    make_lsun(tmp_path / "scenes" / "bedroom_train_lmdb", colors[2:])
    scenes = load_data(f"lsun:{tmp_path / 'scenes'}", 16, 3)
    assert scenes.classes == ["bedroom_train", "church_outdoor_train"] and scenes.labels.tolist() == [0, 0, 0, 1, 1]
    (tmp_path / "empty").mkdir()
    with pytest.raises(GanforgeError, match="no LMDB database here"):
        load_data(f"lsun:{tmp_path / 'empty'}", 16, 3)
    (tmp_path / "junk_lmdb").mkdir()
    (tmp_path / "junk_lmdb" / "data.mdb").write_bytes(b"not a database" * 100)
    with pytest.raises(GanforgeError, match="cannot read the LMDB database"):
        load_data(f"lsun:{tmp_path / 'junk_lmdb'}", 16, 3)


# ---- caches keyed by what they were computed from ---------------------------------------------------------------
def test_real_features_follow_the_folder_and_the_extractor(tmp_path, monkeypatch, capsys):
    src = make_folder(tmp_path / "photos", count=30, broken=False)
    samples = load_data(f"folder:{src}", 16, 3).images[:10]
    calls = []
    real_extract = evaluate_module.extract
    monkeypatch.setattr(evaluate_module, "extract", lambda e, x, **k: calls.append(len(x)) or real_extract(e, x, **k))
    spec = f"folder:{src}"
    evaluate(samples, spec, "pixels", root=tmp_path)
    evaluate(samples, spec, "pixels", root=tmp_path)
    assert calls == [10, 10, 10]  # the real features once, then from the cache
    Image.new("RGB", (8, 8), (0, 255, 0)).save(src / "000.jpg")  # a changed folder: computed again
    evaluate(samples, spec, "pixels", root=tmp_path)
    assert calls[3:] == [10, 10]
    cached = sorted((tmp_path / "real_features").glob("*.safetensors"))  # each beside its JSON record
    assert len(cached) == 2
    newest = max(cached, key=lambda p: p.stat().st_mtime_ns)
    newest.write_bytes(b"\x08\x00 damaged")
    evaluate(samples, spec, "pixels", root=tmp_path)
    assert calls[5:] == [10, 10] and "damaged cache file" in capsys.readouterr().err

    class Retrained:  # the same extractor name with other weights
        name, classes, sha256 = "pixels", None, "0" * 64
        features = staticmethod(get_extractor("pixels").features)
        probs = staticmethod(lambda x: None)

    real_features(spec, Retrained(), 10, 16, 3, root=tmp_path)
    assert calls[7:] == [10] and len(list((tmp_path / "real_features").glob("*.safetensors"))) == 3


def test_resume_may_change_what_is_measured_and_logs_it(tmp_path):
    from conftest import tiny_config

    from ganforge import train

    src = make_folder(tmp_path / "photos", count=40)  # 5 steps an epoch
    run = train(tiny_config(data=f"folder:{src}", image_size=28, batch_size=8, steps=10, eval_every=1, eval_n=32,
                            eval_extractor="pixels"), runs_dir=tmp_path / "runs", progress=False)
    assert [s["step"] for s in read_stats(run).evals] == [5, 10]
    assert main(["train", "--resume", str(run), "--steps", "20", "--set", "eval_every=0", "--set", "log_every=2",
                 "--quiet"]) == 0
    stats = read_stats(run).lines
    event = next(s for s in stats if s.get("event") == "resume")
    assert event["step"] == 10 and event["changed"] == {"steps": [10, 20], "eval_every": [1, 0], "log_every": [5, 2]}
    assert stats[-1]["step"] == 20 and not any("fid" in s for s in stats if s["step"] > 10)
    assert json.loads((run / "config.json").read_text())["eval_every"] == 0
    assert main(["train", "--resume", str(run), "--steps", "21", "--set", "batch_size=4"]) == 2


# ---- a flat folder all the way: train, --eval-every, eval, compare; and in two processes ------------------------
def test_a_flat_folder_trains_measures_evaluates_and_compares(tmp_path, capsys):
    src = make_folder(tmp_path / "photos", count=40)
    common = ["--data", f"folder:{src}", "--image-size", "28", "--set", "batch_size=8", "--set", "g_width=8",
              "--set", "d_width=8", "--set", "eval_n=32", "--eval-every", "1", "--out", str(tmp_path / "runs"),
              "--quiet"]
    assert main(["train", *common, "--steps", "10"]) == 0
    assert main(["train", *common, "--steps", "5", "--seed", "1"]) == 0
    runs = sorted((tmp_path / "runs").iterdir())
    for run, steps in zip(runs, ([5, 10], [5])):
        measured = read_stats(run).evals
        assert [m["step"] for m in measured] == steps and measured[0]["extractor"] == f"ssl:folder:{src}"
    capsys.readouterr()
    assert main(["eval", str(runs[0]), "--n", "32", "--json", str(tmp_path / "eval.json")]) == 0
    result = json.loads((tmp_path / "eval.json").read_text())
    assert result["extractor"] == f"ssl:folder:{src}" and result["n_real"] == 32 and result["fid"] > 0
    assert main(["compare", *map(str, runs), "--out", str(tmp_path / "compare.png")]) == 0
    assert (tmp_path / "compare.png").stat().st_size > 1000 and runs[1].name in capsys.readouterr().out


def test_two_processes_train_from_one_prepared_folder_and_resume_as_one(tmp_path):
    src = make_folder(tmp_path / "photos", count=40)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GANFORGE_CACHE": str(tmp_path / "cache")}
    done = subprocess.run([sys.executable, "-m", "ganforge", "train", "--nproc", "2", "--data", f"folder:{src}",
                           "--image-size", "28", "--steps", "6", "--set", "batch_size=4", "--set", "g_width=8",
                           "--set", "d_width=8", "--out", str(tmp_path / "runs"), "--quiet"],
                          capture_output=True, text=True, timeout=300, env=env, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    run = Path(done.stdout.strip())
    prepared = list((tmp_path / "cache" / "prepared").iterdir())
    assert len(prepared) == 1 and (prepared[0] / "manifest.json").is_file()  # prepared once, by rank 0
    assert not list((tmp_path / "cache").rglob("*.tmp"))
    from ganforge.checkpoint import load_checkpoint
    meta, _ = load_checkpoint(run)
    assert meta["world_size"] == 2 and meta["step"] == 6 and meta["images_seen"] == 48
    done = subprocess.run([sys.executable, "-m", "ganforge", "train", "--resume", str(run), "--steps", "9", "--quiet"],
                          capture_output=True, text=True, timeout=300, env=env, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    meta, _ = load_checkpoint(run)
    assert meta["world_size"] == 1 and meta["step"] == 9


def test_camera_photos_are_turned_upright_and_decoded_at_a_reduced_scale(tmp_path):
    photo = Image.new("RGB", (1600, 1200), (0, 0, 255))
    photo.paste((255, 0, 0), (0, 0, 800, 1200))  # red on the left as stored
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to show it
    photo.save(tmp_path / "phone.jpg", quality=92, exif=exif)
    image = decode(tmp_path / "phone.jpg", 32, 3).astype(int)
    assert image[:, :8].mean(axis=(1, 2)).tolist() == pytest.approx([254, 0, 0], abs=4)  # red on top, upright
    assert image[:, -8:].mean(axis=(1, 2)).tolist() == pytest.approx([0, 0, 254], abs=4)
    plain = Image.new("RGB", (1600, 1200))
    plain.paste((200, 120, 40), (400, 300, 1200, 900))
    plain.save(tmp_path / "plain.jpg", quality=92)
    with Image.open(tmp_path / "plain.jpg") as full:  # decoded at full scale, the slow way
        full = full.convert("RGB").resize((43, 32), Image.BICUBIC).crop((5, 0, 37, 32))
    assert np.abs(decode(tmp_path / "plain.jpg", 32, 3).transpose(1, 2, 0).astype(int) - np.asarray(full)).mean() < 3


def test_a_damaged_classifier_is_reported_and_trained_again(tmp_path, monkeypatch, capsys):
    from ganforge.io import DamagedRecord
    from ganforge.metrics import classifier as classifier_module
    from ganforge.metrics.classifier import classifier_path, load_classifier, train_classifier

    def quick(spec, root=None, **kwargs):
        calls.append(spec)
        return train_classifier(spec, root, epochs=1, limit=600, progress=False)

    calls = []
    quick("digits", tmp_path)
    path = classifier_path("digits", tmp_path)
    before = load_classifier("digits", tmp_path)[1]["sha256"]
    path.write_bytes(path.read_bytes()[:-8] + b"damaged!")
    with pytest.raises(DamagedRecord, match="damaged"):
        load_classifier("digits", tmp_path)
    monkeypatch.setattr(classifier_module, "train_classifier", quick)
    extractor = get_extractor("classifier:digits", tmp_path)
    assert calls == ["digits", "digits"] and "damaged" in capsys.readouterr().err
    assert extractor.sha256 == before  # trained again the same way: the same weights
    path.with_suffix(".json").write_text("{not json")
    with pytest.raises(DamagedRecord, match=r"digits\.json: damaged"):
        load_classifier("digits", tmp_path)
