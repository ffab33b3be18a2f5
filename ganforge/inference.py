"""Loading a trained model to draw from it: what `sample`, `eval`, the latent tools, `t2i` and the studio use.

`load(path)` reads a checkpoint (a run folder, its checkpoints folder, one checkpoint, or a model folder
written by `ganforge export --format folder`), validated, and returns its model family's sampler with the
generator's EMA (or, with ema=False, the raw G): a `sampling.Generator` for image models, a
`t2i.TextToImage` for StackGAN. Noise comes from one
seeding function, `sampling.noise`, whose row i of a seed is the same whatever the number drawn.
"""

from __future__ import annotations

from pathlib import Path

from ganforge.checkpoint import find_checkpoint, load_checkpoint
from ganforge.errors import GanforgeError
from ganforge.families import family_of, pick_generator
from ganforge.sampling import Generator
from ganforge.t2i import TextToImage


def load(path: str | Path, ema: bool = True, kind: str | None = None) -> Generator | TextToImage:
    """The sampler of a checkpoint. kind: "image" or "text" to refuse the other kind with a message that
    says what to use instead. Its `meta` is the checkpoint's JSON, with "generator": G_ema or G."""
    meta, tensors = load_checkpoint(path)
    where = find_checkpoint(path)
    model = family_of(meta["model_spec"], where)
    if kind == "image" and model.kind == "text":
        raise GanforgeError(f"{path}: a text-to-image checkpoint; draw from it with: ganforge t2i {path} \"a caption\"")
    if kind == "text" and model.kind != "text":
        raise GanforgeError(f"{path}: a {model.name} checkpoint; `t2i` needs a text-to-image one (trained with "
                            "--model stackgan1 or stackgan2)")
    meta["generator"] = pick_generator(tensors, ema)
    if not any(k.startswith(meta["generator"] + "/") for k in tensors):  # a model folder keeps one generator
        raise GanforgeError(f"{where}: holds no {meta['generator']} (an exported model folder keeps only the "
                            "generator it was exported with); leave out --no-ema, or load the training run")
    try:
        return model.load_sampler(meta, tensors, ema)
    except (KeyError, TypeError, ValueError, RuntimeError) as e:  # a field missing, of the wrong type or range
        raise GanforgeError(f"{where}: checkpoint has no usable model_spec ({type(e).__name__}: {e})"[:400]) from None
