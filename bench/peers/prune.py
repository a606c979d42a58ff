"""Peer for bench/prune.ts: global magnitude pruning threshold + mask in NumPy and PyTorch.

Same work as the core: |w| of every ResNet-50 conv/fc kernel, the k-th smallest with k = round(s*N),
then a keep-mask per tensor. Data is generated here (same shapes, normal with He std), once; every
buffer is allocated before timing and reused, except what the library allocates inside the call
(torch.kthvalue copies its input). Prints one JSON line per peer on stdout, notes on stderr.
"""
import json
import os
import statistics
import sys
import time

RUNS = int(os.environ.get('RUNS', '7'))
SPARSITY = float(os.environ.get('SPARSITY', '0.9'))


def resnet50_shapes():
    """torch layout [out, in, kh, kw]; the same list as bench/prune.ts."""
    shapes = [(64, 3, 7, 7)]
    inp = 64
    for planes, blocks in ((64, 3), (128, 4), (256, 6), (512, 3)):
        for b in range(blocks):
            shapes += [(planes, inp, 1, 1), (planes, planes, 3, 3), (planes * 4, planes, 1, 1)]
            if b == 0:
                shapes.append((planes * 4, inp, 1, 1))
            inp = planes * 4
    shapes.append((1000, 2048))
    return shapes


def loaded_blas():
    try:
        with open('/proc/self/maps') as f:
            libs = {line.split()[-1] for line in f if 'blas' in line.lower() and '/' in line}
        return ', '.join(sorted(os.path.realpath(p) for p in libs)) or 'none loaded'
    except OSError:
        return 'unknown'


def median_ms(fn):
    fn()  # warm-up: touches every buffer once
    times = []
    for _ in range(RUNS):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times), times


def main():
    try:
        import numpy as np
    except ImportError:
        print(json.dumps({'peer': 'numpy', 'skipped': 'numpy not installed'}))
        print(json.dumps({'peer': 'torch', 'skipped': 'numpy not installed'}))
        return
    shapes = resnet50_shapes()
    rng = np.random.default_rng(0)
    ws = []
    for s in shapes:
        fan_in = int(np.prod(s[1:]))
        ws.append(rng.standard_normal(s, dtype=np.float32) * np.float32((2.0 / fan_in) ** 0.5))
    n = sum(w.size for w in ws)
    k = int(round(SPARSITY * n))
    biggest = max(w.size for w in ws)
    print(f'peer: numpy {np.__version__}, {len(ws)} tensors, {n} weights, k={k}, blas: {loaded_blas()}', file=sys.stderr)

    absbuf = np.empty(n, np.float32)
    tmp = np.empty(biggest, np.float32)
    masks = [np.empty(w.shape, np.bool_) for w in ws]
    state = {}

    def numpy_run():
        off = 0
        for w in ws:
            np.abs(w.reshape(-1), out=absbuf[off:off + w.size])
            off += w.size
        absbuf.partition(k - 1)  # in place, introselect
        thr = absbuf[k - 1]
        for w, m in zip(ws, masks):
            t = tmp[:w.size].reshape(w.shape)
            np.abs(w, out=t)
            np.greater(t, thr, out=m)
        state['np_thr'] = float(thr)

    med, times = median_ms(numpy_run)
    kept = sum(int(m.sum()) for m in masks)
    print(json.dumps({'peer': 'numpy', 'version': np.__version__, 'threads': 1, 'medianMs': med, 'runsMs': times,
                      'weights': n, 'pruned': n - kept, 'threshold': state['np_thr'],
                      'note': 'abs into a reused buffer, ndarray.partition in place, np.greater into reused bool masks (bytes, not packed; ties not split)'}))

    try:
        import torch
    except ImportError:
        print(json.dumps({'peer': 'torch', 'skipped': 'torch not installed'}))
        return
    torch.set_num_threads(1)
    tws = [torch.from_numpy(w) for w in ws]
    tabs = torch.empty(n, dtype=torch.float32)
    ttmp = torch.empty(biggest, dtype=torch.float32)
    tmasks = [torch.empty(w.shape, dtype=torch.bool) for w in tws]
    print(f'peer: torch {torch.__version__}, threads {torch.get_num_threads()}, blas: {loaded_blas()}', file=sys.stderr)

    def torch_run():
        off = 0
        for w in tws:
            torch.abs(w.reshape(-1), out=tabs[off:off + w.numel()])
            off += w.numel()
        thr = torch.kthvalue(tabs, k).values
        for w, m in zip(tws, tmasks):
            t = ttmp[:w.numel()].view(w.shape)
            torch.abs(w, out=t)
            torch.gt(t, thr, out=m)
        state['t_thr'] = float(thr)

    with torch.no_grad():
        med, times = median_ms(torch_run)
    kept = sum(int(m.sum()) for m in tmasks)
    print(json.dumps({'peer': 'torch', 'version': torch.__version__, 'threads': torch.get_num_threads(), 'medianMs': med,
                      'runsMs': times, 'weights': n, 'pruned': n - kept, 'threshold': state['t_thr'],
                      'note': 'abs into a reused buffer, torch.kthvalue (copies its input each call), torch.gt into reused bool masks'}))


if __name__ == '__main__':
    main()
