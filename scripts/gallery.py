"""The figures of the chapter this project grew from, remade by ganforge, and two it does not show.

    python scripts/gallery.py [--only NAME,NAME] [--force] [--list] [--smoke --out DIR]   (make gallery)

Each figure is made by the commands listed beside it (a training run, a benchmark, a drawing command),
each run in a child process that shows its own progress. A finished figure leaves its pictures and a
record (commands, budget, measured numbers, seconds, commit, date, processor) in docs/gallery/, and
docs/gallery.md is written anew from every record there. A figure whose record exists is not made again,
nor is a command that finished (its output is kept in runs/gallery/finished/); --force makes the chosen
figures again from scratch. So the gallery can be stopped with Ctrl-C and started again where it stopped.
Runs go to runs/gallery/. The whole gallery took 38 minutes (2,252 s) at commit ead635a on 2 cores of an Intel
Xeon with AMX, with the classifiers and the SSL extractor it measures with already trained (from an empty cache
they train on the way, which is not counted there); docs/gallery/total.json keeps the total, each record its part.
--smoke: a few steps of tiny models per figure, into --out (default: a temporary folder).
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
SMOKE = ["--steps", "3", "--set", "g_width=8", "--set", "d_width=8", "--set", "z_dim=8", "--set", "log_every=1"]


class Maker:
    """What a figure's recipe works with: `run` a command (recorded), and where its files go."""

    def __init__(self, docs: Path, runs: Path, smoke: bool, force: bool = False):
        self.docs, self.runs, self.smoke, self.force, self.commands = docs, runs, smoke, force, []

    def run(self, *argv: str) -> list[str]:
        """Run a command from the repository root (`ganforge ...` or `python ...`), its progress shown as it
        goes; -> the lines it printed on stdout. A failure stops the gallery, naming the command. A command that
        finished in an earlier, stopped gallery is not run again (unless --force): its printed lines are kept."""
        shown = " ".join(argv).replace(f"{ROOT}/", "")  # as typed at the repository's root
        self.commands.append(shown)
        kept = self.runs / "finished" / (hashlib.sha1(shown.encode()).hexdigest()[:16] + ".txt")
        if kept.is_file() and not self.force:
            print(f"  $ {shown}   (finished before: not run again)", flush=True)
            return kept.read_text().splitlines()
        print(f"  $ {shown}", flush=True)
        lines = self.execute(list(argv))
        kept.parent.mkdir(parents=True, exist_ok=True)
        kept.write_text("".join(line + "\n" for line in lines))
        return lines

    @staticmethod
    def execute(argv: list[str]) -> list[str]:
        """The command in a child process with this Python; -> its stdout's lines (echoed as they come)."""
        program = [sys.executable, *(["-m", "ganforge"] if argv[0] == "ganforge" else []), *argv[1:]]
        lines = []
        with subprocess.Popen(program, cwd=ROOT, stdout=subprocess.PIPE, text=True) as child:
            for line in child.stdout:
                print("    " + line, end="", flush=True)
                lines.append(line.rstrip("\n"))
        if child.returncode:
            raise SystemExit(f"gallery: `{' '.join(argv)}` failed (exit status {child.returncode}); see its output "
                             "above")
        return lines

    def train(self, name: str, *args: str, minutes: float | None = None) -> Path:
        """`ganforge train ARGS --minutes M` into runs/gallery/NAME (no M: the default budget; smoke: a few
        steps of tiny nets) -> its run folder."""
        budget = SMOKE if self.smoke else ["--minutes", f"{minutes:g}"] if minutes else []
        lines = self.run("ganforge", "train", *args, *budget, "--out", str(self.runs / name))
        return Path(lines[-1].strip())

    def eval(self, run: Path, *args: str) -> dict:
        """`ganforge eval RUN` (smoke: raw pixels, 200 samples) -> its results."""
        path = run / "gallery-eval.json"
        smoke = ["--extractor", "pixels", "--n", "200"] if self.smoke else list(args)
        self.run("ganforge", "eval", str(run), *smoke, "--json", str(path))
        return json.loads(path.read_text())

    def picture(self, source: Path, name: str) -> str:
        shutil.copyfile(source, self.docs / name)
        return name


def newest_run(folder: Path) -> Path:
    return max((p for p in folder.iterdir() if (p / "config.json").is_file()), key=lambda p: p.stat().st_mtime)


def fid_numbers(result: dict) -> dict:
    """What `ganforge eval` measured, each named with the extractor it was measured in."""
    keep = {"fid": "FID", "kid": "KID", "precision": "precision", "recall": "recall",
            "classes_covered": "classes covered", "label_accuracy": "drawn in the class asked for",
            "recall_within_class": "recall within each class (mean)"}
    return {f"{label} ({result['extractor']})": result[key] for key, label in keep.items() if key in result}


def steps(run: Path) -> int:
    """The step of a run's newest checkpoint, read from its JSON alone."""
    from ganforge.checkpoint import find_checkpoint

    return json.loads(find_checkpoint(run).read_text())["step"]


# --- the figures, in the chapter's order
def digits(m: Maker) -> dict:
    run = m.train("digits")  # the quick start's own command: the default DCGAN on the bundled digits
    result = m.eval(run, "--extractor", "classifier:digits")
    return {"pictures": [m.picture(run / "progress.png", "digits_progress.png"),
                         m.picture(run / "curves.png", "digits_curves.png")],
            "numbers": fid_numbers(result) | {"steps": steps(run)}}


def faces(m: Maker) -> dict:
    run = m.train("faces", "--data", "faces", "--image-size", "32", minutes=10)  # the attribute classifier's size
    # concepts of 10 exemplars from half of a pool of 20,000 samples: a 10-minute model draws few beards
    m.run("python", "benchmarks/arithmetic.py", "--run", str(run), "--pool", "20000", "--inversions", "10",
          *(["--smoke"] if m.smoke else []))
    report = json.loads((run / "arithmetic.json").read_text())
    pictures = [m.picture(run / "arithmetic-smile.png", "face_arithmetic.png"),
                m.picture(run / "arithmetic-glasses.png", "face_arithmetic_glasses.png")]
    m.run("ganforge", "interpolate", str(run), "--from", "3", "--to", "8", "--steps", "10", "--slerp",
          "--out", str(m.docs / "interpolation.png"))
    numbers = {f"{name}: results with the intended attributes, {k} exemplar{'s' * (k != '1')} per concept "
               f"({report['draws']} draws)": rate for name in ("smile", "glasses")
               for k, rate in report["success_rate"][name]["plain"].items()}
    return {"pictures": [*pictures, "interpolation.png"], "numbers": numbers | {"steps": report["steps"]}}


def text_to_image(m: Maker) -> dict:
    out = m.runs / "t2i"
    m.run("python", "benchmarks/text_to_image.py", "--data", "faces-captions", "--out", str(out),
          *(["--smoke"] if m.smoke else []))
    result = json.loads((newest_run(out) / "text_to_image.json").read_text())
    numbers = {}
    for stage, name in (("stage1", "Stage-I"), ("stage2", "Stage-II")):
        numbers |= {f"{name}: attributes as captioned, mean of 9": result[f"agreement_seen_{stage}_mean"],
                    f"{name}: smiles as captioned": result[f"agreement_seen_{stage}"]["smiling"],
                    f"{name}: both attributes of a held-out pair drawn": result[f"held_out_pair_drawn_{stage}"],
                    f"{name}: within-caption diversity, share of the real faces'": result[f"diversity_{stage}"]}
    numbers |= {"FID, Stage-I upsampled (attribute classifier's features)": result["fid_stage1_upsampled"],
                "FID, Stage-II": result["fid_stage2"]}
    return {"pictures": [m.picture(newest_run(out) / "text_to_image.png", "text_to_image.png")], "numbers": numbers}


def folder(m: Maker) -> dict:
    from PIL import Image

    from ganforge.data.faces import load_faces

    images = m.runs / "faces-png"
    if not (images / "done").is_file():  # the faces written out once, as a user's folder of PNG files
        images.mkdir(parents=True, exist_ok=True)
        faces = load_faces(200 if m.smoke else None).images.permute(0, 2, 3, 1).numpy()
        for i, face in enumerate(faces):
            Image.fromarray(face).save(images / f"{i:05d}.png")
        (images / "done").touch()
    run = m.train("folder", "--data", f"folder:{images}", "--image-size", "64", minutes=8)  # depth 0 at 64 pixels
    m.run("ganforge", "sample", str(run), "--n", "64", "--out", str(m.docs / "folder_samples.png"))
    result = m.eval(run, "--data", "faces", "--extractor", "ssl:faces")  # the faces have attributes, no classes
    return {"pictures": ["folder_samples.png"], "numbers": fid_numbers(result) | {"steps": steps(run)}}


def conditional(m: Maker) -> dict:
    run = m.train("cgan", "--model", "cgan", "--data", "fashion-mnist", minutes=5)
    m.run("ganforge", "sample", str(run), "--grid-by-class", "--out", str(m.docs / "cgan_grid.png"))
    result = m.eval(run, "--extractor", "classifier:fashion-mnist")
    return {"pictures": ["cgan_grid.png"], "numbers": fid_numbers(result) | {"steps": steps(run)}}


@dataclass
class Figure:
    name: str
    title: str
    budget: str
    make: Callable[[Maker], dict]


FIGURES = [
    Figure("digits", "Forgeries of handwritten digits sharpening over training, and the contest itself",
           "the quick start's `ganforge train`: about 3 minutes", digits),
    Figure("faces", "Face arithmetic, the chapter's two analogies: [smiling, long hair] - [neutral, long hair] + "
           "[neutral, beard] = [smiling, beard], and [glasses, beard] - [beard] + [long hair] = [glasses, long hair]; "
           "and a walk between two faces", "10 minutes of training at 32x32", faces),
    Figure("text_to_image", "Text to image: Stage-I and Stage-II side by side, captions of held-out attribute pairs",
           "the benchmark's 2,500 Stage-I and 600 Stage-II steps", text_to_image),
    Figure("folder", "64x64 RGB forgeries from a folder of images (the faces, written out as PNG files)",
           "8 minutes of training, the DCGAN paper's nets (depth 0) at widths 32", folder),
    Figure("conditional", "Class-conditional Fashion-MNIST: a row per class", "5 minutes of training", conditional),
]


def record(figure: Figure, made: dict, maker: Maker, seconds: float) -> dict:
    from common import described, git_commit, processor

    return {"name": figure.name, "title": figure.title, "budget": figure.budget, "commands": maker.commands,
            "seconds": round(seconds), "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "git": git_commit(), "processor": described(processor()), **made}


def number(value) -> str:
    """Three significant figures, but whole numbers from 1,000 up (an FID of 1,116, not 1.12e+03)."""
    if isinstance(value, float):
        return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:,.3g}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def write_page(docs: Path, page: Path) -> None:
    """docs/gallery.md from every figure's record in `docs`, in the gallery's order."""
    parts = ["# Gallery\n",
             ("The figures of the chapter this project grew from, remade by `make gallery` (scripts/gallery.py), "
             "each by the commands listed under it, and two the chapter does not show. Numbers are as the "
             "commands measured them on the machine named.\n"), "[Back to the README](../README.md)\n"]
    records = {f.name: json.loads(p.read_text()) for f in FIGURES if (p := docs / f"{f.name}.json").is_file()}
    parts.append("Each section names the machine, the date and the commit its figure was made at, and links the "
                 "figure's record (docs/gallery/NAME.json), where its numbers are kept.\n")
    commits = {(r["git"]["commit"], r["processor"]) for r in records.values()}
    if len(records) == len(FIGURES) and len(commits) == 1:
        (commit, machine), = commits
        seconds = sum(r["seconds"] for r in records.values())
        total = {"commit": commit, "processor": machine, "seconds": seconds, "minutes": round(seconds / 60)}
        (docs / "total.json").write_text(json.dumps(total, indent=1) + "\n")
        parts.append(f"Every figure was made at commit {(commit or '?')[:7]} on {machine}: "
                     f"{seconds:,} s ({total['minutes']} minutes) in all ([total]({docs.name}/total.json)).\n")
    else:  # a total of figures made at other commits or machines would not be one run's
        (docs / "total.json").unlink(missing_ok=True)
    for figure in FIGURES:
        made = records.get(figure.name)
        if made is None:
            parts.append(f"## {figure.title}\n\nNot made yet: `python scripts/gallery.py --only {figure.name}`.\n")
            continue
        lines = [f"## {figure.title}\n", (f"Budget: {made['budget']}; made in {made['seconds']:,} s on "
                 f"{made['processor']}, {made['date'][:10]}, commit {(made['git']['commit'] or '?')[:7]} "
                 f"([record]({docs.name}/{figure.name}.json)).\n"),
                 "```bash", *made["commands"], "```\n"]
        if made["numbers"]:
            lines += ["| measured | value |", "|---|---:|", *(f"| {k} | {number(v)} |" for k, v in made["numbers"].items()), ""]
        lines += [f"![{figure.name}]({docs.name}/{p})\n" for p in made["pictures"]]
        parts.append("\n".join(lines))
    page.write_text("\n".join(parts))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", help="these figures only (comma-separated names; --list shows them)")
    parser.add_argument("--force", action="store_true", help="make the chosen figures again even when made")
    parser.add_argument("--list", action="store_true", help="list the figures and whether each is made")
    parser.add_argument("--smoke", action="store_true", help="a few steps of tiny models: does every figure work?")
    parser.add_argument("--out", type=Path, help="the docs folder (default: docs; smoke: a temporary folder)")
    args = parser.parse_args(argv)
    docs_root = args.out or (Path(tempfile.mkdtemp(prefix="ganforge-gallery-")) if args.smoke else ROOT / "docs")
    docs, page = docs_root / "gallery", docs_root / "gallery.md"
    runs = docs_root / "runs" if args.smoke else ROOT / "runs" / "gallery"
    names = [f.name for f in FIGURES]
    chosen = args.only.split(",") if args.only else names
    if unknown := [n for n in chosen if n not in names]:
        raise SystemExit(f"--only: no figure named {', '.join(unknown)}; the figures are {', '.join(names)}")
    if args.list:
        for f in FIGURES:
            print(f"{f.name:14} {'made' if (docs / f'{f.name}.json').is_file() else 'to make':8} {f.title}")
        return
    docs.mkdir(parents=True, exist_ok=True)
    todo = [f for f in FIGURES if f.name in chosen and (args.force or not (docs / f"{f.name}.json").is_file())]
    for f in FIGURES:
        if f.name in chosen and f not in todo:
            print(f"{f.name}: made already ({docs / f.name}.json); --force makes it again")
    for i, figure in enumerate(todo, 1):
        print(f"[{i}/{len(todo)}] {figure.name}: {figure.title} ({figure.budget})", flush=True)
        maker, started = Maker(docs, runs, args.smoke, args.force), time.perf_counter()
        made = figure.make(maker)
        path = docs / f"{figure.name}.json"
        path.write_text(json.dumps(record(figure, made, maker, time.perf_counter() - started), indent=1) + "\n")
        write_page(docs, page)
        print(f"[{i}/{len(todo)}] {figure.name}: done in {(time.perf_counter() - started) / 60:.1f} minutes", flush=True)
    write_page(docs, page)
    print(page)


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        raise SystemExit("\ngallery: stopped; the figures made so far are kept, and the next run makes the rest")
