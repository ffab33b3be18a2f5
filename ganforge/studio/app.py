"""ganforge studio: a small local web app to explore trained generators (FastAPI + plain JS).

`create_app(paths)` builds the app for the run folders and checkpoints named on the command line.
Requests never carry a file-system path: models and runs are referred to by the index the server
gives them (`GET /api/info`). Every input is checked (422 with a message when wrong); errors of
the library (GanforgeError) become 400 with its message.

Models are loaded through the inference layer (`ganforge.load`), which validates the checkpoint.
A sample is named by (seed, index, truncation, label): its z is row `index` of the seed's noise
(`sampling.noise`, whose rows do not depend on how many are drawn: the same z as `ganforge sample`
and `--concept A=SEED` give), clamped elementwise to [-truncation, truncation] when a truncation is
given (the truncation trick, by clamping rather than resampling).

Only requests addressed to the studio are served: the Host header must name the address it bound (127.0.0.1,
localhost, [::1] for a loopback studio, or the --host given), which stops DNS rebinding; and a request to the
API from another origin (its Origin header, or the browser's Sec-Fetch-Site) is refused, so a page the user
visits cannot make the studio work, by a script or an <img>. Both answer 403 with what was refused.

All torch work runs in a thread pool of `workers` threads behind a bounded queue: at most
`max_pending` requests wait or run at once; one more is answered 503 at once, so a flood slows the
answers but never piles up work in memory, and the event loop stays free to answer.
"""

from __future__ import annotations

import asyncio
import io
import math
import os
import time
import unicodedata
import urllib.parse
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal

import torch
from fastapi import FastAPI, HTTPException, Query, Request
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ganforge.checkpoint import find_checkpoint, home, is_model_folder, list_checkpoints
from ganforge.data import to_uint8
from ganforge.errors import GanforgeError
from ganforge.inference import load
from ganforge.latent import around, lerp, query_concept, slerp
from ganforge.runfolder import RunFolder
from ganforge.sampling import Generator, noise
from ganforge.stats import StatsTail
from ganforge.t2i import MAX_CAPTION, TextToImage, check_captions

STATIC = Path(__file__).parent / "static"
INT64_MIN, INT64_MAX = -2**63, 2**63 - 1
MAX_N = 64  # images per request, and the rows of noise a seed names
ROWS = 64
TRAINING_WINDOW_S = 120  # a run whose stats.jsonl changed this recently counts as training now
QUERY_POOL = 500  # samples an attribute query picks its 3 exemplars from
MAX_DIRECTIONS = 10  # sliders in Explore: the strongest latent directions
MAX_AMOUNT = 5.0  # how far a slider moves z along its direction, either way

Seed = Annotated[int, Field(ge=INT64_MIN, le=INT64_MAX, description="a noise seed in the int64 range")]
Count = Annotated[int, Field(ge=1, le=MAX_N, description="how many images, 1 to 64")]
Truncation = Annotated[float, Field(gt=0, le=10, description="clamp z to [-t, t]; omit for none")]


def check_text(text: str) -> str:
    """Printable text only: no control characters (whitespace aside), surrogates, private-use or unassigned
    code points, nor U+FFFD (what undecodable bytes become)."""
    for ch in text:
        if ch in "\t\n\r ":
            continue
        if unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Co", "Cn") or ch == "\ufffd":
            raise ValueError(f"contains a character that is not valid text (U+{ord(ch):04X})")
    return text


# --- request bodies
class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Ref(Strict):
    """One sample of the explore grid."""
    seed: Seed
    index: int = Field(0, ge=0, lt=ROWS, description="its place in the grid, 0 to 63")
    truncation: Truncation | None = None
    label: int | None = Field(None, ge=0, description="its class, for class-conditional models")


class Term(Strict):
    """A slot of the arithmetic: the average of some samples, or an attribute query."""
    refs: list[Ref] | None = Field(None, min_length=1, max_length=16)
    query: str | None = Field(None, min_length=1, max_length=200)

    @field_validator("query")
    @classmethod
    def _text(cls, v):
        return v if v is None else check_text(v)

    @model_validator(mode="after")
    def _one(self):
        if (self.refs is None) == (self.query is None):
            raise ValueError("give either refs (samples) or query (an attribute query), not both or neither")
        return self


class InterpolateBody(Strict):
    a: Ref
    b: Ref
    method: Literal["lerp", "slerp"] = "lerp"
    steps: int = Field(8, ge=1, le=MAX_N)
    t0: float = Field(0.0, ge=0, le=1)
    t1: float = Field(1.0, ge=0, le=1)
    label: int | None = Field(None, ge=0)


class DirectionsBody(Strict):
    """Samples moved along latent directions: z + sum_i amounts[i] * direction i."""
    refs: list[Ref] = Field(min_length=1, max_length=16)
    amounts: list[Annotated[float, Field(ge=-MAX_AMOUNT, le=MAX_AMOUNT)]] = Field(max_length=MAX_DIRECTIONS)
    method: Literal["sefa", "pca"] = "sefa"
    label: int | None = Field(None, ge=0)


class ArithmeticBody(Strict):
    a: Term
    b: Term
    c: Term
    noise: float = Field(0.25, ge=0, le=2, description="scale of the noise around A - B + C for the other 8")
    seed: Seed = 0


# --- the models and runs named on the command line
@dataclass
class Model:
    id: int
    name: str
    checkpoint: Path
    meta: dict
    G: Generator | None = None  # image models
    pipe: TextToImage | None = None  # text-to-image models
    classify: object = None  # attribute classifier (function) when one is cached for the data
    attributes: list[str] | None = None
    queries: dict = field(default_factory=dict)  # query -> its z vectors (3, z_dim)
    directions: dict = field(default_factory=dict)  # method -> its latent directions (directions.Directions)

    def info(self) -> dict:
        spec, config = self.meta["model_spec"], self.meta["config"]
        data = str(config.get("data", ""))
        if ":" in data:  # folder:PATH and the like: the folder's name only, no path travels
            data = data.split(":", 1)[0] + ":" + Path(data.split(":", 1)[1]).name
        common = {"id": self.id, "name": self.name, "model": spec.get("model"), "data": data,
                  "step": self.meta.get("step")}
        if self.pipe is not None:
            s1, s2 = self.pipe.stage1, self.pipe.stage2
            return common | {"kind": "text", "image_size": (s2 or s1).image_size, "channels": s1.channels,
                             "stages": [s1.image_size] + ([s2.image_size] if s2 is not None else []),
                             "max_prompt": MAX_CAPTION}
        G = self.G
        return common | {"kind": "image", "image_size": G.image_size, "channels": G.channels, "z_dim": G.z_dim,
                         "classes": G.classes, "attributes": self.attributes,
                         "directions": {method: len(found) for method, found in self.directions.items()}}


@dataclass
class Run:
    id: int
    name: str
    folder: RunFolder
    tail: StatsTail = field(init=False)  # stats.jsonl as it grows: each read parses only what was appended

    def __post_init__(self):
        self.tail = StatsTail(self.folder.stats_path)

    def info(self) -> dict:
        """Its state (reads the file system: call it off the event loop)."""
        stats = self.folder.stats_path
        mtime = stats.stat().st_mtime if stats.is_file() else None
        panels = self.folder.panels()
        last = self.tail.read().lines[-1:]
        return {"id": self.id, "name": self.name,
                "training": mtime is not None and time.time() - mtime < TRAINING_WINDOW_S,
                "stats_version": stats.stat().st_mtime_ns if mtime is not None else 0,
                "last": last[0] if last else None,
                "panel": panels[-1].name if panels else None,
                "panel_version": panels[-1].stat().st_mtime_ns if panels else 0}


def distinct_names(paths: list[Path]) -> list[str]:
    """Each path's last part, with as many of its parent folders as it takes to tell apart paths whose last
    parts are equal (runs/a/00000-dcgan-digits and runs/b/00000-dcgan-digits: a/00000-... and b/00000-...)."""
    depth = [1] * len(paths)
    while True:
        names = ["/".join(p.parts[-d:]) for p, d in zip(paths, depth)]
        clash = [i for i, n in enumerate(names) if names.count(n) > 1 and depth[i] < len(paths[i].parts)]
        if not clash:
            return names
        for i in clash:
            depth[i] += 1


def discover(paths: list[str | Path]) -> tuple[list[tuple[str, Path]], list[tuple[str, Path]]]:
    """(models: (name, checkpoint JSON), runs: (name, folder)) for the paths named: run folders,
    checkpoints, and folders holding run folders (one level down). Equal names get their parent folders."""
    if not paths:
        raise GanforgeError("name at least one run folder or checkpoint")
    items: list[Path] = []
    for given in paths:
        path = Path(given).expanduser().resolve()
        if not path.exists() and not path.with_suffix(".json").exists():
            raise GanforgeError(f"{given}: no such run folder or checkpoint")
        if path.is_dir() and not RunFolder(path).is_run() and not RunFolder(path).checkpoint_files() \
                and not list_checkpoints(path) and not is_model_folder(path):
            below = sorted(c for c in path.iterdir() if RunFolder(c).is_run())
            if not below:
                raise GanforgeError(f"{given}: neither a run folder, a checkpoint, nor a folder of run folders")
            items += below
        else:
            items.append(path)
    models, runs = [], []
    for path in dict.fromkeys(items):  # a path named twice is served once
        if RunFolder(path).is_run():
            runs.append(path)
        try:
            ckpt = find_checkpoint(path)
        except GanforgeError:
            if RunFolder(path).is_run():
                continue  # a run that has not saved a checkpoint yet: the monitor can still watch it
            raise
        models.append((path if path.is_dir() else ckpt.with_suffix(""), ckpt))
    model_names = distinct_names([shown for shown, _ in models])
    return [(name, ckpt) for name, (_, ckpt) in zip(model_names, models)], list(zip(distinct_names(runs), runs))


def load_model(i: int, name: str, ckpt: Path, load_attributes: bool = True) -> Model:
    sampler = load(ckpt)
    if sampler.takes("captions"):
        return Model(i, name, ckpt, sampler.meta, pipe=sampler)
    model = Model(i, name, ckpt, sampler.meta, G=sampler)
    model.directions = latent_directions(ckpt, sampler)
    data = sampler.meta["config"].get("data")
    if load_attributes and data and not sampler.conditional:
        from ganforge.metrics.classifier import attribute_scorer, classifier_path
        if classifier_path(data, attributes=True).is_file():  # never train one from here
            model.classify, model.attributes = attribute_scorer(data)
    return model


def latent_directions(ckpt: Path, G: Generator) -> dict:
    """The directions Explore's sliders move along: sefa's (found now when not kept: it needs no sampling) and those
    pca directions `ganforge directions` kept for this checkpoint. Nothing is written to the run."""
    from ganforge import directions

    if not G.takes("latent"):
        return {}
    kept = {m: directions.saved(home(ckpt), m, G.meta.get("sha256")) for m in directions.METHODS}
    if kept["sefa"] is None:
        kept["sefa"] = directions.find(G, "sefa", min(MAX_DIRECTIONS, G.latent().dims))
    return {m: d.first(MAX_DIRECTIONS) for m, d in kept.items() if d is not None}


# --- images
def png(images: torch.Tensor, nrow: int) -> bytes:
    """Float images in [-1, 1] -> one PNG grid, 2 px white gaps (fast compression)."""
    from PIL import Image
    from torchvision.utils import make_grid

    if len(images) == 1:  # make_grid leaves a single image unpadded
        images = torch.nn.functional.pad(images, (2, 2, 2, 2), value=1.0)
    grid = make_grid(images, nrow=nrow, padding=2, pad_value=1.0) if len(images) > 1 else images[0]
    array = to_uint8(grid).permute(1, 2, 0).numpy()
    buffer = io.BytesIO()
    Image.fromarray(array[..., 0] if images.shape[1] == 1 else array).save(buffer, "PNG", compress_level=1)
    return buffer.getvalue()


def png_response(data: bytes, **headers) -> Response:
    return Response(data, media_type="image/png", headers={"Cache-Control": "no-store", **headers})


# --- the bounded queue
class Busy(Exception):
    pass


class GenerationQueue:
    """At most `max_pending` jobs admitted (waiting or running), `workers` of them running in threads."""

    def __init__(self, workers: int = 1, max_pending: int = 32):
        self.executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="studio-torch")
        self.max_pending, self.pending = max_pending, 0

    async def run(self, fn, *args):
        if self.pending >= self.max_pending:
            raise Busy(f"the studio is busy: {self.pending} requests are already waiting; try again shortly")
        self.pending += 1  # only the event loop thread touches the counter
        try:
            return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)
        finally:
            self.pending -= 1


# --- who may ask
LOOPBACK = ("127.0.0.1", "localhost", "::1")
WILDCARD = ("0.0.0.0", "::", "")


def host_name(netloc: str) -> str:
    """The host of a Host header or an origin's netloc, without its port, lower case ([::1]:80 -> ::1)."""
    netloc = netloc.strip().lower()
    if netloc.startswith("["):
        return netloc[1:netloc.find("]")] if "]" in netloc else netloc
    return netloc.rsplit(":", 1)[0] if netloc.count(":") == 1 else netloc


def refusal(headers, bound: str) -> str | None:
    """Why a request with these headers is refused (403), or None. Host must name the bound address (any
    name for a studio bound to every interface); a request to the API from another origin is refused."""
    host = headers.get("host", "")
    allowed = LOOPBACK if bound.lower() in LOOPBACK else (bound.lower(),)
    if bound not in WILDCARD and host_name(host) not in allowed:
        return (f"this studio answers requests for {' or '.join(allowed)} only, not for host {host!r} "
                "(a page that renamed itself to reach it: DNS rebinding)")
    origin = headers.get("origin")
    if origin is not None and urllib.parse.urlsplit(origin).netloc.lower() != host.lower():
        return f"cross-origin request from {origin!r} refused: the studio answers its own page only"
    site = headers.get("sec-fetch-site")
    if site in ("cross-site", "same-site"):
        return f"request from another site refused (Sec-Fetch-Site: {site}): the studio answers its own page only"
    return None


# --- the app
def create_app(paths: list[str | Path], workers: int = 1, max_pending: int = 32, host: str = "127.0.0.1") -> FastAPI:
    """The studio for `paths`, answering requests addressed to `host`, the address it is served on."""
    named_models, named_runs = discover(paths)
    models = [load_model(i, name, ckpt) for i, (name, ckpt) in enumerate(named_models)]
    runs = [Run(i, name, RunFolder(folder)) for i, (name, folder) in enumerate(named_runs)]
    queue = GenerationQueue(workers, max_pending)
    curves_cache: OrderedDict = OrderedDict()
    t2i_cache: OrderedDict = OrderedDict()

    app = FastAPI(title="ganforge studio", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.queue, app.state.models, app.state.runs = queue, models, runs
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.middleware("http")
    async def _guard(request: Request, call_next):
        why = refusal(request.headers, host)
        if why and (request.url.path.startswith("/api/") or why.startswith("this studio answers")):
            return JSONResponse({"detail": why}, status_code=403)
        return await call_next(request)

    @app.exception_handler(GanforgeError)
    async def _ganforge_error(request: Request, e: GanforgeError):
        return JSONResponse({"detail": str(e)}, status_code=400)

    @app.exception_handler(Busy)
    async def _busy(request: Request, e: Busy):
        return JSONResponse({"detail": str(e)}, status_code=503, headers={"Retry-After": "1"})

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, e: RequestValidationError):
        parts = []
        for err in e.errors():
            loc = list(err.get("loc", ()))
            if loc and loc[0] in ("query", "body", "path"):
                loc = loc[1:]
            where = ".".join(str(x) for x in loc)
            parts.append(f"{where or 'request'}: {err.get('msg', 'invalid')}")
        return JSONResponse({"detail": "; ".join(parts)}, status_code=422)

    def get_model(mid: int, kind: str) -> Model:
        if not 0 <= mid < len(models):
            raise HTTPException(404, f"no model {mid}; this studio has models 0 to {len(models) - 1}"
                                if models else "this studio has no models")
        model = models[mid]
        if (kind == "text") != (model.pipe is not None):
            raise HTTPException(400, f"model {mid} ({model.name}) is "
                                + ("a text-to-image model: use its text panel" if model.pipe is not None else
                                   "not a text-to-image model: the text panel needs a StackGAN checkpoint"))
        return model

    def get_run(rid: int) -> Run:
        if not 0 <= rid < len(runs):
            raise HTTPException(404, f"no run {rid}; this studio watches " +
                                (f"runs 0 to {len(runs) - 1}" if runs else "no runs"))
        return runs[rid]

    def check_label(model: Model, label: int | None) -> int | None:
        if label is not None and not model.G.conditional:
            raise HTTPException(400, f"model {model.id} is not class-conditional; it takes no label")
        if label is not None and label >= len(model.G.classes):
            raise HTTPException(400, f"label must be in 0..{len(model.G.classes) - 1}")
        return label

    def ref_z(model: Model, ref: Ref) -> torch.Tensor:
        return noise(1, model.G.z_dim, ref.seed, start=ref.index, truncation=ref.truncation)[0]

    # --- pages and listing
    @app.get("/", include_in_schema=False)
    async def index():
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-store"})

    @app.get("/api/info")
    async def info():
        """The models and runs this studio serves, by id, and the limits of its inputs."""
        run_info = await asyncio.to_thread(lambda: [r.info() for r in runs])
        return {"models": [m.info() for m in models], "runs": run_info,
                "limits": {"n": [1, MAX_N], "seed": [str(INT64_MIN), str(INT64_MAX)], "rows": ROWS,
                           "prompt": MAX_CAPTION, "truncation": [0, 10]}}

    # --- explore
    @app.get("/api/models/{mid}/explore")
    async def explore(mid: Annotated[int, PathParam(ge=0)], seed: Annotated[Seed, Query()] = 0,
                      n: Annotated[Count, Query()] = 16, truncation: Annotated[Truncation | None, Query()] = None,
                      label: Annotated[int | None, Query(ge=0)] = None):
        """A grid of n samples of a seed (rows of ceil(sqrt(n))); a conditional model draws `label`,
        by default every class in turn."""
        model = get_model(mid, "image")
        check_label(model, label)

        def job():
            return png(model.G.sample(n, seed, label, truncation), nrow=math.ceil(math.sqrt(n)))

        columns = math.ceil(math.sqrt(n))
        return png_response(await queue.run(job), **{"X-Grid-Columns": str(columns)})

    # --- interpolate
    @app.post("/api/models/{mid}/interpolate")
    async def interpolate(mid: Annotated[int, PathParam(ge=0)], body: InterpolateBody):
        """`steps` images along the line (lerp) or great circle (slerp) from sample a to sample b,
        at positions t0 to t1 (0 is a, 1 is b); one row."""
        model = get_model(mid, "image")
        label = check_label(model, body.label if body.label is not None else body.a.label)
        labels = model.G.labels(body.steps, label or 0) if model.G.conditional else None

        def job():
            a, b = ref_z(model, body.a), ref_z(model, body.b)
            t = torch.linspace(body.t0, body.t1, body.steps).unsqueeze(1)
            z = (slerp if body.method == "slerp" else lerp)(a.unsqueeze(0), b.unsqueeze(0), t)
            return png(model.G(z, labels), nrow=body.steps)

        return png_response(await queue.run(job))

    # --- latent directions
    @app.post("/api/models/{mid}/directions")
    async def move(mid: Annotated[int, PathParam(ge=0)], body: DirectionsBody):
        """The samples `refs`, each moved along the model's latent directions (`method`) by `amounts` (one per
        direction, strongest first; fewer leave the rest at 0); one row."""
        model = get_model(mid, "image")
        found = model.directions.get(body.method)
        if found is None:
            raise HTTPException(400, f"model {mid} has no {body.method} directions (find them with: ganforge "
                                f"directions RUN --method {body.method}); it has: {', '.join(model.directions)}")
        if len(body.amounts) > len(found):
            raise HTTPException(422, f"amounts: {len(body.amounts)} given, but model {mid} has {len(found)} "
                                f"{body.method} directions")
        labels = [check_label(model, r.label if r.label is not None else body.label) for r in body.refs]
        y = torch.tensor([label or 0 for label in labels]) if model.G.conditional else None

        def job():
            latent = model.G.to_latent(torch.stack([ref_z(model, r) for r in body.refs])) + found.shift(body.amounts)
            return png(model.G.draw_latent(latent, y), nrow=len(body.refs))

        return png_response(await queue.run(job))

    # --- arithmetic
    @app.post("/api/models/{mid}/arithmetic")
    async def arithmetic(mid: Annotated[int, PathParam(ge=0)], body: ArithmeticBody):
        """A - B + C as a 3x3 grid: the result itself first, then it plus `noise`-scaled N(0, I) noise.
        A term is the average latent (z, or w for a G with a mapping network) of its samples, or of the 3 best
        answers to an attribute query."""
        model = get_model(mid, "image")
        if model.G.conditional:
            raise HTTPException(400, "arithmetic works on unconditional generators (dcgan, mlp)")
        for term in (body.a, body.b, body.c):
            if term.query is not None and model.classify is None:
                raise HTTPException(400, f"model {mid} has no attribute classifier cached for its data "
                                    f"({model.meta.get('config', {}).get('data')}); attribute queries are off")

        def term_latent(term: Term) -> torch.Tensor:
            if term.refs is not None:
                return model.G.to_latent(torch.stack([ref_z(model, r) for r in term.refs])).mean(0)
            if term.query not in model.queries:
                concept = query_concept(model.G, model.classify, model.attributes, term.query, 3, QUERY_POOL)
                if len(model.queries) >= 64:
                    model.queries.pop(next(iter(model.queries)))
                model.queries[term.query] = concept.latent
            return model.queries[term.query].mean(0)

        def job():
            result = term_latent(body.a) - term_latent(body.b) + term_latent(body.c)
            return png(model.G.draw_latent(around(model.G, result, 9, body.noise, body.seed)), nrow=3)

        return png_response(await queue.run(job))

    # --- text to image
    @app.get("/api/models/{mid}/text")
    async def text(mid: Annotated[int, PathParam(ge=0)],
                   prompt: Annotated[str, Query(min_length=1, max_length=MAX_CAPTION)],
                   stage: Annotated[int, Query(ge=1, le=2)] = 1, seed: Annotated[Seed, Query()] = 0,
                   n: Annotated[Count, Query()] = 8):
        """n images for a prompt from a StackGAN checkpoint, Stage-I's (stage=1) or Stage-II's (stage=2)."""
        model = get_model(mid, "text")
        try:
            check_text(prompt)
        except ValueError as e:
            raise HTTPException(422, f"prompt: {e}") from None
        caption = check_captions([prompt])[0]
        if stage == 2 and model.pipe.stage2 is None:
            raise HTTPException(400, f"model {mid} is a Stage-I checkpoint: it has no Stage-II")

        def job():
            key = (mid, caption, seed, n)
            if key not in t2i_cache:
                t2i_cache[key] = model.pipe([caption], n, seed)
                while len(t2i_cache) > 8:
                    t2i_cache.popitem(last=False)
            coarse, fine = t2i_cache[key]
            return png(coarse if stage == 1 else fine, nrow=n)

        unknown = model.pipe.encoder.unknown_words(caption)
        return png_response(await queue.run(job), **{"X-Unknown-Words": ",".join(unknown).encode("ascii", "replace")
                                                      .decode()})

    # --- training monitor
    @app.get("/api/runs/{rid}")
    async def run_status(rid: Annotated[int, PathParam(ge=0)]):
        """A run's state: whether it is training now, its last stats line, versions of its figures."""
        return await asyncio.to_thread(get_run(rid).info)

    @app.get("/api/runs/{rid}/stats")
    async def run_stats(rid: Annotated[int, PathParam(ge=0)], after: Annotated[int, Query(ge=-1)] = -1):
        """Its stats.jsonl lines with step > after."""
        stats = await asyncio.to_thread(get_run(rid).tail.read)  # only what was appended is parsed
        return [s for s in stats.lines if s["step"] > after]

    @app.get("/api/runs/{rid}/figure/{name}")
    async def run_figure(rid: Annotated[int, PathParam(ge=0)], name: Literal["curves", "latest", "progress"]):
        """A figure of the run: its loss curves (drawn from stats.jsonl now), its latest samples panel,
        or progress.png."""
        run = get_run(rid)
        if name == "latest":
            panels = run.folder.panels()
            if not panels:
                raise HTTPException(404, f"run {rid} ({run.name}) has no samples panel yet")
            return png_response(panels[-1].read_bytes(), **{"X-Panel": panels[-1].name})
        if name == "progress":
            path = run.folder.progress_path
            if not path.is_file():
                raise HTTPException(404, f"run {rid} ({run.name}) has no progress.png yet")
            return png_response(path.read_bytes())
        stats_path = run.folder.stats_path
        if not stats_path.is_file():
            raise HTTPException(404, f"run {rid} ({run.name}) has no stats yet")
        key = (rid, stats_path.stat().st_mtime_ns)
        if key not in curves_cache:
            curves_cache[key] = await queue.run(render_curves, run)
            while len(curves_cache) > 4:
                curves_cache.popitem(last=False)
        return png_response(curves_cache[key])

    return app


def render_curves(run: Run) -> bytes:
    from ganforge.losses import LOSSES
    from ganforge.plots import plot_curves

    config = run.folder.config()
    loss, target = config.get("loss"), config.get("ada_target") if config.get("ada") else None
    stats = run.tail.read()
    if not stats.train:
        raise GanforgeError(f"run {run.id} ({run.name}) has logged no losses yet")
    buffer = io.BytesIO()
    plot_curves(stats, buffer, title=f"{run.name}: the contest ({loss or '?'})",
                probabilities=LOSSES[loss].logits if loss in LOSSES else True, ada_target=target)
    return buffer.getvalue()


def serve(paths: list[str], host: str = "127.0.0.1", port: int = 7860, threads: int | None = None) -> None:
    """Build the app and serve it with uvicorn until Ctrl-C."""
    import sys

    import uvicorn

    torch.set_num_threads(threads or max(1, min(4, (os.cpu_count() or 2) // 2)))
    app = create_app(paths, host=host)
    if host not in ("127.0.0.1", "localhost", "::1"):
        print(f"warning: serving on {host}: anyone who can reach this address can use the studio "
              "(it has no login); bind to 127.0.0.1 unless you mean it", file=sys.stderr)
    shown = f"[{host}]" if ":" in host else host
    print(f"ganforge studio: {len(app.state.models)} model(s), {len(app.state.runs)} run(s) at "
          f"http://{shown}:{port}/", flush=True)
    uvicorn.run(app, host=host, port=port, log_level="warning", limit_concurrency=256)
