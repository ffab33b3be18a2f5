"""Training and sampling throughput of ganforge next to a textbook loop over the same networks.

The textbook loop is the pytorch/examples DCGAN loop as its users run it: a torchvision dataset
(ToTensor + Normalize) through a DataLoader (2 workers, shuffled, restarted every epoch), `.item()` on every statistic
and a log line every step, D's weights receiving gradients in the G step. ganforge's loop keeps
the data as one uint8 tensor, reads its statistics every `log_every` steps and freezes D in the
G step. Both run the same networks, batch and optimizer settings in this one process.

The DCGAN is also trained in each of `--precisions` (default: fp32, and bf16 where `--precision auto` chooses it),
each with its FLOP utilisation: FLOPs from torch.utils.flop_counter per second, over the matrix-product FLOP/s of
that precision measured here and now. And at `--baseline-width` without depth (widths 64 and depth 0: the DCGAN
paper's nets, ganforge's default before), for the speed-up of today's default against it. Then where the default step's time goes, by torch.profiler.
Peak memory is printed too.

    python benchmarks/throughput.py [--steps 100] [--rounds 3] [--batch-size 64] [--precisions fp32 bf16] [--smoke]

With --data and --image-size (any source at any size but the digits at 28), the image models of --models (default
dcgan and light) are trained on it instead, in each precision, rounds alternating between all of them: images/s,
FLOPs per image and their rate as a share of the precision's matrix-product rate, the step's operators by
torch.profiler for each model (no textbook loop: it reads the digits only).

    python benchmarks/throughput.py --data faces --image-size 64 [--models dcgan light] [--steps 30]

Writes benchmarks/results/throughput.json, or throughput-DATA-SIZE.json (with the command, commit, date,
processor); --smoke writes nothing.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import resource
import struct
import tempfile
import time
from functools import partial
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import torchvision
from common import run_record, write_results
from torch.profiler import ProfilerActivity, profile, record_function
from torch.utils.flop_counter import FlopCounterMode

from ganforge.config import TrainConfig, make_config
from ganforge.data import load_data, to_float
from ganforge.hardware import choose_precision, matmul_rate
from ganforge.phases import Batch
from ganforge.sampling import Generator
from ganforge.state import TrainState, epoch_order
from ganforge.stats import Collector, collecting
from ganforge.training import train_step

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def write_torchvision_mnist(root: Path, images: np.ndarray, labels: np.ndarray) -> None:
    """The bundled digits in torchvision's MNIST layout, so torchvision.datasets.MNIST reads them."""
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    (raw / "train-images-idx3-ubyte").write_bytes(bytes([0, 0, 8, 3]) + struct.pack(">3i", *images.shape)
                                                  + images.tobytes())
    (raw / "train-labels-idx1-ubyte").write_bytes(bytes([0, 0, 8, 1]) + struct.pack(">i", len(labels))
                                                  + labels.astype(np.uint8).tobytes())
    for name in ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):  # torchvision checks they exist
        (raw / name).write_bytes((raw / name.replace("t10k", "train")).read_bytes())


def textbook_train(trainer: TrainState, root: Path, steps: int, workers: int) -> float:
    """images/s of the pytorch/examples-style loop over the trainer's networks, with its own plain Adam."""
    cfg, G, D = trainer.cfg, trainer.G, trainer.D
    opt_g = torch.optim.Adam(G.parameters(), lr=cfg.lr_g, betas=(cfg.beta1, cfg.beta2))
    opt_d = torch.optim.Adam(D.parameters(), lr=cfg.lr_d, betas=(cfg.beta1, cfg.beta2))
    transform = torchvision.transforms.Compose([torchvision.transforms.ToTensor(),
                                                torchvision.transforms.Normalize((0.5,), (0.5,))])
    dataset = torchvision.datasets.MNIST(str(root), train=True, transform=transform)
    loader = torch.utils.data.DataLoader(dataset, batch_size=cfg.batch_size, shuffle=True, num_workers=workers,
                                         drop_last=True)
    log = io.StringIO()
    done, start = -3, None  # 3 warm-up steps
    while done < steps:
        for real, _ in loader:
            if done == 0:
                start = time.perf_counter()
            D.zero_grad()
            label = torch.full((len(real),), 1.0)
            output = D(real)
            err_real = F.binary_cross_entropy_with_logits(output, label)
            err_real.backward()
            d_x = torch.sigmoid(output).mean().item()
            fake = G(torch.randn(len(real), cfg.z_dim))
            label.fill_(0.0)
            output = D(fake.detach())
            err_fake = F.binary_cross_entropy_with_logits(output, label)
            err_fake.backward()
            d_g_z1 = torch.sigmoid(output).mean().item()
            opt_d.step()
            G.zero_grad()
            label.fill_(1.0)
            output = D(fake)
            err_g = F.binary_cross_entropy_with_logits(output, label)
            err_g.backward()
            d_g_z2 = torch.sigmoid(output).mean().item()
            opt_g.step()
            print(f"Loss_D: {(err_real + err_fake).item():.4f} Loss_G: {err_g.item():.4f} D(x): {d_x:.4f} "
                  f"D(G(z)): {d_g_z1:.4f} / {d_g_z2:.4f}", file=log)
            done += 1
            if done == steps:
                break
    return steps * cfg.batch_size / (time.perf_counter() - start)


def ganforge_train(trainer: TrainState, steps: int) -> float:
    """images/s of ganforge's step on in-memory uint8 data, one host sync per `log_every` steps."""
    images, cfg = trainer.data.images, trainer.cfg
    order = epoch_order(len(images), 0, 0)
    # the step reports its statistics (d_loss, g_loss, D(x), D(G(z))) into a collector on the device, as in
    # ganforge's loop, which reads them (the host sync) every log_every steps
    with collecting(Collector(trainer.device)) as collector:
        for i in range(-3, steps):
            if i == 0:
                start = time.perf_counter()
            j = i % trainer.steps_per_epoch
            real = to_float(images[order[j * cfg.batch_size:(j + 1) * cfg.batch_size]])
            train_step(trainer, Batch(real.to(trainer.device, memory_format=trainer.memory_format), None, j, 0))
            if i % cfg.log_every == 0:
                collector.read()
        collector.read()
    return steps * cfg.batch_size / (time.perf_counter() - start)


def step_profile(trainer: TrainState, steps: int, top: int = 12) -> list[dict]:
    """Where the step's time goes: torch.profiler over `steps` steps, the `top` operators by their own CPU time,
    each with its share of the whole (the rest, Python and the loop, is what the operators leave)."""
    images, cfg = trainer.data.images, trainer.cfg
    order = epoch_order(len(images), 0, 0)
    with collecting(Collector(trainer.device)), profile(activities=[ProfilerActivity.CPU]) as prof:
        start = time.perf_counter()
        for i in range(steps):
            with record_function("data"):
                real = to_float(images[order[i * cfg.batch_size:(i + 1) * cfg.batch_size]])
                real = real.to(trainer.device, memory_format=trainer.memory_format)
            train_step(trainer, Batch(real, None, i, 0))
        wall = time.perf_counter() - start
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    return [{"op": e.key, "share": e.self_cpu_time_total / 1e6 / wall, "calls_per_step": e.count / steps}
            for e in events[:top]]


def sampling_rates(G, z_dim: int, n: int = 2048, batch: int = 64) -> tuple[float, float]:
    """(ganforge's sample(), textbook: G(noise) with autograd on, batch by batch) in images/s."""
    sampler = Generator(G)
    sampler.sample(256)
    start = time.perf_counter()
    sampler.sample(n)
    ours = n / (time.perf_counter() - start)
    start = time.perf_counter()
    for _ in range(n // batch):
        G(torch.randn(batch, z_dim)).detach()
    return ours, n // batch * batch / (time.perf_counter() - start)


def step_flops(trainer: TrainState) -> int:
    real = torch.randn(trainer.cfg.batch_size, *trainer.data.shape)
    with FlopCounterMode(display=False) as counter:
        train_step(trainer, Batch(real.to(trainer.device, memory_format=trainer.memory_format), None, None, 0))
    return counter.get_total_flops()


def median_rates(runs, rounds: int) -> list[float]:
    """Each callable's images/s, the median of `rounds` rounds that alternate between them, so that drifts of the
    machine hit every one alike."""
    rates = [[run() for run in runs] for _ in range(rounds)]
    return [float(np.median(r)) for r in zip(*rates)]


def image_sizes_run(args, precisions: list[str], matmul: dict[str, float], record: dict) -> dict:
    """--data at --image-size: each model of --models in each precision, side by side (see the docstring)."""
    models = args.models or ["dcgan", "light"]
    data = load_data(args.data, args.image_size)
    print(f"batch {args.batch_size}, {args.data} at {data.shape[-1]}x{data.shape[-1]}; median of {args.rounds} "
          f"alternating rounds of {args.steps} steps\n")
    record |= {"data": args.data, "image_size": data.shape[-1], "device": args.device, "models": {}}
    with tempfile.TemporaryDirectory() as tmp:
        trainers = {(model, p): TrainState(make_config(overrides={"model": model, "data": args.data, "precision": p,
                                                                  "image_size": args.image_size, "device": args.device,
                                                                  "batch_size": args.batch_size}), Path(tmp), data)
                    for model in models for p in precisions}
        rates = median_rates([partial(ganforge_train, t, args.steps) for t in trainers.values()], args.rounds)
        for ((model, precision), trainer), rate in zip(trainers.items(), rates):
            flops = step_flops(trainer)
            achieved = flops * rate / args.batch_size
            share = achieved / matmul[precision] if args.device == "cpu" else None  # the matrix rate is the CPU's
            row = {"train_images_per_s": rate, "gflop_per_image": flops / args.batch_size / 1e9,
                   "achieved_gflops": achieved / 1e9, "matmul_utilisation": share,
                   "g_params": sum(p.numel() for p in trainer.G.parameters()),
                   "d_params": sum(p.numel() for p in trainer.D.parameters())}
            record["models"].setdefault(model, {"spec": trainer.spec, "precisions": {}})["precisions"][precision] = row
            print(f"{model:8}{precision:6}{rate:8.0f} images/s  {row['gflop_per_image']:.3f} GFLOP per image, "
                  f"{achieved / 1e9:.0f} GFLOP/s" + (f" = {share:.0%} of the {precision} matrix-product rate" if share else ""))
        for model in models:  # in auto's choice of precision
            rows = step_profile(trainers[model, precisions[-1]], 3 if args.smoke else 20)
            record["models"][model]["profile"] = {"precision": precisions[-1], "ops": rows}
            print(f"\nwhere the {model} step's time goes ({precisions[-1]}):")
            for row in rows[:8]:
                print(f"  {row['op'][:40]:42}{row['share']:6.1%}  {row['calls_per_step']:5.1f} calls/step")
    return record


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=100, help="timed steps per round")
    parser.add_argument("--batch-size", type=int, default=TrainConfig.batch_size)
    parser.add_argument("--data", default="digits", help="a data source; with --image-size: see the docstring")
    parser.add_argument("--image-size", type=int, help="the images' size (default: the data's own)")
    parser.add_argument("--device", default="cpu", help="with --image-size: where the models train (cpu, cuda)")
    parser.add_argument("--models", nargs="+", choices=["mlp", "dcgan", "light"],
                        help="default: mlp and dcgan on the digits, else dcgan and light")
    parser.add_argument("--precisions", nargs="+", choices=["fp32", "bf16", "fp16"],
                        help="the DCGAN's precisions (default: fp32, and bf16 where --precision auto chooses it)")
    parser.add_argument("--baseline-width", type=int, default=64, help="the DCGAN's widths to compare with; 0: none")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds; medians are printed")
    parser.add_argument("--workers", type=int, default=2, help="textbook DataLoader workers (pytorch/examples: 2)")
    parser.add_argument("--smoke", action="store_true", help="3 steps, 1 round, no workers: does the script run?")
    args = parser.parse_args(argv)
    if args.smoke:
        args.steps, args.rounds, args.workers = 3, 1, 0
    auto = choose_precision(torch.device("cpu"))
    precisions = args.precisions or sorted({"fp32", auto[0]}, key=["fp32", "bf16"].index)
    torch.manual_seed(0)
    data = load_data("digits")
    size, seconds = (256, 0.05) if args.smoke else (2048, 1.0)
    matmul = {p: max(matmul_rate(DTYPES[p], size, seconds) for _ in range(args.rounds if p == auto[0] else 1)) * 1e9
              for p in precisions if args.device == "cpu"}  # one round for a precision auto does not choose: emulated
    record = run_record("throughput") | {"smoke": args.smoke, "batch_size": args.batch_size, "steps": args.steps,
                                         "rounds": args.rounds, "textbook_workers": args.workers,
                                         "auto_precision": {"precision": auto[0], "why": auto[1]},
                                         "matmul_gflops": {p: r / 1e9 for p, r in matmul.items()}, "models": {}}
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; matrix products {size}^2: "
          + ", ".join(f"{p} {r / 1e9:,.1f} GFLOP/s" for p, r in matmul.items()) + f"\n--precision auto: {auto[0]} ({auto[1]})")
    if args.data != "digits" or args.image_size not in (None, 28):
        image_sizes_run(args, precisions, matmul, record)
        if not args.smoke:
            name = f"throughput-{args.data}-{record['image_size']}" + ("" if args.device == "cpu" else f"-{args.device}")
            print(f"results: {write_results(name, record)}")
        return record
    args.models = args.models or ["mlp", "dcgan"]
    print(f"batch {args.batch_size}, 28x28 bundled digits; training: median of {args.rounds} alternating rounds "
          f"of {args.steps} steps; textbook DataLoader with {args.workers} workers (fp32)\n")
    print(f"{'':34}{'ganforge':>12}{'textbook':>12}{'ratio':>8}")
    with tempfile.TemporaryDirectory() as tmp:
        write_torchvision_mnist(Path(tmp), data.images[:, 0].numpy(), data.labels.numpy())
        for model in args.models:
            cfg = make_config(overrides={"model": model, "batch_size": args.batch_size, "precision": "fp32"})
            # both loops train the same networks (the textbook keeps PyTorch's default memory layout, as it does)
            trainers = {p: TrainState(dataclasses.replace(cfg, precision=p), Path(tmp), data)
                        for p in (precisions if model == "dcgan" else ["fp32"])}
            textbook_trainer = TrainState(dataclasses.replace(cfg, channels_last=False), Path(tmp), data)
            runs = [partial(ganforge_train, t, args.steps) for t in trainers.values()]
            runs.append(partial(textbook_train, textbook_trainer, Path(tmp), args.steps, args.workers))
            if model == "dcgan" and args.baseline_width:
                wide = dataclasses.replace(cfg, g_width=args.baseline_width, d_width=args.baseline_width,
                                           g_depth=0, d_depth=0)
                runs.append(partial(ganforge_train, TrainState(wide, Path(tmp), data), args.steps))
            rates = median_rates(runs, args.rounds)
            ours, textbook, baseline = rates[:len(trainers)], rates[len(trainers)], rates[len(trainers) + 1:]
            depths = list(textbook_trainer.family.depths()) if model == "dcgan" else None
            result = {"widths": [cfg.g_width, cfg.d_width], "depths": depths, "textbook_train_images_per_s": textbook,
                      "precisions": {}}
            for (precision, trainer), rate in zip(trainers.items(), ours):
                label = f"{model} training, {precision}, images/s"
                print(f"{label:34}{rate:12.0f}{textbook:12.0f}{rate / textbook:8.2f}")
                row = {"train_images_per_s": rate, "train_ratio": rate / textbook}
                if model == "dcgan":
                    flops = step_flops(trainer)
                    achieved = flops * rate / args.batch_size
                    row |= {"mflop_per_image": flops / args.batch_size / 1e6, "achieved_gflops": achieved / 1e9,
                            "matmul_utilisation": achieved / matmul[precision]}
                    print(f"{'':4}{flops / args.batch_size / 1e6:.1f} MFLOP per image, {achieved / 1e9:.1f} GFLOP/s = "
                          f"{achieved / matmul[precision]:.0%} of the {precision} matrix-product rate")
                result["precisions"][precision] = row
            if baseline:
                fastest = max(ours)
                label = f"{model} training, fp32, widths {args.baseline_width}, depth 0"
                print(f"{label:34}{baseline[0]:12.0f}{textbook:12.0f}{baseline[0] / textbook:8.2f}")
                print(f"{'':4}today's default (widths {cfg.g_width}, depth {depths[0]}, "
                      f"{precisions[ours.index(fastest)]}) trains {fastest / baseline[0]:.2f}x as many images/s as "
                      f"widths {args.baseline_width}, depth 0 in fp32")
                result["baseline"] = {"widths": args.baseline_width, "depths": [0, 0], "train_images_per_s": baseline[0],
                                      "train_ratio": baseline[0] / textbook, "speedup": fastest / baseline[0]}
            trainer = next(iter(trainers.values()))
            ours_s, textbook_s = sampling_rates(trainer.G, cfg.z_dim, n=256 if args.smoke else 2048)
            print(f"{model + ' sampling, images/s':34}{ours_s:12.0f}{textbook_s:12.0f}{ours_s / textbook_s:8.2f}")
            result |= {"sample_images_per_s": ours_s, "textbook_sample_images_per_s": textbook_s,
                       "sample_ratio": ours_s / textbook_s}
            record["models"][model] = result
        if "dcgan" in args.models:  # the default step (in auto's choice), operator by operator
            cfg = make_config(overrides={"batch_size": args.batch_size, "precision": auto[0]})
            rows = step_profile(TrainState(cfg, Path(tmp), data), 3 if args.smoke else 50)
            record["dcgan_profile"] = {"precision": auto[0], "ops": rows}
            print(f"\nwhere the dcgan step's time goes ({auto[0]}, batch {args.batch_size}; the operators' own "
                  "time as a share of the wall time):")
            for row in rows:
                print(f"  {row['op'][:40]:42}{row['share']:6.1%}  {row['calls_per_step']:5.1f} calls/step")
    record["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak memory (max RSS): {record['peak_rss_mb']:.0f} MB")
    if not args.smoke:
        print(f"results: {write_results('throughput', record)}")
    return record


if __name__ == "__main__":
    main()
