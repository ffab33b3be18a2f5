"""ganforge studio's HTTP API, with FastAPI's test client: every endpoint, and each invalid input."""

import io
import json
import os
import shutil
import statistics
import time
from pathlib import Path

import pytest
import torch
from conftest import make_shapes_folder, skip_or_fail, tiny_config
from PIL import Image

from ganforge import load, train
from ganforge.cli import main
from ganforge.config import TrainConfig
from ganforge.errors import GanforgeError

try:
    from fastapi.testclient import TestClient

    from ganforge.studio.app import Busy, GenerationQueue, create_app, discover, distinct_names, refusal
    MISSING = None
except ImportError as e:  # the studio extra is not installed
    MISSING = str(e)

INT64_MAX = 2**63 - 1


@pytest.fixture(autouse=True)
def _needs_studio():
    if MISSING:
        skip_or_fail(f"the studio needs fastapi, uvicorn and httpx: pip install 'ganforge[studio]' ({MISSING})")


def fake_attribute_classifier(data: str, names: list[str], G) -> None:
    """A cached attribute classifier for `data`, random but for its head, which is set so that each
    attribute holds for about half of G's samples: enough to answer queries."""
    from safetensors.torch import save_file

    from ganforge.io import sha256_file
    from ganforge.latent import seed_noise
    from ganforge.metrics.classifier import DomainClassifier, classifier_path

    torch.manual_seed(0)
    net = DomainClassifier(1, len(names)).eval()
    with torch.no_grad():
        features = net.body(G(seed_noise(list(range(500)), G.z_dim))).double()
        W = torch.randn(len(names), features.shape[1], dtype=torch.float64)
        logits = features @ W.T
        median, spread = logits.median(0).values, logits.std(0)
        net.head.weight.copy_(W / spread[:, None])
        net.head.bias.copy_(-median / spread)
    path = classifier_path(data, attributes=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(net.state_dict(), str(path))
    path.with_suffix(".json").write_text(json.dumps({"data": data, "attributes": names, "channels": 1,
                                                     "image_size": 28, "sha256": sha256_file(path)}))


@pytest.fixture(scope="module")
def studio(tmp_path_factory):
    """Runs: dcgan (with a cached attribute classifier of its data), cgan, stackgan1, stackgan2, and
    a run that has no checkpoint yet; all served by one app from their parent folder."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GANFORGE_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))  # as conftest's
        out = tmp_path_factory.mktemp("runs")
        dcgan = train(tiny_config(steps=10), runs_dir=out, progress=False)
        cgan = train(tiny_config(steps=4, model="cgan"), runs_dir=out, progress=False)
        shapes = make_shapes_folder(tmp_path_factory.getbasetemp() / "shapes")
        text = {"model": "stackgan1", "data": f"captions:{shapes}", "image_size": 32, "g_width": 8, "d_width": 8,
                "z_dim": 8, "c_dim": 8, "text_dim": 16, "text_pretrain_steps": 5, "batch_size": 16,
                "log_every": 2, "n_samples": 16, "steps": 4}
        stage1 = train(TrainConfig(**text).validate(), runs_dir=out, progress=False)
        stage2 = train(TrainConfig(**(text | {"model": "stackgan2", "stage1": str(stage1), "image_size": None,
                                              "steps": 2})).validate(), runs_dir=out, progress=False)
        fresh = out / "99999-dcgan-digits"  # training has just begun: stats, no checkpoint
        (fresh / "samples").mkdir(parents=True)
        (fresh / "config.json").write_text(json.dumps({"loss": "non-saturating"}))
        (fresh / "stats.jsonl").write_text("")
        fake_attribute_classifier("digits", ["bright", "wide"], load(dcgan))
        assert main(["directions", str(dcgan), "--method", "pca", "--k", "3", "--pca-samples", "64"]) == 0
        app = create_app([out])
        with TestClient(app, base_url="http://127.0.0.1:7860") as client:  # as a browser on the studio's page
            names = [m["name"] for m in client.get("/api/info").json()["models"]]
            ids = {kind: names.index(run.name) for kind, run in
                   {"dcgan": dcgan, "cgan": cgan, "stage1": stage1, "stage2": stage2}.items()}
            yield client, ids, {"dcgan": dcgan, "fresh": fresh}


def image(response) -> Image.Image:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png"
    return Image.open(io.BytesIO(response.content))


def same(a: Image.Image, b: Image.Image) -> bool:
    """Equal up to rounding: a batch of another size may round a pixel the other way."""
    import numpy as np

    return a.size == b.size and np.abs(np.asarray(a, dtype=int) - np.asarray(b, dtype=int)).max() <= 2


def pixels(response) -> bytes:
    return image(response).tobytes()


def error(response, status: int, *words: str) -> str:
    assert response.status_code == status, (response.status_code, response.text)
    detail = response.json()["detail"]
    assert isinstance(detail, str)
    for word in words:
        assert word in detail, detail
    return detail


# --- listing
def test_info_lists_models_and_runs_by_id_without_paths(studio, tmp_path_factory):
    client, ids, runs = studio
    info = client.get("/api/info").json()
    kinds = {m["model"]: m["kind"] for m in info["models"]}
    assert kinds == {"dcgan": "image", "cgan": "image", "stackgan1": "text", "stackgan2": "text"}
    assert [m["id"] for m in info["models"]] == list(range(4))  # the fresh run has no checkpoint: monitor only
    assert {r["name"] for r in info["runs"]} >= {runs["dcgan"].name, "99999-dcgan-digits"}
    assert info["models"][ids["dcgan"]]["attributes"] == ["bright", "wide"]
    assert info["models"][ids["cgan"]]["classes"] and info["models"][ids["cgan"]]["attributes"] is None
    assert info["models"][ids["stage2"]]["stages"] == [32, 64]
    assert str(tmp_path_factory.getbasetemp()) not in json.dumps(info)  # no file-system paths travel


def test_index_and_static_assets_are_served_locally(studio):
    client, _, _ = studio
    page = client.get("/")
    assert page.status_code == 200 and "ganforge studio" in page.text
    assert "http://" not in page.text and "https://" not in page.text  # nothing from a CDN
    for asset in ("studio.js", "studio.css"):
        assert client.get(f"/static/{asset}").status_code == 200
    assert client.get("/static/../app.py").status_code == 404
    assert client.get("/static/%2e%2e/app.py").status_code == 404


# --- explore
def test_explore_draws_a_grid_of_a_seed(studio):
    client, ids, _ = studio
    url = f"/api/models/{ids['dcgan']}/explore"
    grid = image(client.get(url, params={"seed": 3, "n": 16}))
    assert grid.size == (4 * 30 + 2, 4 * 30 + 2)  # 4 x 4 images of 28 px with 2 px gaps
    assert pixels(client.get(url, params={"seed": 3, "n": 16})) == grid.tobytes()  # a seed always gives the same
    assert pixels(client.get(url, params={"seed": 4, "n": 16})) != grid.tobytes()
    assert image(client.get(url, params={"n": 1})).size == (32, 32)
    assert image(client.get(url, params={"n": 64})).size == (8 * 30 + 2,) * 2
    for seed in (INT64_MAX, -2**63, -1):
        image(client.get(url, params={"seed": seed, "n": 4}))
    # the first samples of a seed do not depend on how many are drawn
    assert same(image(client.get(url, params={"seed": 3, "n": 4})).crop((2, 2, 30, 30)), grid.crop((2, 2, 30, 30)))


def test_explore_truncation_changes_the_samples(studio):
    client, ids, _ = studio
    url = f"/api/models/{ids['dcgan']}/explore"
    plain = pixels(client.get(url, params={"seed": 5}))
    tight = pixels(client.get(url, params={"seed": 5, "truncation": 0.2}))
    assert tight != plain
    assert pixels(client.get(url, params={"seed": 5, "truncation": 10})) == plain  # |z| < 10: nothing clamped


def test_explore_of_a_conditional_model_takes_a_label(studio):
    client, ids, _ = studio
    url = f"/api/models/{ids['cgan']}/explore"
    every = pixels(client.get(url, params={"seed": 1, "n": 9}))
    assert pixels(client.get(url, params={"seed": 1, "n": 9, "label": 7})) != every
    error(client.get(url, params={"label": 10}), 400, "label must be in 0..9")
    error(client.get(f"/api/models/{ids['dcgan']}/explore", params={"label": 1}), 400, "not class-conditional")


@pytest.mark.parametrize("params, words", [
    ({"n": 0}, ["n:", "greater than or equal to 1"]),
    ({"n": 65}, ["n:", "less than or equal to 64"]),
    ({"n": "many"}, ["n:", "integer"]),
    ({"seed": 2**63}, ["seed:", "less than or equal to 9223372036854775807"]),
    ({"seed": -2**63 - 1}, ["seed:", "greater than or equal to"]),
    ({"seed": "1.5"}, ["seed:", "integer"]),
    ({"truncation": 0}, ["truncation:", "greater than 0"]),
    ({"truncation": 11}, ["truncation:", "less than or equal to 10"]),
    ({"truncation": "nan"}, ["truncation:"]),
    ({"label": -1}, ["label:"]),
])
def test_explore_refuses_invalid_input(studio, params, words):
    client, ids, _ = studio
    error(client.get(f"/api/models/{ids['dcgan']}/explore", params=params), 422, *words)


def test_unknown_or_wrong_models_are_refused(studio):
    client, ids, _ = studio
    error(client.get("/api/models/99/explore"), 404, "no model 99")
    error(client.get("/api/models/-1/explore"), 422, "mid:")
    error(client.get("/api/models/abc/explore"), 422, "mid:")
    error(client.get(f"/api/models/{ids['stage1']}/explore"), 400, "text-to-image model")
    error(client.get(f"/api/models/{ids['dcgan']}/text", params={"prompt": "a red disc"}), 400,
          "not a text-to-image model")


# --- latent directions
def test_directions_move_the_selected_samples(studio):
    client, ids, _ = studio
    info = client.get("/api/info").json()["models"]
    assert info[ids["dcgan"]]["directions"] == {"sefa": 10, "pca": 3}  # sefa found at load, pca as kept
    url = f"/api/models/{ids['dcgan']}/directions"
    refs = [{"seed": 3, "index": 0}, {"seed": 3, "index": 5}]
    still = image(client.post(url, json={"refs": refs, "amounts": []}))
    assert still.size == (2 * 30 + 2, 32)
    grid = image(client.get(f"/api/models/{ids['dcgan']}/explore", params={"seed": 3, "n": 16}))
    assert same(still.crop((2, 2, 30, 30)), grid.crop((2, 2, 30, 30)))  # amounts of 0: the samples as drawn
    moved = [pixels(client.post(url, json={"refs": refs, "amounts": a})) for a in ([3], [-3], [0, 3], [3, 3])]
    assert len({still.tobytes(), *moved}) == 5  # each direction, each way, moves them somewhere else
    assert pixels(client.post(url, json={"refs": refs, "amounts": [3], "method": "pca"})) not in moved
    image(client.post(f"/api/models/{ids['cgan']}/directions", json={"refs": [refs[0] | {"label": 2}],
                                                                         "amounts": [1.5]}))
    error(client.post(f"/api/models/{ids['cgan']}/directions", json={"refs": refs, "method": "pca", "amounts": []}),
          400, "no pca directions", "ganforge directions RUN --method pca")


@pytest.mark.parametrize("change, status, words", [
    ({"amounts": [0.0] * 4, "method": "pca"}, 422, ["4 given", "3 pca directions"]),
    ({"amounts": [0.0] * 11}, 422, ["amounts:"]),
    ({"amounts": [5.5]}, 422, ["amounts.0:"]),
    ({"refs": []}, 422, ["refs:"]),
    ({"method": "ica"}, 422, ["method:"]),
    ({"label": 1}, 400, ["not class-conditional"]),
])
def test_directions_refuse_invalid_input(studio, change, status, words):
    client, ids, _ = studio
    body = {"refs": [{"seed": 1}], "amounts": [1.0]} | change
    error(client.post(f"/api/models/{ids['dcgan']}/directions", json=body), status, *words)


# --- interpolate
def test_interpolation_runs_from_a_to_b(studio):
    client, ids, _ = studio
    url = f"/api/models/{ids['dcgan']}/interpolate"
    a, b = {"seed": 3, "index": 0}, {"seed": "9", "index": 5}  # seeds may come as strings (JS cannot hold int64)
    strip = image(client.post(url, json={"a": a, "b": b, "steps": 8}))
    assert strip.size == (8 * 30 + 2, 32)
    grid = image(client.get(f"/api/models/{ids['dcgan']}/explore", params={"seed": 3, "n": 16}))
    assert same(strip.crop((2, 2, 30, 30)), grid.crop((2, 2, 30, 30)))  # starts at sample a
    end = image(client.post(url, json={"a": a, "b": b, "steps": 1, "t0": 1, "t1": 1}))
    assert same(end.crop((2, 2, 30, 30)), strip.crop((212, 2, 240, 30)))  # ends at sample b
    mid = {"a": a, "b": b, "steps": 1, "t0": 0.5, "t1": 0.5}
    assert pixels(client.post(url, json=mid)) != pixels(client.post(url, json=mid | {"method": "slerp"}))
    assert pixels(client.post(url, json=mid)) != pixels(client.post(url, json=mid | {"t0": 0.6, "t1": 0.6}))
    truncated = {"a": a | {"truncation": 0.3}, "b": b, "steps": 1}
    assert pixels(client.post(url, json=truncated)) != pixels(client.post(url, json={"a": a, "b": b, "steps": 1}))
    image(client.post(f"/api/models/{ids['cgan']}/interpolate", json={"a": a | {"label": 4}, "b": b}))


@pytest.mark.parametrize("change, status, words", [
    ({"steps": 0}, 422, ["steps:"]),
    ({"steps": 65}, 422, ["steps:"]),
    ({"t0": 1.5}, 422, ["t0:"]),
    ({"method": "cubic"}, 422, ["method:", "lerp", "slerp"]),
    ({"a": {"seed": 1, "index": 64}}, 422, ["a.index:"]),
    ({"a": {"seed": 2**63}}, 422, ["a.seed:"]),
    ({"a": {"seed": 1, "path": "/etc/passwd"}}, 422, ["a.path:", "Extra inputs are not permitted"]),
    ({"b": None}, 422, ["b:"]),
    ({"label": 3}, 400, ["not class-conditional"]),
])
def test_interpolation_refuses_invalid_input(studio, change, status, words):
    client, ids, _ = studio
    body = {"a": {"seed": 1}, "b": {"seed": 2}} | change
    error(client.post(f"/api/models/{ids['dcgan']}/interpolate", json=body), status, *words)


def test_invalid_json_is_refused(studio):
    client, ids, _ = studio
    response = client.post(f"/api/models/{ids['dcgan']}/interpolate", content=b"{not json",
                           headers={"content-type": "application/json"})
    error(response, 422, "JSON")
    error(client.post(f"/api/models/{ids['dcgan']}/interpolate", content=b'{"a": {"seed": "\xff"}}',
                      headers={"content-type": "application/json"}), 400, "error parsing the body")


# --- arithmetic
def test_arithmetic_draws_a_3x3_grid_that_follows_its_terms(studio):
    client, ids, _ = studio
    url = f"/api/models/{ids['dcgan']}/arithmetic"
    body = {"a": {"refs": [{"seed": 1}, {"seed": 1, "index": 1}]}, "b": {"refs": [{"seed": 2}]},
            "c": {"refs": [{"seed": 3}]}}
    grid = image(client.post(url, json=body))
    assert grid.size == (3 * 30 + 2,) * 2
    assert pixels(client.post(url, json=body)) == grid.tobytes()
    assert pixels(client.post(url, json=body | {"c": {"refs": [{"seed": 4}]}})) != grid.tobytes()
    assert pixels(client.post(url, json=body | {"noise": 0.8})) != grid.tobytes()
    # A - A + C is C: the first image of the grid is sample C
    result = image(client.post(url, json={"a": {"refs": [{"seed": 2}]}, "b": {"refs": [{"seed": 2}]},
                                        "c": {"refs": [{"seed": 3}]}}))
    sample_c = image(client.get(f"/api/models/{ids['dcgan']}/explore", params={"seed": 3, "n": 1}))
    assert same(result.crop((2, 2, 30, 30)), sample_c.crop((2, 2, 30, 30)))


def test_arithmetic_answers_attribute_queries_with_a_cached_classifier(studio):
    client, ids, _ = studio
    url = f"/api/models/{ids['dcgan']}/arithmetic"
    body = {"a": {"query": "bright"}, "b": {"query": "!bright"}, "c": {"refs": [{"seed": 3}]}}
    grid = image(client.post(url, json=body))
    assert pixels(client.post(url, json=body | {"a": {"query": "wide"}})) != grid.tobytes()
    error(client.post(url, json=body | {"a": {"query": "smiling"}}), 400, "unknown attribute 'smiling'", "bright")
    error(client.post(url, json=body | {"a": {"query": "bright&!bright"}}), 400, "satisfy 'bright&!bright'")


@pytest.mark.parametrize("change, status, words", [
    ({"a": {"refs": []}}, 422, ["a.refs:"]),
    ({"a": {}}, 422, ["a:", "either refs", "or query"]),
    ({"a": {"refs": [{"seed": 1}], "query": "bright"}}, 422, ["not both"]),
    ({"a": {"refs": [{"seed": 1}] * 17}}, 422, ["a.refs:", "at most 16"]),
    ({"a": {"query": "bright\u0000"}}, 422, ["a.query:", "not valid text"]),
    ({"a": {"query": "x" * 201}}, 422, ["a.query:"]),
    ({"noise": -1}, 422, ["noise:"]),
    ({"seed": 2**63}, 422, ["seed:"]),
    ({"c": None}, 422, ["c:"]),
])
def test_arithmetic_refuses_invalid_input(studio, change, status, words):
    client, ids, _ = studio
    body = {"a": {"refs": [{"seed": 1}]}, "b": {"refs": [{"seed": 2}]}, "c": {"refs": [{"seed": 3}]}} | change
    error(client.post(f"/api/models/{ids['dcgan']}/arithmetic", json=body), status, *words)


def test_arithmetic_refuses_conditional_models_and_queries_without_a_classifier(studio):
    client, ids, _ = studio
    body = {"a": {"refs": [{"seed": 1}]}, "b": {"refs": [{"seed": 2}]}, "c": {"refs": [{"seed": 3}]}}
    error(client.post(f"/api/models/{ids['cgan']}/arithmetic", json=body), 400, "unconditional")
    model = client.app.state.models[ids["dcgan"]]
    saved = model.classify
    model.classify = None
    try:
        error(client.post(f"/api/models/{ids['dcgan']}/arithmetic", json=body | {"a": {"query": "bright"}}), 400,
              "no attribute classifier")
    finally:
        model.classify = saved


# --- text to image
def test_text_to_image_draws_both_stages(studio):
    client, ids, _ = studio
    url = f"/api/models/{ids['stage2']}/text"
    one = image(client.get(url, params={"prompt": "a red disc", "n": 4, "stage": 1}))
    two = image(client.get(url, params={"prompt": "a red disc", "n": 4, "stage": 2}))
    assert one.size == (4 * 34 + 2, 36) and two.size == (4 * 66 + 2, 68)
    assert pixels(client.get(url, params={"prompt": "a  red disc ", "n": 4, "stage": 2})) == two.tobytes()
    assert pixels(client.get(url, params={"prompt": "a blue square", "n": 4, "stage": 2})) != two.tobytes()
    assert pixels(client.get(url, params={"prompt": "a red disc", "n": 4, "stage": 2, "seed": 1})) != two.tobytes()
    response = client.get(url, params={"prompt": "a purple disc", "n": 1})
    assert response.headers["x-unknown-words"] == "purple"
    image(client.get(f"/api/models/{ids['stage1']}/text", params={"prompt": "ein grüner Kreis ✓", "n": 2}))


@pytest.mark.parametrize("params, status, words", [
    ({}, 422, ["prompt:", "Field required"]),
    ({"prompt": ""}, 422, ["prompt:", "at least 1 character"]),
    ({"prompt": "x" * 201}, 422, ["prompt:", "at most 200 characters"]),
    ({"prompt": "a red\u0007disc"}, 422, ["prompt:", "not valid text", "U+0007"]),
    ({"prompt": "a red \ufffd disc"}, 422, ["prompt:", "not valid text"]),
    ({"prompt": "   "}, 400, ["caption 1 is empty"]),
    ({"prompt": "a red disc", "stage": 3}, 422, ["stage:"]),
    ({"prompt": "a red disc", "n": 65}, 422, ["n:"]),
    ({"prompt": "a red disc", "seed": 2**64}, 422, ["seed:"]),
])
def test_text_to_image_refuses_invalid_input(studio, params, status, words):
    client, ids, _ = studio
    error(client.get(f"/api/models/{ids['stage2']}/text", params=params), status, *words)


def test_text_to_image_refuses_invalid_utf8_and_stage_two_of_a_stage_one_model(studio):
    client, ids, _ = studio
    error(client.get(f"/api/models/{ids['stage2']}/text?prompt=a%20red%20%FF%20disc"), 422, "not valid text")
    error(client.get(f"/api/models/{ids['stage1']}/text", params={"prompt": "a red disc", "stage": 2}), 400,
          "Stage-I checkpoint")


# --- training monitor
def run_id(client, name):
    return next(r["id"] for r in client.get("/api/info").json()["runs"] if r["name"] == name)


def test_monitor_shows_a_run_and_follows_it_while_it_trains(studio):
    client, _, runs = studio
    rid = run_id(client, runs["fresh"].name)
    status = client.get(f"/api/runs/{rid}").json()
    assert status["training"] and status["last"] is None and status["panel"] is None
    error(client.get(f"/api/runs/{rid}/figure/curves"), 400, "no losses yet")
    error(client.get(f"/api/runs/{rid}/figure/latest"), 404, "no samples panel yet")
    error(client.get(f"/api/runs/{rid}/figure/progress"), 404, "no progress.png")
    stats, panel = runs["fresh"] / "stats.jsonl", runs["fresh"] / "samples"
    line = {"step": 5, "d_loss": 1.3, "g_loss": 0.7, "d_real": 0.6, "d_fake": 0.4}
    stats.write_text(json.dumps(line) + "\n" + '{"step": 10, "d_lo')  # a line still being written is skipped
    Image.new("L", (30, 30), 10).save(panel / "epoch_0000.png")
    status = client.get(f"/api/runs/{rid}").json()
    assert status["last"]["step"] == 5 and status["panel"] == "epoch_0000.png"
    first = pixels(client.get(f"/api/runs/{rid}/figure/curves"))
    first_panel = pixels(client.get(f"/api/runs/{rid}/figure/latest"))
    time.sleep(0.01)
    stats.write_text("".join(json.dumps(line | {"step": s, "d_loss": 1.3 - s / 100}) + "\n" for s in (5, 10, 15)))
    os.utime(stats, ns=(time.time_ns(), time.time_ns() + 10**9))  # a coarse clock must still see the change
    Image.new("L", (30, 30), 200).save(panel / "epoch_0001.png")
    later = client.get(f"/api/runs/{rid}").json()
    assert later["stats_version"] != status["stats_version"] and later["panel"] == "epoch_0001.png"
    assert pixels(client.get(f"/api/runs/{rid}/figure/curves")) != first
    assert pixels(client.get(f"/api/runs/{rid}/figure/latest")) != first_panel
    assert [s["step"] for s in client.get(f"/api/runs/{rid}/stats", params={"after": 5}).json()] == [10, 15]


def test_monitor_of_a_finished_run(studio):
    client, _, runs = studio
    rid = run_id(client, runs["dcgan"].name)
    assert client.get(f"/api/runs/{rid}/stats").json()[0]["step"] == 5
    image(client.get(f"/api/runs/{rid}/figure/curves"))
    image(client.get(f"/api/runs/{rid}/figure/latest"))
    image(client.get(f"/api/runs/{rid}/figure/progress"))


@pytest.mark.parametrize("url, status, words", [
    ("/api/runs/99", 404, ["no run 99"]),
    ("/api/runs/99/figure/curves", 404, ["no run 99"]),
    ("/api/runs/0/figure/config.json", 422, ["name:", "'curves', 'latest' or 'progress'"]),
    ("/api/runs/0/figure/..%2F..%2Fconfig.json", 404, ["Not Found"]),
    ("/api/runs/0/stats?after=x", 422, ["after:"]),
    ("/api/runs/x", 422, ["rid:"]),
])
def test_monitor_refuses_invalid_input(studio, url, status, words):
    client, _, _ = studio
    error(client.get(url), status, *words)


# --- the queue
def test_a_full_queue_answers_503_with_a_message(studio):
    client, ids, _ = studio
    queue = client.app.state.queue
    queue.pending = queue.max_pending
    try:
        response = client.get(f"/api/models/{ids['dcgan']}/explore")
    finally:
        queue.pending = 0
    error(response, 503, "busy", "try again")
    assert response.headers["retry-after"] == "1"
    image(client.get(f"/api/models/{ids['dcgan']}/explore"))


def test_the_queue_admits_at_most_max_pending_jobs():
    import asyncio
    import threading

    release = threading.Event()

    async def flood():
        queue = GenerationQueue(workers=1, max_pending=3)
        jobs = [asyncio.ensure_future(queue.run(release.wait)) for _ in range(5)]
        await asyncio.sleep(0.05)
        release.set()
        return await asyncio.gather(*jobs, return_exceptions=True)

    results = asyncio.run(flood())
    assert results[:3] == [True] * 3 and all(isinstance(r, Busy) for r in results[3:])


def test_generation_is_fast_enough(studio):
    client, ids, _ = studio
    url = f"/api/models/{ids['dcgan']}/explore"
    times = []
    for seed in range(7):
        start = time.perf_counter()
        image(client.get(url, params={"seed": seed, "n": 16}))
        times.append(time.perf_counter() - start)
    assert statistics.median(times) < 0.25, times  # about 15 ms here; generous for a busy machine


# --- what can be served
def test_discover_finds_only_what_was_named(studio, tmp_path):
    _, _, runs = studio
    models, watched = discover([runs["dcgan"]])
    assert [name for name, _ in models] == [runs["dcgan"].name] and len(watched) == 1
    models, watched = discover([next((runs["dcgan"] / "checkpoints").glob("*.json"))])
    assert len(models) == 1 and watched == []
    with pytest.raises(GanforgeError, match="no such run folder or checkpoint"):
        discover([tmp_path / "missing"])
    with pytest.raises(GanforgeError, match="neither a run folder"):
        discover([tmp_path])
    with pytest.raises(GanforgeError, match="never unpickles"):
        (tmp_path / "model.pt").write_bytes(b"")
        discover([tmp_path / "model.pt"])


def test_runs_of_one_name_are_told_apart_by_their_folders(studio, tmp_path):
    _, _, runs = studio
    for parent in ("a", "b"):
        shutil.copytree(runs["dcgan"], tmp_path / parent / runs["dcgan"].name)
    models, watched = discover([tmp_path / "a" / runs["dcgan"].name, tmp_path / "b" / runs["dcgan"].name,
                                tmp_path / "b" / runs["dcgan"].name])  # named twice: served once
    assert [name for name, _ in models] == [f"a/{runs['dcgan'].name}", f"b/{runs['dcgan'].name}"]
    assert [name for name, _ in watched] == [f"a/{runs['dcgan'].name}", f"b/{runs['dcgan'].name}"]
    assert distinct_names([Path("/x/r/a/run"), Path("/y/r/a/run"), Path("/y/other")]) == ["x/r/a/run", "y/r/a/run",
                                                                                             "other"]


# --- requests from elsewhere
@pytest.mark.parametrize("headers", [{"host": "evil.example:7860"}, {"host": "127.0.0.1.evil.example"},
                                     {"host": "attacker.test"}])
def test_a_host_other_than_the_bound_address_is_refused(studio, headers):
    """DNS rebinding: a page whose name now points at 127.0.0.1 still sends its own name as Host."""
    client, ids, _ = studio
    for url in ("/", "/api/info", f"/api/models/{ids['dcgan']}/explore"):
        error(client.get(url, headers=headers), 403, "answers requests for 127.0.0.1 or localhost or ::1 only")


@pytest.mark.parametrize("host", ["127.0.0.1:7860", "localhost:7860", "[::1]:7860", "LOCALHOST", "127.0.0.1"])
def test_the_loopback_names_are_served(studio, host):
    client, ids, _ = studio
    assert client.get("/api/info", headers={"host": host}).status_code == 200
    image(client.get(f"/api/models/{ids['dcgan']}/explore", headers={"host": host, "origin": f"http://{host}"}))


@pytest.mark.parametrize("headers, words", [
    ({"origin": "http://evil.example"}, "cross-origin request from 'http://evil.example'"),
    ({"origin": "http://127.0.0.1:9999"}, "cross-origin"),  # another local app's page
    ({"origin": "null"}, "cross-origin"),  # a sandboxed frame or a file:// page
    ({"sec-fetch-site": "cross-site"}, "Sec-Fetch-Site: cross-site"),  # an <img> on another site sends no Origin
    ({"sec-fetch-site": "same-site"}, "Sec-Fetch-Site: same-site"),
])
def test_requests_from_other_origins_that_start_work_are_refused(studio, headers, words):
    client, ids, _ = studio
    ref = {"seed": 1, "index": 0}
    error(client.get(f"/api/models/{ids['dcgan']}/explore", headers=headers), 403, words)
    error(client.post(f"/api/models/{ids['dcgan']}/interpolate", json={"a": ref, "b": ref}, headers=headers), 403,
          words)
    error(client.get(f"/api/models/{ids['stage1']}/text", params={"prompt": "a red disc"}, headers=headers), 403)
    error(client.get("/api/runs/0/figure/curves", headers=headers), 403)
    assert client.get("/", headers=headers).status_code == 200  # the page itself starts nothing
    same = {"origin": "http://127.0.0.1:7860", "sec-fetch-site": "same-origin"}
    image(client.post(f"/api/models/{ids['dcgan']}/interpolate", json={"a": ref, "b": ref}, headers=same))


def test_refusal_follows_the_bound_address():
    assert refusal({"host": "192.168.1.5:7860"}, "192.168.1.5") is None
    assert "192.168.1.5 only" in refusal({"host": "localhost:7860"}, "192.168.1.5")
    assert refusal({"host": "studio.lan:80"}, "0.0.0.0") is None  # every interface: any name, origins still checked
    assert "cross-origin" in refusal({"host": "studio.lan:80", "origin": "http://other.lan"}, "0.0.0.0")
    assert refusal({"host": "[::1]:7860", "origin": "http://[::1]:7860"}, "::1") is None


def test_cli_studio_prints_its_address_and_warns_off_localhost(studio, monkeypatch, capsys):
    import uvicorn

    _, _, runs = studio
    served = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: served.update(kw))
    threads = torch.get_num_threads()
    try:
        assert main(["studio", str(runs["dcgan"]), "--port", "8123"]) == 0
        out, err = capsys.readouterr()
        assert "http://127.0.0.1:8123/" in out and "warning" not in err and served["host"] == "127.0.0.1"
        assert main(["studio", str(runs["dcgan"]), "--host", "0.0.0.0"]) == 0
        out, err = capsys.readouterr()
        assert "http://0.0.0.0:7860/" in out and "warning: serving on 0.0.0.0" in err
    finally:
        torch.set_num_threads(threads)
    assert main(["studio", str(runs["dcgan"] / "nothing")]) == 2
    assert "no such run folder" in capsys.readouterr().err
    assert main(["studio", str(runs["dcgan"]), "--port", "70000"]) == 2
