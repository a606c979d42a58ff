"""Peer for bench/soup.ts: the uniform soup of m safetensors files in NumPy, three ways.

  stream  -- what a careful person writes without a library: parse each header with json, then tensor
             by tensor readinto() one reused buffer from every file, accumulate in a reused float32
             array, scale by 1/m and write; integer tensors are copied from the first file. Memory:
             2 x the largest tensor.
  memmap  -- np.memmap every file and add the mapped views tensor by tensor into a reused
             accumulator. The mapped pages count in RSS as they are touched (file-backed, shared).
  inmem   -- the ceiling: every file's data already in memory (loaded before timing), only the
             element-wise mean is timed (np.add chain into a reused buffer, then scale).

Usage: soup.py serve stream|memmap OUT_PATH FILE...  -- prints a ready line, then one JSON line
         (wall and CPU ms of one run) per 'run' line on stdin, and its peak RSS after 'quit';
       soup.py inmem - FILE...  -- RUNS (environment) timed means, one JSON line.
Every mode writes the same header as the first file (the core writes the same layout) and
runs single-threaded (NumPy's element-wise ufuncs do not use BLAS threads).
"""
import json
import os
import resource
import statistics
import sys
import time

RUNS = int(os.environ.get('RUNS', '5'))


def rss_kib():
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith('VmRSS:'):
                return int(line.split()[1])
    return 0


def parse(path):
    """(header bytes incl. the 8-byte length, data start, [(name, dtype, begin, end)] by offset)."""
    with open(path, 'rb') as f:
        prefix = f.read(8)
        n = int.from_bytes(prefix, 'little')
        raw = f.read(n)
    header = json.loads(raw)
    header.pop('__metadata__', None)
    tensors = sorted(((k, v['dtype'], v['data_offsets'][0], v['data_offsets'][1]) for k, v in header.items()), key=lambda t: t[2])
    return prefix + raw, 8 + n, tensors


def run_stream(np, files, out):
    parsed = [parse(p) for p in files]
    head, _, tensors = parsed[0]
    starts = [p[1] for p in parsed]
    m = len(files)
    largest = max(e - b for _, _, b, e in tensors)
    buf = bytearray(largest)
    view = memoryview(buf)
    acc = np.empty(largest // 4, np.float32)
    scale = np.float32(1.0 / m)
    fhs = [open(p, 'rb', buffering=0) for p in files]
    try:
        with open(out, 'wb', buffering=0) as o:
            o.write(head)
            for _, dtype, b, e in tensors:
                nbytes = e - b
                if dtype != 'F32':
                    fhs[0].seek(starts[0] + b)
                    fhs[0].readinto(view[:nbytes])
                    o.write(view[:nbytes])
                    continue
                n = nbytes // 4
                a = acc[:n]
                for j, fh in enumerate(fhs):
                    fh.seek(starts[j] + b)
                    fh.readinto(view[:nbytes])
                    x = np.frombuffer(buf, np.float32, n)
                    if j == 0:
                        np.copyto(a, x)
                    else:
                        np.add(a, x, out=a)
                np.multiply(a, scale, out=a)
                o.write(memoryview(a).cast('B'))
    finally:
        for fh in fhs:
            fh.close()


def make_memmap(np):
    def run(files, out):
        parsed = [parse(p) for p in files]
        head, _, tensors = parsed[0]
        starts = [p[1] for p in parsed]
        m = len(files)
        maps = [np.memmap(p, np.uint8, 'r') for p in files]
        largest = max(e - b for _, _, b, e in tensors)
        acc = np.empty(largest // 4, np.float32)
        scale = np.float32(1.0 / m)
        with open(out, 'wb', buffering=0) as o:
            o.write(head)
            for _, dtype, b, e in tensors:
                if dtype != 'F32':
                    o.write(memoryview(maps[0][starts[0] + b:starts[0] + e]))
                    continue
                xs = [mm[s + b:s + e].view(np.float32) for mm, s in zip(maps, starts)]
                a = acc[:xs[0].size]
                np.add(xs[0], xs[1], out=a)
                for x in xs[2:]:
                    np.add(a, x, out=a)
                np.multiply(a, scale, out=a)
                o.write(memoryview(a).cast('B'))
        del maps
    return run


def serve(np, mode, out, files):
    """Driven by bench/soup.ts: one run per 'run' line on stdin, one JSON line back; 'quit' ends."""
    run = (lambda f, o: run_stream(np, f, o)) if mode == 'stream' else make_memmap(np)
    print(json.dumps({'ready': True, 'version': np.__version__, 'baselineRssKiB': rss_kib()}), flush=True)
    for r, line in enumerate(sys.stdin):
        if line.strip() != 'run':
            break
        path = f'{out}.{mode}.{r}'
        t = time.perf_counter()
        c = time.process_time()
        run(files, path)
        ms = (time.perf_counter() - t) * 1000
        cpu = (time.process_time() - c) * 1000
        size = os.path.getsize(path)
        os.unlink(path)
        print(json.dumps({'ms': ms, 'cpuMs': cpu, 'outBytes': size}), flush=True)
    print(json.dumps({'maxRssKiB': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}), flush=True)


def in_memory(np, files):
    """The ceiling: all data loaded first, only the mean timed (RUNS runs after a warm-up)."""
    baseline = rss_kib()
    datas = []
    for p in files:
        _, start, _ = parse(p)
        with open(p, 'rb') as f:
            f.seek(start)
            raw = f.read()
        datas.append(np.frombuffer(raw[:len(raw) // 4 * 4], np.float32))
    acc = np.empty_like(datas[0])
    scale = np.float32(1.0 / len(datas))

    def mean():
        np.add(datas[0], datas[1], out=acc)
        for d in datas[2:]:
            np.add(acc, d, out=acc)
        np.multiply(acc, scale, out=acc)

    mean()  # warm-up: first touch of the accumulator
    times, cpu = [], []
    for _ in range(RUNS):
        t = time.perf_counter()
        c = time.process_time()
        mean()
        times.append((time.perf_counter() - t) * 1000)
        cpu.append((time.process_time() - c) * 1000)
    print(json.dumps({'peer': 'inmem', 'version': np.__version__, 'runsMs': times, 'cpuMs': cpu, 'medianMs': statistics.median(times),
                      'maxRssKiB': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, 'baselineRssKiB': baseline}))


def main():
    if sys.argv[1] == 'serve':
        mode, out, files = sys.argv[2], sys.argv[3], sys.argv[4:]
    else:
        mode, out, files = sys.argv[1], sys.argv[2], sys.argv[3:]
    try:
        import numpy as np
    except ImportError:
        print(json.dumps({'peer': mode, 'skipped': 'numpy not installed'}), flush=True)
        return
    if mode == 'inmem':
        in_memory(np, files)
    else:
        serve(np, mode, out, files)


if __name__ == '__main__':
    main()
