"""sparsoup_trainer: a PyTorch trainer for sparsoup's external task protocol (/tasks).

The service keeps what needs no framework (pruning, masks, soups, the phase state machine,
reports); a trainer does what needs the user's framework: train one candidate under a mask,
evaluate a model on a split, recalibrate batch norm. This module is the standard library plus
``torch`` (no numpy, no requests, no safetensors package: the format is read and written by hand).

Subclass :class:`Trainer`, give it a model and data, and run it::

    import torch, sparsoup_trainer as st

    class MyTrainer(st.Trainer):
        def build_model(self, task):            # same layer names as the uploaded checkpoint
            return MyNet()
        def data(self, dataset, split):         # your data: (x, y) tensors or a torch Dataset
            return my_tensors[dataset][split]

    MyTrainer("http://localhost:3000", api_key=None).run()

The class leases tasks (long poll), downloads the model and the mask, loads the weights by name,
trains with the task's configuration (SGD/Adam, momentum, weight decay, the service's learning-rate
schedule with warm-up), re-applies the mask after every optimizer step (pruned weights exactly +0,
their gradients and optimizer state too), heartbeats progress, stops when the run is cancelled,
uploads the result as a streamed multipart safetensors body, posts ``fail`` on an exception, and
retries connection errors and 5xx answers with exponential back-off.
"""

from __future__ import annotations

import ctypes
import http.client
import io
import json
import math
import os
import random
import socket
import sys
import tempfile
import threading
import time
import traceback
import urllib.parse
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterable, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

import torch
from torch import nn

__all__ = [
    "ApiError",
    "Progress",
    "SafetensorsError",
    "Task",
    "TaskCancelled",
    "TaskLost",
    "Trainer",
    "TensorInfo",
    "apply_mask",
    "crop_flip",
    "mask_optimizer",
    "learning_rate_at",
    "steps_for",
    "read_header",
    "read_safetensors",
    "safetensors_chunks",
    "write_safetensors",
]

# ---------------------------------------------------------------------------------------------
# safetensors, by hand (https://github.com/huggingface/safetensors#format): 8 bytes little-endian
# u64 N, N bytes of UTF-8 JSON {name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__":
# {str: str}}, then the data; offsets are relative to the data start and must tile it exactly.
# ---------------------------------------------------------------------------------------------

DTYPES: Dict[str, Tuple[torch.dtype, int]] = {
    "F64": (torch.float64, 8),
    "F32": (torch.float32, 4),
    "F16": (torch.float16, 2),
    "BF16": (torch.bfloat16, 2),
    "I64": (torch.int64, 8),
    "I32": (torch.int32, 4),
    "I16": (torch.int16, 2),
    "I8": (torch.int8, 1),
    "U8": (torch.uint8, 1),
    "BOOL": (torch.bool, 1),
}
DTYPE_NAMES: Dict[torch.dtype, str] = {t: name for name, (t, _) in DTYPES.items()}

#: The largest JSON header accepted (the reference implementation's bound).
MAX_HEADER_BYTES = 100 * 1024 * 1024


class SafetensorsError(ValueError):
    """A safetensors file (or bytes) that breaks the format; the message says what and where."""


@dataclass(frozen=True)
class TensorInfo:
    name: str
    dtype: str
    shape: Tuple[int, ...]
    begin: int
    end: int

    @property
    def numel(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n


def _check_little_endian() -> None:
    if sys.byteorder != "little":
        raise SafetensorsError("this reader/writer supports little-endian hosts only")


def _reject_duplicates(pairs: List[Tuple[str, Any]]) -> Dict[str, Any]:
    out: Dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise SafetensorsError(f"header: key {k!r} appears twice")
        out[k] = v
    return out


def _parse_header_json(raw: bytes, data_len: int) -> Tuple[List[TensorInfo], Dict[str, str]]:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise SafetensorsError(f"header: not UTF-8 ({e.reason} at byte {e.start})") from None
    if not text.lstrip().startswith("{"):
        raise SafetensorsError("header: not a JSON object")
    try:
        obj = json.loads(text, object_pairs_hook=_reject_duplicates)
    except SafetensorsError:
        raise
    except (ValueError, RecursionError) as e:
        raise SafetensorsError(f"header: bad JSON ({e})") from None
    if not isinstance(obj, dict):
        raise SafetensorsError("header: not a JSON object")
    metadata: Dict[str, str] = {}
    infos: List[TensorInfo] = []
    for name, entry in obj.items():
        if name == "__metadata__":
            if not isinstance(entry, dict) or not all(isinstance(v, str) for v in entry.values()):
                raise SafetensorsError("header: __metadata__ must map strings to strings")
            metadata = dict(entry)
            continue
        where = f"tensor {name!r}"
        if not isinstance(entry, dict):
            raise SafetensorsError(f"{where}: entry is not an object")
        if set(entry) != {"dtype", "shape", "data_offsets"}:
            raise SafetensorsError(f"{where}: entry must have exactly dtype, shape and data_offsets (has {sorted(entry)})")
        dtype = entry["dtype"]
        if not isinstance(dtype, str) or dtype not in DTYPES:
            raise SafetensorsError(f"{where}: unsupported dtype {dtype!r} (supported: {', '.join(DTYPES)})")
        shape = entry["shape"]
        if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
            raise SafetensorsError(f"{where}: shape must be a list of non-negative integers, got {shape!r}")
        offsets = entry["data_offsets"]
        if (
            not isinstance(offsets, list)
            or len(offsets) != 2
            or not all(isinstance(o, int) and not isinstance(o, bool) for o in offsets)
        ):
            raise SafetensorsError(f"{where}: data_offsets must be [begin, end] integers, got {offsets!r}")
        begin, end = offsets
        if not 0 <= begin <= end <= data_len:
            raise SafetensorsError(f"{where}: data_offsets [{begin}, {end}] out of range (the data has {data_len} bytes)")
        info = TensorInfo(name, dtype, tuple(shape), begin, end)
        # Python integers do not overflow: a lying shape is caught here, never allocated.
        if info.numel * DTYPES[dtype][1] != end - begin:
            raise SafetensorsError(
                f"{where}: shape {list(shape)} of {dtype} needs {info.numel * DTYPES[dtype][1]} bytes, data_offsets give {end - begin}"
            )
        infos.append(info)
    position = 0
    for info in sorted(infos, key=lambda i: (i.begin, i.end)):
        if info.begin != position:
            raise SafetensorsError(
                f"tensor {info.name!r}: data starts at {info.begin}, expected {position} (tensors must tile the data without gaps or overlap)"
            )
        position = info.end
    if position != data_len:
        raise SafetensorsError(f"the tensors cover {position} bytes of data, the file has {data_len}")
    return infos, metadata


def read_header(f: io.BufferedIOBase, total_size: int) -> Tuple[List[TensorInfo], Dict[str, str], int]:
    """Reads and checks the header of a safetensors file of ``total_size`` bytes positioned at 0.

    Returns the tensors (in header order), the metadata and the offset of the data. Raises
    :class:`SafetensorsError` on any violation, before reading more than the file holds.
    """
    if total_size < 8:
        raise SafetensorsError(f"truncated: {total_size} bytes, a safetensors file starts with an 8-byte header length")
    prefix = f.read(8)
    if len(prefix) != 8:
        raise SafetensorsError("truncated: the 8-byte header length is incomplete")
    n = int.from_bytes(prefix, "little")
    if n == 0:
        raise SafetensorsError("header length is 0")
    if n > MAX_HEADER_BYTES:
        raise SafetensorsError(f"header length {n} exceeds the {MAX_HEADER_BYTES}-byte limit")
    if 8 + n > total_size:
        raise SafetensorsError(f"header length {n} exceeds the file ({total_size} bytes)")
    raw = f.read(n)
    if len(raw) != n:
        raise SafetensorsError(f"truncated: header of {n} bytes, {len(raw)} read")
    infos, metadata = _parse_header_json(raw, total_size - 8 - n)
    return infos, metadata, 8 + n


def _open_source(source: Union[str, os.PathLike, bytes, bytearray, memoryview, io.IOBase]) -> Tuple[Any, int, bool]:
    if isinstance(source, (bytes, bytearray, memoryview)):
        return io.BytesIO(bytes(source)), len(source), True
    if isinstance(source, (str, os.PathLike)):
        f = open(source, "rb")
        return f, os.fstat(f.fileno()).st_size, True
    pos = source.tell()
    size = source.seek(0, io.SEEK_END)
    source.seek(pos)
    return source, size - pos, False


def read_safetensors(source, *, with_metadata: bool = False):
    """Reads a safetensors file (path, bytes or seekable binary file) into ``{name: tensor}`` (CPU),
    in the header's order; with ``with_metadata=True`` returns ``(tensors, metadata)``."""
    _check_little_endian()
    f, size, owned = _open_source(source)
    try:
        start = f.tell()
        infos, metadata, data_start = read_header(f, size)
        tensors: Dict[str, torch.Tensor] = {}
        for info in infos:
            dtype, _ = DTYPES[info.dtype]
            nbytes = info.end - info.begin
            if info.numel == 0:
                tensors[info.name] = torch.empty(info.shape, dtype=dtype)
                continue
            f.seek(start + data_start + info.begin)
            buf = bytearray(nbytes)
            got = f.readinto(buf)
            if got != nbytes:
                raise SafetensorsError(f"tensor {info.name!r}: truncated data ({got} of {nbytes} bytes)")
            if info.dtype == "BOOL":
                raw = torch.frombuffer(buf, dtype=torch.uint8)
                if int(raw.max()) > 1:
                    raise SafetensorsError(f"tensor {info.name!r}: BOOL bytes must be 0 or 1")
                t = raw.to(torch.bool)
            else:
                t = torch.frombuffer(buf, dtype=dtype)
            tensors[info.name] = t.reshape(info.shape)
        return (tensors, metadata) if with_metadata else tensors
    finally:
        if owned:
            f.close()


def _tensor_view(t: torch.Tensor) -> memoryview:
    """The bytes of a contiguous CPU tensor without a copy (valid while ``t`` lives)."""
    n = t.numel() * t.element_size()
    if n == 0:
        return memoryview(b"")
    return memoryview((ctypes.c_ubyte * n).from_address(t.data_ptr())).cast("B")


def safetensors_chunks(
    tensors: Mapping[str, torch.Tensor], metadata: Optional[Mapping[str, str]] = None, chunk_bytes: int = 1 << 20
) -> Tuple[int, Callable[[], Iterator[memoryview]]]:
    """The size of the safetensors file for ``tensors`` and a function that yields its bytes in
    chunks, tensor by tensor, without building the file in memory (each call starts over)."""
    _check_little_endian()
    prepared: List[Tuple[str, torch.Tensor]] = []
    header: Dict[str, Any] = {}
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    offset = 0
    for name, t in tensors.items():
        if t.dtype not in DTYPE_NAMES:
            raise SafetensorsError(f"tensor {name!r}: dtype {t.dtype} has no safetensors name")
        t = t.detach()
        if t.device.type != "cpu" or not t.is_contiguous():
            t = t.to("cpu").contiguous()
        n = t.numel() * t.element_size()
        header[name] = {"dtype": DTYPE_NAMES[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + n]}
        offset += n
        prepared.append((name, t))
    raw = json.dumps(header, separators=(",", ":")).encode("utf-8")
    raw += b" " * ((-len(raw)) % 8)  # the data starts 8-byte aligned
    head = len(raw).to_bytes(8, "little") + raw
    total = len(head) + offset

    def chunks() -> Iterator[memoryview]:
        yield memoryview(head)
        for _, t in prepared:
            view = _tensor_view(t)
            for i in range(0, len(view), chunk_bytes):
                yield view[i : i + chunk_bytes]

    return total, chunks


def write_safetensors(dst, tensors: Mapping[str, torch.Tensor], metadata: Optional[Mapping[str, str]] = None) -> int:
    """Writes ``tensors`` to a path or binary file as safetensors; returns the bytes written."""
    total, chunks = safetensors_chunks(tensors, metadata)
    if isinstance(dst, (str, os.PathLike)):
        with open(dst, "wb") as f:
            for c in chunks():
                f.write(c)
    else:
        for c in chunks():
            dst.write(c)
    return total


# ---------------------------------------------------------------------------------------------
# The service's training semantics (src/core/tf/train.ts), mirrored.
# ---------------------------------------------------------------------------------------------

DEFAULT_WARMUP_FRACTION = 0.1


def _js_round(x: float) -> int:
    """JavaScript's Math.round (halves go up), not Python's banker's rounding."""
    return math.floor(x + 0.5)


def steps_for(train_size: int, training: Mapping[str, Any]) -> Tuple[int, int]:
    """(steps per epoch, total steps): the last partial batch is kept; fractional epochs stop after
    round(epochs · steps per epoch) steps, at least 1."""
    per_epoch = math.ceil(train_size / int(training["batchSize"]))
    return per_epoch, max(1, _js_round(float(training["epochs"]) * per_epoch))


def learning_rate_at(step: int, total_steps: int, training: Mapping[str, Any]) -> float:
    """The learning rate of optimizer step ``step`` (0-based) of ``total_steps``, as the service
    computes it: constant is η_max throughout; the others warm up over W = floor(warmupFraction · T)
    steps as η₀(1 − cos(π t / W))/2, then linear (and ALLR) decay linearly from η₀ at t = W to 0 at
    t = T, cosine as η₀(1 + cos(π (t − W)/(T − W)))/2. η₀ = η_max, except for ALLR where the task's
    ``initialLearningRate`` is the η₀ the service computed."""
    schedule = training.get("schedule", "constant")
    eta_max = float(training["learningRate"])
    if schedule == "constant":
        return eta_max
    eta0 = eta_max
    if schedule == "allr":
        if training.get("initialLearningRate") is None:
            raise ValueError("the allr schedule needs the task's initialLearningRate")
        eta0 = float(training["initialLearningRate"])
    T = total_steps
    wf = training.get("warmupFraction")
    W = math.floor((DEFAULT_WARMUP_FRACTION if wf is None else float(wf)) * T)
    t = step
    if t < W:
        return eta0 * (1 - math.cos(math.pi * t / W)) / 2
    progress = (t - W) / (T - W) if T > W else 1.0
    if schedule in ("linear", "allr"):
        return eta0 * (1 - progress)
    if schedule == "cosine":
        return eta0 * (1 + math.cos(math.pi * progress)) / 2
    raise ValueError(f"unknown schedule {schedule!r}")


CROP_PADDING = 4


def crop_flip(x: torch.Tensor, generator: torch.Generator, padding: int = CROP_PADDING) -> torch.Tensor:
    """The service's ``augment: "crop-flip"`` for an NCHW batch: each image zero-padded by
    ``padding`` pixels, a window of the original size cut at a random offset, then mirrored
    left-right with probability ½ (torchvision's RandomCrop(padding=4) + RandomHorizontalFlip),
    drawn from ``generator`` (CPU)."""
    if x.dim() != 4:
        raise ValueError(f"crop-flip needs NCHW image batches, got shape {list(x.shape)}")
    b, c, h, w = x.shape
    padded = nn.functional.pad(x, (padding, padding, padding, padding))
    dy = torch.randint(0, 2 * padding + 1, (b,), generator=generator)
    dx = torch.randint(0, 2 * padding + 1, (b,), generator=generator)
    flip = torch.rand(b, generator=generator) < 0.5
    cols = torch.arange(w).expand(b, w)
    cols = torch.where(flip[:, None], w - 1 - cols, cols) + dx[:, None]
    rows = torch.arange(h)[None, :] + dy[:, None]
    dev = x.device
    return padded[
        torch.arange(b, device=dev)[:, None, None, None],
        torch.arange(c, device=dev)[None, :, None, None],
        rows.to(dev)[:, None, :, None],
        cols.to(dev)[:, None, None, :],
    ]


# ---------------------------------------------------------------------------------------------
# Masks: 1 = kept, 0 = pruned; pruned weights are exactly +0 after every optimizer step.
# ---------------------------------------------------------------------------------------------


def apply_mask(model: nn.Module, masks: Mapping[str, torch.Tensor], optimizer: Optional[torch.optim.Optimizer] = None) -> int:
    """Sets every pruned weight to +0 (never −0) and, with ``optimizer``, zeroes the pruned
    entries of its per-parameter state (momentum, Adam moments). Returns how many pruned entries
    were non-zero before (0 when the mask held)."""
    state = dict(model.state_dict(keep_vars=True))
    revived = 0
    with torch.no_grad():
        for name, keep in masks.items():
            p = state[name]
            pruned = ~keep
            revived += int(torch.count_nonzero(p.masked_select(pruned)))
            p.masked_fill_(pruned, 0.0)
            if optimizer is not None and p in optimizer.state:
                for v in optimizer.state[p].values():
                    if torch.is_tensor(v) and v.shape == p.shape:
                        v.masked_fill_(pruned, 0.0)
    return revived


def mask_optimizer(optimizer: torch.optim.Optimizer, model: nn.Module, masks: Mapping[str, torch.Tensor]) -> torch.optim.Optimizer:
    """Makes ``optimizer.step()`` keep the mask: gradients of pruned weights are zeroed before the
    step and the pruned weights and their optimizer state are set to +0 after it. Returns the same
    optimizer (patched in place; calling it twice is harmless)."""
    if getattr(optimizer, "_sparsoup_masked", False) or not masks:
        return optimizer
    state = dict(model.state_dict(keep_vars=True))
    pairs = [(state[name], keep) for name, keep in masks.items()]
    inner = optimizer.step

    def step(*args, **kwargs):
        with torch.no_grad():
            for p, keep in pairs:
                if p.grad is not None:
                    p.grad.masked_fill_(~keep, 0.0)
        out = inner(*args, **kwargs)
        apply_mask(model, masks, optimizer)
        return out

    optimizer.step = step  # type: ignore[method-assign]
    optimizer._sparsoup_masked = True  # type: ignore[attr-defined]
    return optimizer


# ---------------------------------------------------------------------------------------------
# Tasks, progress, errors
# ---------------------------------------------------------------------------------------------


class ApiError(Exception):
    """A 4xx answer (or a 5xx after the retries): ``status`` and the problem+json ``problem``."""

    def __init__(self, method: str, path: str, status: int, problem: Any):
        self.status = status
        self.problem = problem
        detail = problem.get("detail") or problem.get("title") if isinstance(problem, dict) else problem
        super().__init__(f"{method} {path}: {status} {detail}")


class TaskCancelled(Exception):
    """The run was cancelled: a heartbeat answered ``cancelled``."""


class TaskLost(Exception):
    """The lease is gone (it lapsed and the task went back to the queue, or the task settled)."""


@dataclass
class Task:
    """A leased task, as ``POST /tasks/lease`` answers it (the raw JSON is in ``raw``)."""

    id: str
    kind: str
    raw: Dict[str, Any]
    model: Dict[str, Any]
    mask: Optional[Dict[str, Any]]
    training: Optional[Dict[str, Any]]
    dataset: Dict[str, Any]
    split: Optional[str]
    lease_expires_at: Optional[str]
    run_id: Optional[str] = None
    phase: Optional[int] = None
    #: Greedy soups: the soup, and the candidate set being scored (indices into its models); the
    #: task's model is that set's uniform mean, merged by the service.
    soup_id: Optional[str] = None
    members: Optional[List[int]] = None
    #: Filled by the trainer: mask name → bool tensor (True = kept) on the trainer's device.
    masks: Dict[str, torch.Tensor] = field(default_factory=dict)

    @classmethod
    def from_json(cls, j: Dict[str, Any]) -> "Task":
        return cls(
            id=j["id"],
            kind=j["kind"],
            raw=j,
            model=j.get("model") or {},
            mask=j.get("mask"),
            training=j.get("training"),
            dataset=j.get("dataset") or {},
            split=j.get("split"),
            lease_expires_at=j.get("leaseExpiresAt"),
            run_id=j.get("runId"),
            phase=j.get("phase"),
            soup_id=j.get("soupId"),
            members=j.get("members"),
        )

    @property
    def dataset_name(self) -> str:
        return str(self.dataset.get("name") or self.dataset.get("id"))


class Progress:
    """What :meth:`Trainer.train` reports; the heartbeat thread sends the latest of it. ``update``
    also raises :class:`TaskCancelled` / :class:`TaskLost` as soon as a heartbeat said so."""

    def __init__(self, steps: int = 0):
        self.steps = steps
        self.epoch = 0
        self.step = 0
        self.loss = 0.0
        self.learning_rate: Optional[float] = None
        self.cancelled = threading.Event()
        self.lost = threading.Event()
        self._lock = threading.Lock()
        self._loss_sum = 0.0
        self._loss_n = 0
        self._samples = 0
        self._window_start = time.monotonic()
        self._last_sps = 0.0

    def update(
        self, *, epoch: float, step: int, loss: float, samples: int, steps: Optional[int] = None, learning_rate: Optional[float] = None
    ) -> None:
        with self._lock:
            self.epoch, self.step = epoch, step
            if learning_rate is not None:
                self.learning_rate = learning_rate
            if steps is not None:
                self.steps = steps
            if math.isfinite(loss):
                self._loss_sum += loss
                self._loss_n += 1
                self.loss = loss
            self._samples += samples
        self.check()

    def check(self) -> None:
        if self.cancelled.is_set():
            raise TaskCancelled("the run was cancelled")
        if self.lost.is_set():
            raise TaskLost("the lease was lost")

    def snapshot(self) -> Optional[Dict[str, Any]]:
        """The heartbeat's ``progress`` (None before the first step): loss is the mean since the
        previous snapshot, samples/s the throughput since then."""
        with self._lock:
            if self.step == 0:
                return None
            now = time.monotonic()
            elapsed = now - self._window_start
            if self._samples:
                self._last_sps = self._samples / max(elapsed, 1e-6)
            loss = self._loss_sum / self._loss_n if self._loss_n else self.loss
            snap: Dict[str, Any] = {"epoch": self.epoch, "step": self.step, "steps": max(self.steps, self.step), "loss": loss, "samplesPerSecond": self._last_sps}
            if self.learning_rate is not None:
                snap["learningRate"] = self.learning_rate
            self._loss_sum, self._loss_n, self._samples, self._window_start = 0.0, 0, 0, now
            return snap


def _log(msg: str) -> None:
    print(f"[sparsoup-trainer {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _batchnorms(model: nn.Module) -> List[nn.modules.batchnorm._BatchNorm]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


TERMINAL = ("succeeded", "failed", "cancelled")


# ---------------------------------------------------------------------------------------------
# The trainer
# ---------------------------------------------------------------------------------------------


class Trainer:
    """Subclass and implement :meth:`build_model` and :meth:`data`; override :meth:`train`,
    :meth:`evaluate` or :meth:`recalibrate` for anything the defaults do not cover."""

    #: Task kinds this trainer leases.
    kinds: Sequence[str] = ("train", "evaluate", "recalibrate")
    #: Fraction of the train split forwarded to re-estimate batch-norm statistics (SMS: 0.2).
    recalibration_fraction: float = 0.2
    recalibration_batch_size: int = 128
    eval_batch_size: int = 1000
    #: Weight decay on every trainable tensor ("all", as the service and the SMS code do) or on
    #: the prunable ones only ("kernels": rank ≥ 2, no biases or norms).
    weight_decay_on: str = "all"
    #: First retry delay in seconds (doubling up to 30 s, with ±50 % jitter).
    retry_base_seconds: float = 0.5

    def __init__(
        self,
        base_url: str,
        api_key: Optional[str] = None,
        *,
        worker_id: Optional[str] = None,
        kinds: Optional[Sequence[str]] = None,
        wait_seconds: int = 20,
        device: Union[str, torch.device, None] = None,
        work_dir: Optional[str] = None,
        max_retries: int = 8,
        heartbeat_seconds: Optional[float] = None,
        log: Callable[[str], None] = _log,
    ):
        parsed = urllib.parse.urlsplit(base_url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise ValueError(f"base_url must be http(s)://host[:port][/prefix], got {base_url!r}")
        self.base_url = base_url.rstrip("/")
        self._base = parsed
        self.api_key = api_key if api_key is not None else os.environ.get("SPARSOUP_API_KEY") or None
        self.worker_id = worker_id or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        if kinds is not None:
            self.kinds = tuple(kinds)
        self.wait_seconds = wait_seconds
        self.device = torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.work_dir = work_dir
        self.max_retries = max_retries
        self.heartbeat_seconds = heartbeat_seconds
        self.log = log
        self._stop = threading.Event()

    # -- what a user provides ------------------------------------------------------------------

    def build_model(self, task: Task) -> nn.Module:
        """A fresh model whose ``state_dict`` names match the uploaded checkpoint's tensors."""
        raise NotImplementedError("subclass Trainer and implement build_model(task)")

    def data(self, dataset: str, split: str):
        """The named dataset's split: an ``(x, y)`` pair of tensors (indexed per batch, fast) or a
        ``torch.utils.data.Dataset`` of ``(x, y)`` samples. ``split`` is train, val or test."""
        raise NotImplementedError("subclass Trainer and implement data(dataset, split)")

    # -- defaults --------------------------------------------------------------------------------

    def make_optimizer(self, model: nn.Module, training: Mapping[str, Any], task: Optional[Task] = None) -> torch.optim.Optimizer:
        """SGD (momentum, Nesterov) or Adam with coupled L2 weight decay, as the service trains;
        already masked (:func:`mask_optimizer`) with the task's mask."""
        wd = float(training.get("weightDecay", 0.0))
        if self.weight_decay_on == "kernels":
            decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
            rest = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
            groups = [{"params": decay, "weight_decay": wd}, {"params": rest, "weight_decay": 0.0}]
        else:
            groups = [{"params": [p for p in model.parameters() if p.requires_grad], "weight_decay": wd}]
        lr = float(training["learningRate"])
        if training.get("optimizer", "sgd") == "adam":
            opt: torch.optim.Optimizer = torch.optim.Adam(groups, lr=lr, betas=(0.9, 0.999), eps=1e-8)
        else:
            momentum = float(training.get("momentum", 0.0))
            opt = torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=bool(training.get("nesterov", False)) and momentum > 0)
        return mask_optimizer(opt, model, task.masks if task else {})

    def loss_fn(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return nn.functional.cross_entropy(logits, y)

    def batches(self, data, batch_size: int, order: Optional[torch.Tensor] = None) -> Iterator[Tuple[torch.Tensor, torch.Tensor]]:
        """Batches of ``data`` (see :meth:`data`) on the trainer's device, in ``order`` (indices)."""
        n = self._size(data)
        order = torch.arange(n) if order is None else order
        for i in range(0, len(order), batch_size):
            idx = order[i : i + batch_size]
            if isinstance(data, (tuple, list)):
                x, y = data[0][idx], data[1][idx]
            else:
                x, y = torch.utils.data.default_collate([data[int(j)] for j in idx])
            yield x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)

    @staticmethod
    def _size(data) -> int:
        return len(data[0]) if isinstance(data, (tuple, list)) else len(data)

    def train(self, model: nn.Module, task: Task, progress: Progress) -> None:
        """One candidate: ``training.epochs`` (fractional allowed) of the task's split, a seeded
        shuffle per epoch, the service's learning-rate schedule set before every step, the mask
        kept by the (masked) optimizer, progress after every step."""
        training = task.training or {}
        data = self.data(task.dataset_name, task.split or "train")
        n = self._size(data)
        if n == 0:
            raise ValueError("the training split is empty")
        batch_size = int(training["batchSize"])
        per_epoch, total = steps_for(n, training)
        progress.steps = total
        seed = int(training.get("seed", 0))
        torch.manual_seed(seed)
        optimizer = self.make_optimizer(model, training, task)
        augment = training.get("augment") == "crop-flip"
        augment_rng = torch.Generator().manual_seed(seed * 100_003 + 0x61756721)
        model.train()
        step = 0
        while step < total:
            epoch = step // per_epoch
            order = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100_003 + epoch))
            for x, y in self.batches(data, batch_size, order):
                if step >= total:
                    break
                if augment:
                    x = crop_flip(x, augment_rng)
                lr = learning_rate_at(step, total, training)
                for g in optimizer.param_groups:
                    g["lr"] = lr
                optimizer.zero_grad(set_to_none=True)
                loss = self.loss_fn(model(x), y)
                loss.backward()
                optimizer.step()
                step += 1
                progress.update(epoch=epoch + 1, step=step, loss=float(loss.detach()), samples=len(y), learning_rate=lr)

    @torch.no_grad()
    def evaluate(self, model: nn.Module, task: Task, split: str) -> Dict[str, Any]:
        """Accuracy, mean cross-entropy, ECE (15 equal-width confidence bins, as the service) and
        per-class accuracy of ``model`` in eval mode on ``split``."""
        data = self.data(task.dataset_name, split)
        model.eval()
        n = correct = 0
        loss_sum = 0.0
        bins = 15
        bin_n = torch.zeros(bins, dtype=torch.float64)
        bin_correct = torch.zeros(bins, dtype=torch.float64)
        bin_conf = torch.zeros(bins, dtype=torch.float64)
        class_n: Dict[int, int] = {}
        class_ok: Dict[int, int] = {}
        for x, y in self.batches(data, self.eval_batch_size):
            logits = model(x).double()
            loss_sum += float(nn.functional.cross_entropy(logits, y, reduction="sum"))
            prob = logits.softmax(dim=1)
            conf, pred = prob.max(dim=1)
            ok = pred == y
            correct += int(ok.sum())
            n += len(y)
            b = (conf * bins).ceil().long().sub(1).clamp(0, bins - 1).cpu()
            bin_n.index_add_(0, b, torch.ones_like(conf, dtype=torch.float64).cpu())
            bin_correct.index_add_(0, b, ok.double().cpu())
            bin_conf.index_add_(0, b, conf.cpu())
            for c, k in zip(*torch.unique(y.cpu(), return_counts=True)):
                class_n[int(c)] = class_n.get(int(c), 0) + int(k)
            for c, k in zip(*torch.unique(y[ok].cpu(), return_counts=True)):
                class_ok[int(c)] = class_ok.get(int(c), 0) + int(k)
        if n == 0:
            raise ValueError(f"the {split} split is empty")
        ece = float(sum((bin_n[i] / n) * abs(bin_correct[i] / bin_n[i] - bin_conf[i] / bin_n[i]) for i in range(bins) if bin_n[i] > 0))
        classes = max(class_n) + 1
        per_class = [class_ok.get(c, 0) / class_n[c] if class_n.get(c) else None for c in range(classes)]
        return {"accuracy": correct / n, "loss": loss_sum / n, "ece": ece, "perClassAccuracy": per_class, "samples": n}

    @torch.no_grad()
    def evaluate_ensemble(self, models: Sequence[nn.Module], task: Task, split: str = "test") -> float:
        """Accuracy on ``split`` of the mean of the models' softmax outputs (the prediction
        ensemble of a phase's candidates, which the service reports beside the soup)."""
        data = self.data(task.dataset_name, split)
        for m in models:
            m.eval()
        n = correct = 0
        for x, y in self.batches(data, self.eval_batch_size):
            prob = sum(m(x).double().softmax(dim=1) for m in models) / len(models)
            correct += int((prob.argmax(dim=1) == y).sum())
            n += len(y)
        if n == 0:
            raise ValueError(f"the {split} split is empty")
        return correct / n

    def _ensemble(self, task: Task, progress: Progress, tmp: str) -> Optional[float]:
        """The task's ``ensemble`` (a phase's candidates), downloaded and evaluated; None without one."""
        refs = task.raw.get("ensemble") or []
        if not refs:
            return None
        models = []
        for i, ref in enumerate(refs):
            path = os.path.join(tmp, f"ensemble-{i}.safetensors")
            self.download(ref["url"], path)
            m = self.build_model(task)
            m.load_state_dict(read_safetensors(path), strict=True)
            models.append(m.to(self.device))
            os.remove(path)
            progress.check()
        return self.evaluate_ensemble(models, task)

    @torch.no_grad()
    def recalibrate(self, model: nn.Module, task: Task) -> None:
        """Re-estimates every batch-norm layer's running statistics: reset, momentum None (a
        cumulative average over the batches), forward a seeded ``recalibration_fraction`` of the
        train split in train mode; then the momenta are restored and the model is left in eval mode."""
        layers = _batchnorms(model)
        if not layers:
            return
        data = self.data(task.dataset_name, "train")
        n = self._size(data)
        seed = int((task.training or {}).get("seed", 0))
        order = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100_003 + 0x62E))
        order = order[: max(1, _js_round(self.recalibration_fraction * n))]
        momenta = [bn.momentum for bn in layers]
        for bn in layers:
            bn.reset_running_stats()
            bn.momentum = None
        model.train()
        try:
            for x, _ in self.batches(data, self.recalibration_batch_size, order):
                model(x)
        finally:
            for bn, m in zip(layers, momenta):
                bn.momentum = m
            model.eval()

    # -- the loop --------------------------------------------------------------------------------

    def stop(self) -> None:
        """Asks :meth:`run` to return after the current lease attempt (thread-safe)."""
        self._stop.set()

    def run(self, until: Union[str, Callable[[], bool], None] = None, max_tasks: Optional[int] = None) -> Optional[Dict[str, Any]]:
        """Leases and does tasks until ``until`` — a run id (returns that run's JSON once it has
        finished) or a callable that answers True — or ``max_tasks`` tasks, or :meth:`stop`, or
        Ctrl-C (the task in hand is given up; its lease lapses and it goes back to the queue)."""
        done = 0
        try:
            while not self._stop.is_set():
                if until is not None:
                    if callable(until):
                        if until():
                            return None
                    else:
                        try:
                            run = self.request("GET", f"/runs/{until}")
                        except ApiError as e:
                            if e.status == 403:
                                raise ApiError("GET", f"/runs/{until}", 403, "run(until=run id) reads the run: a worker key may not; use a read or write key, or until=a callable") from e
                            raise
                        if run.get("status") in TERMINAL:
                            return run
                task = self.lease()
                if task is None:
                    continue
                self.run_task(task)
                done += 1
                if max_tasks is not None and done >= max_tasks:
                    return None
        except KeyboardInterrupt:
            self.log("interrupted: stopping (a leased task goes back to the queue when its lease lapses)")
        return None

    def lease(self) -> Optional[Task]:
        """One long poll: a task, or None when none came within ``wait_seconds``."""
        try:
            status, body = self._call(
                "POST",
                "/tasks/lease",
                json_body={"workerId": self.worker_id, "kinds": list(self.kinds), "waitSeconds": self.wait_seconds},
                timeout=self.wait_seconds + 30,
            )
        except (ApiError, OSError, http.client.HTTPException) as e:
            if isinstance(e, ApiError) and e.status < 500:
                raise
            self.log(f"lease failed ({e}); trying again")
            self._stop.wait(5)
            return None
        if status == 204 or not body:
            return None
        return Task.from_json(body)

    def run_task(self, task: Task) -> None:
        """Does one leased task end to end (heartbeats, result or fail)."""
        self.log(f"task {task.id}: {task.kind} (run {task.run_id}, phase {task.phase}, attempt {task.raw.get('attempts')})")
        progress = Progress()
        beat = threading.Thread(target=self._heartbeats, args=(task, progress), daemon=True, name=f"heartbeat-{task.id[:8]}")
        done = threading.Event()
        progress._done = done  # type: ignore[attr-defined]
        beat.start()
        tmp = tempfile.TemporaryDirectory(prefix="sparsoup-task-", dir=self.work_dir)
        try:
            metrics, state = self._do(task, progress, tmp.name)
            progress.check()
            # Heartbeats go on during the upload, so a large model does not outlive its lease.
            try:
                self.post_result(task, metrics, state)
            except ApiError as e:
                # 422: refused (the service counted the attempt and queued the task again); 409: settled
                # or the lease lapsed. Either way the task is no longer this trainer's: nothing to fail.
                if e.status in (409, 422):
                    self.log(f"task {task.id}: the result was refused: {e}")
                    return
                raise
            self.log(f"task {task.id}: result posted ({', '.join(f'{k} {v:.4f}' for k, v in metrics.items() if isinstance(v, float))})")
        except TaskCancelled:
            self.log(f"task {task.id}: the run was cancelled; dropped")
        except TaskLost:
            self.log(f"task {task.id}: the lease was lost; dropped")
        except KeyboardInterrupt:
            raise
        except Exception as e:  # noqa: BLE001 — every failure of a task is reported to the service
            error = f"{type(e).__name__}: {e}"
            self.log(f"task {task.id}: failed: {error}\n{traceback.format_exc()}")
            tail = traceback.format_exc(limit=-3)
            try:
                self.request("POST", f"/tasks/{task.id}/fail", {"error": (error + "\n" + tail)[:4000]})
            except Exception as e2:  # noqa: BLE001
                self.log(f"task {task.id}: could not report the failure: {e2}")
        finally:
            done.set()
            beat.join(timeout=5)
            tmp.cleanup()

    def _do(self, task: Task, progress: Progress, tmp: str) -> Tuple[Dict[str, Any], Optional[Dict[str, torch.Tensor]]]:
        model_file = os.path.join(tmp, "model.safetensors")
        self.download(task.model["url"], model_file)
        source, metadata = read_safetensors(model_file, with_metadata=True)
        model = self.build_model(task)
        model.load_state_dict(source, strict=True)
        model.to(self.device)
        task.masks = {}
        if task.mask:
            mask_file = os.path.join(tmp, "mask.safetensors")
            self.download(task.mask["url"], mask_file)
            task.masks = self._load_mask(model, read_safetensors(mask_file))
            apply_mask(model, task.masks)
        progress.check()
        metrics: Dict[str, Any] = {}
        state: Optional[Dict[str, torch.Tensor]] = None
        if task.kind == "train":
            self.train(model, task, progress)
            revived = apply_mask(model, task.masks)
            if revived:
                self.log(f"task {task.id}: {revived} pruned weights were non-zero after train() (an optimizer without mask_optimizer?); zeroed")
            self.recalibrate(model, task)
            metrics = self._split_metrics(model, task)
            state = self._result_state(model, source)
        elif task.kind == "recalibrate":
            self.recalibrate(model, task)
            # Measured on the model sent back: the service takes them as the evaluation (of an SMS
            # phase, or the score of a greedy soup's set) and asks for no separate evaluate task.
            metrics = self._split_metrics(model, task)
            state = self._result_state(model, source)
        elif task.kind == "evaluate":
            metrics = self._split_metrics(model, task)
        else:
            raise ValueError(f"unknown task kind {task.kind!r}")
        metrics["ensembleTestAccuracy"] = self._ensemble(task, progress, tmp)
        return {k: v for k, v in metrics.items() if v is not None}, state

    def _split_metrics(self, model: nn.Module, task: Task) -> Dict[str, Any]:
        """valAccuracy and testAccuracy; loss, ECE and per-class accuracy of the test split."""
        val = self.evaluate(model, task, "val")
        test = self.evaluate(model, task, "test")
        return {"valAccuracy": val["accuracy"], "testAccuracy": test["accuracy"], "loss": test["loss"], "ece": test["ece"], "perClassAccuracy": test["perClassAccuracy"]}

    def _load_mask(self, model: nn.Module, mask: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        state = model.state_dict(keep_vars=True)
        out: Dict[str, torch.Tensor] = {}
        for name, bits in mask.items():
            if name not in state:
                raise ValueError(f"the mask names tensor {name!r}, which the model does not have")
            if tuple(bits.shape) != tuple(state[name].shape):
                raise ValueError(f"mask {name!r} has shape {list(bits.shape)}, the tensor {list(state[name].shape)}")
            out[name] = (bits != 0).to(state[name].device)
        return out

    @staticmethod
    def _result_state(model: nn.Module, source: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        """The model's tensors in the input's order and dtypes; integer and bool tensors (batch-norm
        step counters) are sent back as they came, so candidates stay mergeable."""
        state = model.state_dict()
        out: Dict[str, torch.Tensor] = {}
        for name, original in source.items():
            if not original.is_floating_point():
                out[name] = original
            else:
                out[name] = state[name].detach().to("cpu", original.dtype).contiguous()
        return out

    # -- heartbeats ------------------------------------------------------------------------------

    def _interval(self, lease_expires_at: Optional[str]) -> float:
        if self.heartbeat_seconds is not None:
            return self.heartbeat_seconds
        remaining = 30.0
        if lease_expires_at:
            try:
                from datetime import datetime, timezone

                t = datetime.fromisoformat(lease_expires_at.replace("Z", "+00:00"))
                remaining = (t - datetime.now(timezone.utc)).total_seconds()
            except ValueError:
                pass
        return min(30.0, max(1.0, remaining / 4))

    def _heartbeats(self, task: Task, progress: Progress) -> None:
        done: threading.Event = progress._done  # type: ignore[attr-defined]
        interval = self._interval(task.lease_expires_at)
        while not done.wait(interval):
            try:
                snap = progress.snapshot()
                answer = self.request("POST", f"/tasks/{task.id}/heartbeat", {"progress": snap} if snap else {})
            except ApiError as e:
                if e.status in (404, 409, 410):
                    self.log(f"task {task.id}: heartbeat refused ({e}); giving the task up")
                    progress.lost.set()
                    return
                self.log(f"task {task.id}: heartbeat failed ({e})")
                continue
            except (OSError, http.client.HTTPException) as e:
                self.log(f"task {task.id}: heartbeat failed ({e}); the next one retries")
                continue
            if answer.get("cancelled"):
                progress.cancelled.set()
                return
            interval = self._interval(answer.get("leaseExpiresAt"))

    # -- HTTP ------------------------------------------------------------------------------------

    def _target(self, url: str) -> Tuple[urllib.parse.SplitResult, str, bool]:
        """(origin, path with query, whether the API key goes along): relative URLs resolve
        against the base URL (its path prefix kept); the key goes to the base URL's origin only."""
        u = urllib.parse.urlsplit(url)
        if u.scheme and u.netloc:
            same = (u.scheme, u.netloc) == (self._base.scheme, self._base.netloc)
            return u, (u.path or "/") + (f"?{u.query}" if u.query else ""), same
        path = self._base.path.rstrip("/") + "/" + url.lstrip("/")
        return self._base, path, True

    def _connection(self, origin: urllib.parse.SplitResult, timeout: float) -> http.client.HTTPConnection:
        if origin.scheme == "https":
            return http.client.HTTPSConnection(origin.netloc, timeout=timeout)
        return http.client.HTTPConnection(origin.netloc, timeout=timeout)

    def _backoff(self, attempt: int, retry_after: Optional[str] = None) -> None:
        delay = min(30.0, self.retry_base_seconds * 2**attempt) * (0.5 + random.random())
        if retry_after and retry_after.isdigit():
            delay = max(delay, float(retry_after))
        self._stop.wait(delay) if not self._stop.is_set() else time.sleep(min(delay, 1.0))

    def _call(
        self,
        method: str,
        url: str,
        *,
        json_body: Any = None,
        body: Optional[Callable[[], Iterable[Union[bytes, memoryview]]]] = None,
        length: Optional[int] = None,
        content_type: Optional[str] = None,
        sink: Optional[Callable[[http.client.HTTPResponse], None]] = None,
        timeout: float = 300,
        ok_on_retry: Sequence[int] = (),
    ) -> Tuple[int, Any]:
        """One request with retries (connection errors, 5xx, 429) and exponential back-off.
        ``body`` is a function returning the chunks (called again on each retry)."""
        origin, path, with_key = self._target(url)
        attempt = 0
        while True:
            headers = {"accept": "application/json, application/problem+json, */*"}
            if with_key and self.api_key:
                headers["authorization"] = f"Bearer {self.api_key}"
            payload: Optional[bytes] = None
            if json_body is not None:
                payload = json.dumps(json_body).encode("utf-8")
                headers["content-type"] = "application/json"
                headers["content-length"] = str(len(payload))
            elif body is not None:
                headers["content-type"] = content_type or "application/octet-stream"
                headers["content-length"] = str(length)
            elif method in ("POST", "PUT"):
                headers["content-length"] = "0"
            conn = self._connection(origin, timeout)
            try:
                conn.putrequest(method, path, skip_accept_encoding=True)
                for k, v in headers.items():
                    conn.putheader(k, v)
                conn.endheaders()
                if payload is not None:
                    conn.send(payload)
                elif body is not None:
                    for chunk in body():
                        conn.send(chunk)
                resp = conn.getresponse()
                status = resp.status
                if status >= 500 or status == 429:
                    text = resp.read()
                    if attempt >= self.max_retries:
                        raise ApiError(method, path, status, _problem(text))
                    self.log(f"{method} {path}: {status}; retrying")
                    self._backoff(attempt, resp.getheader("retry-after"))
                    attempt += 1
                    continue
                if status >= 400:
                    if attempt > 0 and status in ok_on_retry:
                        resp.read()
                        return status, None
                    raise ApiError(method, path, status, _problem(resp.read()))
                if sink is not None and status == 200:
                    sink(resp)
                    return status, None
                text = resp.read()
                if not text:
                    return status, None
                ctype = resp.getheader("content-type") or ""
                return status, json.loads(text) if "json" in ctype else text
            except (OSError, http.client.HTTPException) as e:
                if attempt >= self.max_retries or self._stop.is_set():
                    raise
                self.log(f"{method} {path}: {type(e).__name__}: {e}; retrying")
                self._backoff(attempt)
                attempt += 1
            finally:
                conn.close()

    def request(self, method: str, url: str, json_body: Any = None, **kw) -> Any:
        """A JSON request to the service (relative URL); the parsed answer."""
        return self._call(method, url, json_body=json_body, **kw)[1]

    def download(self, url: str, path: str) -> int:
        """Streams ``url`` (relative to the base URL, or absolute) into ``path``; returns bytes."""
        written = [0]

        def sink(resp: http.client.HTTPResponse) -> None:
            written[0] = 0
            with open(path, "wb") as f:
                while True:
                    chunk = resp.read(1 << 20)
                    if not chunk:
                        break
                    f.write(chunk)
                    written[0] += len(chunk)
            expected = resp.getheader("content-length")
            if expected is not None and int(expected) != written[0]:
                raise http.client.IncompleteRead(b"", int(expected) - written[0])

        self._call("GET", url, sink=sink, timeout=600)
        return written[0]

    def post_result(self, task: Task, metrics: Mapping[str, Any], state: Optional[Mapping[str, torch.Tensor]]) -> None:
        """``POST /tasks/{id}/result``: multipart, a ``metrics`` JSON part and (train and
        recalibrate) a ``model.safetensors`` part streamed tensor by tensor with a computed
        Content-Length. A 409 on a retry means the first attempt landed."""
        boundary = "sparsoup-" + uuid.uuid4().hex
        metrics_part = (
            f"--{boundary}\r\ncontent-disposition: form-data; name=\"metrics\"\r\ncontent-type: application/json\r\n\r\n".encode()
            + json.dumps(metrics).encode()
            + b"\r\n"
        )
        parts_len = len(metrics_part)
        model_head = b""
        model_len = 0
        chunks: Optional[Callable[[], Iterator[memoryview]]] = None
        if state is not None:
            model_len, chunks = safetensors_chunks(state)
            model_head = (
                f"--{boundary}\r\ncontent-disposition: form-data; name=\"model.safetensors\"; filename=\"model.safetensors\"\r\n"
                "content-type: application/octet-stream\r\n\r\n"
            ).encode()
            parts_len += len(model_head) + model_len + 2
        tail = f"--{boundary}--\r\n".encode()
        total = parts_len + len(tail)

        def body() -> Iterator[Union[bytes, memoryview]]:
            yield metrics_part
            if chunks is not None:
                yield model_head
                yield from chunks()
                yield b"\r\n"
            yield tail

        self._call(
            "POST",
            f"/tasks/{task.id}/result",
            body=body,
            length=total,
            content_type=f"multipart/form-data; boundary={boundary}",
            timeout=600,
            ok_on_retry=(409,),
        )


def _problem(text: bytes) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text.decode("utf-8", "replace")[:500]
