"""Training and sampling throughput of ganforge next to a textbook loop over the same networks.

The textbook loop is the pytorch/examples DCGAN loop as its users run it: a torchvision dataset
(ToTensor + Normalize) through a DataLoader (2 workers, shuffled, restarted every epoch), `.item()` on every statistic
and a log line every step, D's weights receiving gradients in the G step. ganforge's loop keeps
the data as one uint8 tensor, reads its statistics every `log_every` steps and freezes D in the
G step. Both run the same networks, batch and optimizer settings in this one process.

Also printed: the DCGAN step's FLOP utilisation (FLOPs from torch.utils.flop_counter per second,
over the fp32 matmul FLOP/s measured here and now) and peak memory.

    python benchmarks/throughput.py [--steps 100] [--rounds 3] [--batch-size 64] [--smoke]

Writes benchmarks/results/throughput.json (with the command, commit, date, processor); --smoke writes nothing.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import resource
import struct
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import torchvision
from common import run_record, write_results
from torch.utils.flop_counter import FlopCounterMode

from ganforge.config import TrainConfig
from ganforge.data import load_data, to_float
from ganforge.sampling import Generator
from ganforge.state import TrainState, epoch_order
from ganforge.stats import Collector, collecting
from ganforge.training import train_step


def matmul_flops(device: str, n: int = 2048, repeats: int = 10, rounds: int = 3) -> float:
    """fp32 matmul FLOP/s, the best of a few rounds: the practical ceiling for dense work."""
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    a @ b
    best = 0.0
    for _ in range(rounds):
        sync(device)
        start = time.perf_counter()
        for _ in range(repeats):
            a @ b
        sync(device)
        best = max(best, 2 * n ** 3 * repeats / (time.perf_counter() - start))
    return best


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


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
            train_step(trainer, real.contiguous(memory_format=trainer.memory_format), None)
            if i % cfg.log_every == 0:
                collector.read()
        collector.read()
    return steps * cfg.batch_size / (time.perf_counter() - start)


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
        train_step(trainer, real.contiguous(memory_format=trainer.memory_format), None)
    return counter.get_total_flops()


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=100, help="timed steps per round")
    parser.add_argument("--batch-size", type=int, default=TrainConfig.batch_size)
    parser.add_argument("--models", nargs="+", default=["mlp", "dcgan"], choices=["mlp", "dcgan"])
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds; medians are printed")
    parser.add_argument("--workers", type=int, default=2, help="textbook DataLoader workers (pytorch/examples: 2)")
    parser.add_argument("--smoke", action="store_true", help="3 steps, 1 round, no workers: does the script run?")
    args = parser.parse_args(argv)
    if args.smoke:
        args.steps, args.rounds, args.workers = 3, 1, 0
    torch.manual_seed(0)
    data = load_data("digits")
    matmul = matmul_flops("cpu", n=256 if args.smoke else 2048)
    record = run_record("throughput") | {"smoke": args.smoke, "batch_size": args.batch_size, "steps": args.steps,
                                         "rounds": args.rounds, "textbook_workers": args.workers,
                                         "fp32_matmul_gflops": matmul / 1e9, "models": {}}
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; fp32 matmul 2048^2: {matmul / 1e9:.0f} GFLOP/s")
    print(f"batch {args.batch_size}, 28x28 bundled digits; training: median of {args.rounds} alternating rounds "
          f"of {args.steps} steps; textbook DataLoader with {args.workers} workers\n")
    print(f"{'':28}{'ganforge':>12}{'textbook':>12}{'ratio':>8}")
    with tempfile.TemporaryDirectory() as tmp:
        write_torchvision_mnist(Path(tmp), data.images[:, 0].numpy(), data.labels.numpy())
        for model in args.models:
            cfg = TrainConfig(model=model, batch_size=args.batch_size)
            # both loops train the same networks; rounds alternate so drifts of the machine hit both
            # (the textbook keeps PyTorch's default memory layout, as the textbook does)
            ours_trainer = TrainState(cfg, Path(tmp), data)
            textbook_trainer = TrainState(dataclasses.replace(cfg, channels_last=False), Path(tmp), data)
            rates = [(ganforge_train(ours_trainer, args.steps),
                      textbook_train(textbook_trainer, Path(tmp), args.steps, args.workers))
                     for _ in range(args.rounds)]
            ours, textbook = (float(np.median(r)) for r in zip(*rates))
            print(f"{model + ' training, images/s':28}{ours:12.0f}{textbook:12.0f}{ours / textbook:8.2f}")
            trainer = TrainState(cfg, Path(tmp), data)
            ours_s, textbook_s = sampling_rates(trainer.G, cfg.z_dim, n=256 if args.smoke else 2048)
            print(f"{model + ' sampling, images/s':28}{ours_s:12.0f}{textbook_s:12.0f}{ours_s / textbook_s:8.2f}")
            result = {"train_images_per_s": ours, "textbook_train_images_per_s": textbook, "train_ratio": ours / textbook,
                      "train_rounds": rates, "sample_images_per_s": ours_s, "textbook_sample_images_per_s": textbook_s,
                      "sample_ratio": ours_s / textbook_s}
            if model == "dcgan":
                flops = step_flops(trainer)
                achieved = flops * ours / args.batch_size
                result |= {"mflop_per_image": flops / args.batch_size / 1e6, "achieved_gflops": achieved / 1e9,
                           "matmul_utilisation": achieved / matmul}
                print(f"\ndcgan step: {flops / args.batch_size / 1e6:.1f} MFLOP per image, "
                      f"{achieved / 1e9:.1f} GFLOP/s = {achieved / matmul:.0%} of the matmul rate")
            record["models"][model] = result
    record["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak memory (max RSS): {record['peak_rss_mb']:.0f} MB")
    if not args.smoke:
        print(f"results: {write_results('throughput', record)}")
    return record


if __name__ == "__main__":
    main()
