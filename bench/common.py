"""Shared benchmark plumbing: pinned threads, timing, peak memory, machine facts, JSON + table output."""
from __future__ import annotations

import json
import os
import platform
import resource
import sys
import time
import tracemalloc
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
OUT = REPO / "bench" / "out"


def pin_threads(n: int) -> None:
    """Same thread count for BLAS and torch in every measurement (a 2-core box swings 10x otherwise)."""
    from threadpoolctl import threadpool_limits
    import torch
    threadpool_limits(n)
    torch.set_num_threads(n)
    os.environ["OMP_NUM_THREADS"] = str(n)


@contextmanager
def measure(record: dict, key: str, trace_memory: bool = True):
    """Wall time (s) and peak traced Python/numpy allocation (MB) of the block into record[key]."""
    if trace_memory:
        tracemalloc.start()
    t0 = time.perf_counter()
    yield
    record[key] = {"seconds": time.perf_counter() - t0}
    if trace_memory:
        record[key]["peak_mb"] = tracemalloc.get_traced_memory()[1] / 2 ** 20
        tracemalloc.stop()


def max_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


@contextmanager
def peak_rss(record: dict, key: str, interval_s: float = 0.02):
    """Peak resident memory (MB) of the process while the block runs, sampled every interval_s (Linux)."""
    import threading
    peak, stop = [rss_mb()], threading.Event()

    def sample():
        while not stop.wait(interval_s):
            peak[0] = max(peak[0], rss_mb())
    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        record[key] = max(peak[0], rss_mb())


def machine(threads: int) -> dict:
    import torch
    from run_utils import package_versions
    info = {"platform": platform.platform(), "processor": platform.processor(), "cpu_count": os.cpu_count(),
            "threads": threads, "torch": torch.__version__, "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "date": time.strftime("%Y-%m-%d %H:%M")}
    info["versions"] = {k: v for k, v in package_versions().items() if k in ("numpy", "scipy", "transformers", "python")}
    return info


def matmul_peak_gflops(device="cpu", n: int = 2048, dtype=None, repeats: int = 5) -> float:
    """Best achieved GFLOP/s of an n×n matrix product: the peak the other figures are compared with."""
    import torch
    dtype = dtype or torch.float32
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    best = float("inf")
    for _ in range(repeats):
        if device != "cpu":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        a @ b
        if device != "cpu":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return 2 * n ** 3 / best / 1e9


def write_results(name: str, payload: dict, table: str) -> Path:
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / f"{name}.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(payload, indent=1, default=float))
    tmp.replace(path)
    (OUT / f"{name}.md").write_text(table)
    print(table)
    print(f"written: {path}")
    return path
