"""DRÆM benchmark: training-step time and inference throughput at 256x256.

``python -m polar_detect.bench.draem [--size 256] [--steps 3] [--device auto]`` prints the
machine and a table for the paper widths (128/64) and the small preset (16/8). A training
step = simulated batch already in memory -> forward, DRÆM loss, backward, Adam step
(AMP on CUDA). Inference = network + 21x21 score head, ``torch.no_grad``, eval mode.
"""
from __future__ import annotations

import argparse
import os
import platform
import time

import torch

from polar_detect.models.draem.losses import draem_loss
from polar_detect.models.draem.model import WIDTHS, DRAEM, DRAEMScorer


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    dev = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (f"{cpu}; {os.cpu_count()} cores, torch threads {torch.get_num_threads()}; {dev}; "
            f"torch {torch.__version__}; python {platform.python_version()}")


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def bench_one(widths: tuple[int, int], batch: int, size: int, steps: int,
              device: torch.device) -> dict:
    torch.manual_seed(0)
    model = DRAEM(3, *widths).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    amp = device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=amp)
    x = torch.rand(batch, 3, size, size, device=device)
    mask = (torch.rand(batch, 1, size, size, device=device) > 0.9).float()
    times = []
    model.train()
    for i in range(steps + 1):                       # first step = warm-up
        _sync(device)
        t = time.perf_counter()
        with torch.autocast(device.type, dtype=torch.float16, enabled=amp):
            rec, logits = model(x)
        loss = draem_loss(rec, logits, x, mask)["total"]
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        _sync(device)
        if i:
            times.append(time.perf_counter() - t)
    head = DRAEMScorer(model.eval())
    n_inf = max(2, steps)
    with torch.no_grad(), torch.autocast(device.type, dtype=torch.float16, enabled=amp):
        head(x)
        _sync(device)
        t = time.perf_counter()
        for _ in range(n_inf):
            head(x)
        _sync(device)
        inf = time.perf_counter() - t
    params = sum(p.numel() for p in model.parameters())
    return {"params": params, "batch": batch, "step_s": sum(times) / len(times),
            "infer_ips": n_inf * batch / inf}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--device", default="auto")
    p.add_argument("--paper-batch", type=int, default=1, help="batch for the 128/64 model")
    p.add_argument("--small-batch", type=int, default=4)
    a = p.parse_args(argv)
    device = torch.device("cuda" if a.device == "auto" and torch.cuda.is_available()
                          else ("cpu" if a.device == "auto" else a.device))
    print("machine:", machine())
    print(f"input {a.size}x{a.size}x3, device {device}, AMP {device.type == 'cuda'}, "
          f"{a.steps} timed steps after 1 warm-up")
    print(f"{'preset':<8} {'widths':>7} {'params':>8} {'batch':>5} {'step s':>8} "
          f"{'s/img train':>11} {'infer img/s':>11}")
    for name, batch in (("paper", a.paper_batch), ("small", a.small_batch)):
        r = bench_one(WIDTHS[name], batch, a.size, a.steps, device)
        w = "/".join(map(str, WIDTHS[name]))
        print(f"{name:<8} {w:>7} {r['params'] / 1e6:>7.1f}M {batch:>5} {r['step_s']:>8.3f} "
              f"{r['step_s'] / batch:>11.3f} {r['infer_ips']:>11.2f}", flush=True)


if __name__ == "__main__":
    main()
