"""Every benchmark script runs: each has a smoke mode (a few steps, tiny sizes) that these tests run,
so that a change that breaks a benchmark fails here. Smoke runs write no results file."""

import importlib
import sys
from pathlib import Path

import pytest
import torch
from conftest import skip_or_fail, stand_in_attribute_scores

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


@pytest.fixture
def bench(monkeypatch):
    """Import benchmarks/NAME.py as the scripts import each other (their folder on sys.path)."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))

    def load(name: str):
        sys.modules.pop(name, None)
        return importlib.import_module(name)
    return load


def test_classifiers(bench):
    before = {p.name: p.stat().st_mtime_ns for p in (BENCHMARKS / "results").glob("*.json")}
    record = bench("classifiers").main(["--smoke", "--data", "digits", "--threads", "1"])
    assert record["smoke"] and set(record["results"]) == {"digits"}
    assert record["results"]["digits"]["train_images"] == 600 and record["results"]["digits"]["epochs"] == 1
    assert record["git"]["commit"] and record["processor"]["logical_cpus"]
    assert {p.name: p.stat().st_mtime_ns for p in (BENCHMARKS / "results").glob("*.json")} == before


def test_every_benchmark_script_has_a_smoke_mode_that_a_test_runs():
    scripts = {p.stem for p in BENCHMARKS.glob("*.py")} - {"common"}
    tested = {name.removeprefix("test_") for name in globals() if name.startswith("test_")}
    assert scripts <= tested, f"benchmarks without a smoke test here: {sorted(scripts - tested)}"
    for script in scripts:
        assert "--smoke" in (BENCHMARKS / f"{script}.py").read_text(), script


def test_throughput(bench):
    record = bench("throughput").main(["--smoke", "--batch-size", "16", "--precisions", "fp32", "bf16"])
    dcgan = record["models"]["dcgan"]
    assert dcgan["textbook_train_images_per_s"] > 0 and dcgan["widths"] == [32, 32]
    for precision in ("fp32", "bf16"):
        row = dcgan["precisions"][precision]
        assert row["train_images_per_s"] > 0 and row["mflop_per_image"] > 0 and 0 < row["matmul_utilisation"]
        assert record["matmul_gflops"][precision] > 0
    assert dcgan["baseline"]["widths"] == 64 and dcgan["baseline"]["speedup"] > 0
    assert record["auto_precision"]["precision"] == "fp32"  # the suite's GANFORGE_AUTO_PRECISION
    ops = record["dcgan_profile"]["ops"]
    assert len(ops) == 12 and any("convolution" in op["op"] for op in ops) and all(op["share"] > 0 for op in ops)
    assert record["models"]["mlp"]["sample_ratio"] > 0 and record["peak_rss_mb"] > 0


def test_throughput_at_an_image_size(bench):
    record = bench("throughput").main(["--smoke", "--data", "digits", "--image-size", "32", "--batch-size", "8",
                                       "--precisions", "fp32", "--models", "dcgan", "light"])
    assert record["image_size"] == 32 and set(record["models"]) == {"dcgan", "light"}
    for model in ("dcgan", "light"):
        row = record["models"][model]["precisions"]["fp32"]
        assert row["train_images_per_s"] > 0 and row["gflop_per_image"] > 0 and 0 < row["matmul_utilisation"]
        assert record["models"][model]["spec"]["model"] == model
        assert any("convolution" in op["op"] for op in record["models"][model]["profile"]["ops"])


def test_families(bench, tmp_path):
    figure = tmp_path / "side.png"
    record = bench("families").main(["--smoke", "--models", "dcgan", "light", "--work", str(tmp_path / "runs"),
                                     "--figure", str(figure)])
    for model in ("dcgan", "light"):
        got = record["models"][model]
        assert got["steps"] == 8 and got["config"]["model"] == model and got["config"]["image_size"] == 32
        assert got["metrics"]["pixels"]["n_fake"] == 100 and got["metrics"]["pixels"]["fid"] > 0
        assert got["adaptive"] is None
    assert record["together"] and figure.stat().st_size > 5000


def test_families_variants_on_a_small_folder(bench, tmp_path):
    """Variants of one model on a folder of the data's first images, the adaptive one's signal summarised
    and plotted."""
    signal = tmp_path / "signal.png"
    record = bench("families").main(["--smoke", "--variant", "none", "light", "ada=false", "--variant", "adaptive",
                                     "light", "ada=true", "log_every=1", "--train-images", "40", "--work",
                                     str(tmp_path / "runs"), "--signal-figure", str(signal)])
    assert set(record["models"]) == {"none", "adaptive"} and record["train_images"] == 40
    assert len(list((tmp_path / "runs" / "digits-40").glob("*.png"))) == 40
    none, adaptive = record["models"]["none"], record["models"]["adaptive"]
    assert none["config"]["data"].startswith("folder:") and not none["config"]["ada"] and none["adaptive"] is None
    assert adaptive["config"]["ada"] and adaptive["adaptive"]["lines"] >= 1
    assert 0 <= adaptive["adaptive"]["p_final"] <= 1 and -1 <= adaptive["adaptive"]["rt_mean_second_half"] <= 1
    assert signal.stat().st_size > 5000


def test_tuning(bench):
    record = bench("tuning").main(["--smoke", "--parallel", "2", "--seeds", "0,1",
                                   "--variant", "plain=", "--variant", "narrow@3=g_width=4,lr_decay=0.5"])
    plain, narrow = record["rows"]
    assert [r["seed"] for r in plain["runs"]] == [0, 1] and [r["seed"] for r in narrow["runs"]] == [3]
    assert narrow["set"] == ["g_width=4", "lr_decay=0.5"] and record["threads_per_run"] == 1
    assert plain["fid"]["min"] <= plain["fid"]["mean"] <= plain["fid"]["max"] and narrow["steps"]["mean"] == 3


def test_quality(bench):
    record = bench("quality").main(["--smoke"])
    assert record["steps"] == 3 and record["metrics"]["extractor"] == "pixels" and record["metrics"]["fid"] > 0


def test_losses(bench):
    record = bench("losses").main(["--smoke", "--losses", "hinge,r3gan,wgan-gp"])
    assert [r["loss"] for r in record["rows"]] == ["hinge", "r3gan", "wgan-gp"]
    assert all(r["steps"] == 3 and r["fid"] > 0 for r in record["rows"])


def test_inception(bench):
    record = bench("inception").main(["--smoke"])
    assert record["ratio"] > 0 and len(record["best_images_per_s"]) == 2


def test_scaling(bench):
    record = bench("scaling").main(["--smoke"])
    assert [r["processes"] for r in record["rows"]] == [2] and record["rows"][0]["images_per_s"] > 0 and all(r["images_per_s"] > 0 for r in record["rows"])


def test_arithmetic(bench, monkeypatch):
    """With a stand-in for the attribute classifier: a smoke run's model and classifier are too weak for every
    query to find samples, which the script needs."""
    from ganforge.data.faces import ATTRIBUTES

    arithmetic = bench("arithmetic")
    monkeypatch.setattr(arithmetic, "attribute_scorer", lambda data: (stand_in_attribute_scores, ATTRIBUTES))
    record = arithmetic.main(["--smoke"])
    assert record["draws"] == 3 and set(record["success_rate"]) == {"smile", "glasses", "random"}
    assert all(set(rates) == {"1", "3", "10"} for measure in record["success_rate"].values()
               for rates in measure.values())
    assert all(set(measure) == {"plain", "typical", "clean", "random"} for measure in record["success_rate"].values())
    assert record["misses"]["smile"]["random"].keys() == {"1", "3", "10"}
    assert record["inversion"]["faces"] == 2


def test_gpu(bench):
    record = bench("gpu").main(["--smoke"])
    assert record["device"] == "cpu" and [r["precision"] for r in record["rows"]] == ["fp32"]
    assert record["rows"][0]["images_per_s"] > 0 and "training" not in record
    gpu = bench("gpu")

    def broken(trainer, steps):
        raise RuntimeError("no kernel for this precision")
    gpu.ganforge_train = broken  # a row that fails makes the script fail, not a quiet "error" in the file
    with pytest.raises(SystemExit, match="1 of 1 throughput rows failed"):
        gpu.main(["--smoke"])


def test_directions(bench, monkeypatch):
    """With a stand-in for the attribute classifier (each attribute a fixed random projection of the pixels)."""
    from ganforge.data.faces import ATTRIBUTES

    directions = bench("directions")
    weights = torch.randn(len(ATTRIBUTES), 3 * 16 * 16, generator=torch.Generator().manual_seed(0))

    def scores(images):
        return torch.nn.functional.adaptive_avg_pool2d(images, 16).flatten(1) @ weights.T

    monkeypatch.setattr(directions, "attribute_scorer", lambda data: (scores, ATTRIBUTES))
    record = directions.main(["--smoke"])
    assert set(record["methods"]) == {"sefa", "pca"}
    assert all(len(m["directions"]) == 3 and len(m["strength"]) == 3 for m in record["methods"].values())
    # the count: a direction controls the attribute that moves by >= 0.3 while no other moves by more than 0.15 (or,
    # with the tied attributes left out, no other but those its value constrains)
    changes = torch.tensor([[0.5, 0.1, 0.0], [0.4, 0.2, 0.0], [0.0, -0.35, 0.05], [0.0, 0.0, 0.2], [0.6, 0.0, 0.1],
                            [0.3, 0.0, -0.7]])
    found = directions.summary(changes, ["a", "b", "c"], tied={"c": {"a"}, "a": {"c"}})
    assert found["attributes_found"] == {"strict": 2, "tied_left_out": 3, "moved_most": 3}
    assert [r["strict"] for r in found["directions"]] == ["a", None, "b", None, "a", None]
    assert [r["tied_left_out"] for r in found["directions"]] == ["a", None, "b", None, "a", "c"]
    assert found["found"]["strict"]["a"] == {"direction": 4, "change": 0.6, "next_largest": 0.1, "next_untied": 0.0}
    assert found["found"]["strict"]["b"]["change"] == -0.35


def test_text_to_image(bench):
    if not Path("/usr/share/datasets/fashion-mnist").is_dir():
        skip_or_fail("Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist)")
    record = bench("text_to_image").main(["--smoke", "--data", "fashion-mnist-captions"])
    assert {"class_match_seen_stage1", "class_match_unseen_stage2", "fid_stage2", "diversity_stage2",
            "real_class_match_stage1_size", "real_class_match_stage2_size"} <= record.keys()
    assert record["model"] == "stackgan2"
    alone = bench("text_to_image").main(["--smoke", "--data", "fashion-mnist-captions", "--stage2-steps", "0"])
    assert alone["model"] == "stackgan1" and {"class_match_seen_stage1", "fid_stage1_upsampled"} <= alone.keys()
    assert [k for k in alone if "stage2" in k] == ["stage2_steps"] and alone["stage2_steps"] == 0  # Stage-I alone


def test_masked_diversity_counts_the_face_and_not_its_background(bench):
    """Within-caption diversity inside the face mask: a pipe that draws the real faces scores 1; one that draws
    each group's first face on m backgrounds scores 0 (and more than 0 on all pixels, where backgrounds count)."""
    from ganforge.data import to_float
    from ganforge.data.faces import draw_faces, face_mask

    t2i = bench("text_to_image")
    faces, _ = draw_faces(16, seed=1)
    real = to_float(faces).unflatten(0, (2, 8))  # two captions, eight faces each
    near = ((faces.int() - faces[:, :, :1, :1].int()).abs().sum(1, keepdim=True) < 20).unflatten(0, (2, 8))
    first = real[:, :1].expand_as(real)
    backgrounds = torch.rand(2, 8, 3, 1, 1, generator=torch.Generator().manual_seed(0)).expand_as(real)
    one_face = torch.where(near[:, :1].expand_as(real), backgrounds, first).flatten(0, 1)
    features = lambda x: x.flatten(1).double()
    for images, expected in ((real.flatten(0, 1), 1.0), (one_face, 0.0)):
        pipe = lambda captions, m, seed, same_noise, images=images: (t2i.read_area(images, 32), images)
        result = t2i.diversity(pipe, ["a", "b"], real, features, seed=0, mask=face_mask)
        assert result["diversity_masked_stage2"] == pytest.approx(expected, abs=1e-9)
        assert result["diversity_stage2"] > 0.1
    assert result["diversity_masked_stage1"] < 0.05  # at 32 px the mask's edge blends in a little background


def test_text_to_image_reads_stage2_by_block_means(bench):
    """Fashion-MNIST's Stage-II is read at 28 pixels by 2x2 means: an image doubled pixel by pixel reads back whole."""
    images = torch.rand(3, 1, 28, 28)
    doubled = images.repeat_interleave(2, -1).repeat_interleave(2, -2)
    torch.testing.assert_close(bench("text_to_image").read_area(doubled, 28), images)


def test_ssl_extractor(bench):
    if not Path("/usr/share/datasets/fashion-mnist").is_dir():
        skip_or_fail("Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist)")
    record = bench("ssl_extractor").main(["--smoke"])
    assert len(record["ladder"]) == 4 and len(record["mode_dropping"]) == 6


def test_data_scale(bench):
    record = bench("data_scale").main(["--smoke"])
    assert record["settings"]["small"] == 100 and record["targets"]


def test_studio_load(bench):
    record = bench("studio_load").main(["--smoke"])
    within, above = record["phases"]
    assert within["accepted"] == 40 and within["share_503"] == 0 and within["plain_requests_within_1s"]
    assert above["concurrency"] == 64 and above["accepted"] + round(above["share_503"] * 40) == 40


def test_demo(bench):
    record = bench("demo").main(["--smoke"])
    assert record["steps"] == 3 and record["peak_rss_kb"] > 100_000 and record["metrics"]["n_fake"] == 200


def test_headline(bench):
    before = {p.name: p.stat().st_mtime_ns for p in (BENCHMARKS / "results").glob("*.json")}
    headline = bench("headline")
    record = headline.main(["--smoke"])
    rows = {r["figure"]: r for r in record["rows"]}
    assert len(rows) == len(headline.FIGURES) == 8 and all(r["committed"] is not None for r in rows.values()), rows
    assert rows["make demo: training steps"]["rerun"] == 3
    measured = [r for f, r in rows.items() if not f.startswith("cGAN")]  # a smoke run's pixels classify nothing
    assert all(r["rerun"] is not None for r in measured), rows
    assert {p.name: p.stat().st_mtime_ns for p in (BENCHMARKS / "results").glob("*.json")} == before


def test_gpu_sh_says_what_it_needs(tmp_path):
    """Without a Python that has torch, or without git or gcc on PATH, gpu.sh stops first and says which."""
    import shutil
    import subprocess

    tools = tmp_path / "bin"
    tools.mkdir()
    for tool in ("dirname", "git"):
        (tools / tool).symlink_to(shutil.which(tool))
    script = str(BENCHMARKS / "gpu.sh")
    bash = shutil.which("bash")
    no_gcc = subprocess.run([bash, script], check=False, env={"PATH": str(tools), "PYTHON": sys.executable},
                            capture_output=True, text=True, timeout=120)
    assert no_gcc.returncode == 2 and "needs gcc on PATH" in no_gcc.stderr, no_gcc.stderr
    no_torch = subprocess.run([bash, script], check=False, env={"PATH": str(tools), "PYTHON": "/bin/false"},
                              capture_output=True, text=True, timeout=120)
    assert no_torch.returncode == 2 and "needs a Python with torch and ganforge" in no_torch.stderr


def test_a_record_is_dirty_when_code_changed_not_when_results_or_pictures_did(bench, monkeypatch):
    """A run of several parts writes results files and gallery pictures as it goes: those do not make its later
    records dirty; any other change does."""
    import subprocess

    common = bench("common")

    def tree(*lines):
        def run(args, **kw):
            out = "abc123\n" if "rev-parse" in args else "".join(f"{line}\n" for line in lines)
            return subprocess.CompletedProcess(args, 0, stdout=out, stderr="")
        monkeypatch.setattr(common.subprocess, "run", run)
        return common.git_commit()

    assert tree() == {"commit": "abc123", "dirty": False, "outputs_changed": 0}
    assert tree(" M benchmarks/results/demo.json", "?? docs/gallery/faces.png") == {
        "commit": "abc123", "dirty": False, "outputs_changed": 2}
    assert tree(" M benchmarks/results/demo.json", " M ganforge/config.py")["dirty"] is True
