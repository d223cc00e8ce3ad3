"""Kernel benchmark: the `optimized` backend side by side with OpenBLAS, naive and PyTorch.

    python benchmarks/kernels.py [--quick] [--threads N] [--only SECTION,...]

Every number is measured in this one run, and every target is a ratio of two
such numbers, so results from different machines compare. Each timing is the
median of several samples taken after a warm-up; a sample repeats the call
until it lasts at least a few milliseconds. Both sides of a ratio run at the
same thread count (OpenBLAS pinned with threadpoolctl, PyTorch with
torch.set_num_threads). Backends are called through their public methods, so
both sides pay the contract's validation; its cost is printed separately.

Prints a table, then one JSON line (prefix "JSON ") with every row.
"""
import os
import sys

# Some machines set these for older OpenBLAS builds; they slow a current numpy.
# Drop them for this process only, before numpy is imported, by re-executing.
_OPENBLAS_OVERRIDES = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
if any(v in os.environ for v in _OPENBLAS_OVERRIDES):
    env = {k: v for k, v in os.environ.items() if k not in _OPENBLAS_OVERRIDES}
    env["TINYTORCH_BENCH_UNSET"] = ",".join(v for v in _OPENBLAS_OVERRIDES if v in os.environ)
    os.execve(sys.executable, [sys.executable, *sys.argv], env)

import argparse  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
from threadpoolctl import threadpool_info, threadpool_limits  # noqa: E402

import tinytorch  # noqa: E402
from tinytorch.backends import (ComputeBackend, NaiveBackend, NumpyBackend,  # noqa: E402
                                OptimizedBackend)

RNG = np.random.default_rng(0)


# ---------------------------------------------------------------- measuring

def seconds_per_call(*fns, repeats, min_sample):
    """Median time per call of each function, samples interleaved (a b a b ...) so that
    load from other processes hits both sides of a ratio alike. A sample repeats a call
    until it lasts at least min_sample seconds; each function is warmed up first."""
    calls = []
    for fn in fns:
        fn()
        start = time.perf_counter()
        fn()
        calls.append(max(1, int(min_sample / max(time.perf_counter() - start, 1e-7))))
    samples = [[] for _ in fns]
    for _ in range(repeats):
        for fn, count, out in zip(fns, calls, samples):
            start = time.perf_counter()
            for _ in range(count):
                fn()
            out.append((time.perf_counter() - start) / count)
    medians = [statistics.median(s) for s in samples]
    return medians if len(fns) > 1 else medians[0]


def _status_kib(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def peak_extra_mb(fn):
    """Resident memory high-water mark during fn() above the resident size before, in MB
    (Linux: writing 5 to /proc/self/clear_refs resets the high-water mark)."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    before = _status_kib("VmRSS")
    out = fn()
    return (_status_kib("VmHWM") - before) * 1024 / 1e6, out


def torch_or_none():
    try:
        import torch
    except ImportError:
        return None
    return torch


# ---------------------------------------------------------------- rows

class Table:
    def __init__(self):
        self.rows = []

    def add(self, name, value, unit, ratio=None, target=None, note="", **extra):
        met = None if ratio is None or target is None else bool(ratio >= target)
        self.rows.append(dict(name=name, value=value, unit=unit, ratio=ratio, target=target,
                              met=met, note=note, **extra))
        shown = "-" if value is None else f"{value:10.2f} {unit}"
        r = "" if ratio is None else f"{ratio:7.2f}x"
        t = "" if target is None else f">= {target:g}x {'MET' if met else 'NOT MET'}"
        print(f"{name:<44} {shown:>22} {r:>9}  {t:<18} {note}", flush=True)


def gflops(m, n, k, seconds):
    return 2.0 * m * n * k / seconds / 1e9


def matmul_rows(table, opt, ref, threads, repeats, min_sample, quick):
    big = 512 if quick else 1024
    shapes = [("float32", 512, 512, 512, 0.70), ("float32", big, big, big, 0.70),
              ("float64", 512, 512, 512, 0.60), ("float64", big, big, big, 0.60),
              ("float32", 257, 511, 129, 0.50), ("float32", 1000, 64, 10, 0.50),
              ("float32", 64, 4096, 64, 0.50)]
    for dtype, m, k, n, target in dict.fromkeys(shapes):     # --quick: 512 and "big" coincide
        a = RNG.standard_normal((m, k)).astype(dtype)
        b = RNG.standard_normal((k, n)).astype(dtype)
        with threadpool_limits(threads):
            t_opt, t_ref = seconds_per_call(lambda: opt.matmul(a, b), lambda: ref.matmul(a, b),
                                            repeats=repeats, min_sample=min_sample)
        mem, _ = peak_extra_mb(lambda: opt.matmul(a, b))
        table.add(f"matmul {dtype} {m}x{k}x{n} optimized", gflops(m, n, k, t_opt), "GFLOP/s",
                  t_ref / t_opt, target, f"numpy {gflops(m, n, k, t_ref):.1f} GFLOP/s, "
                  f"peak extra {mem:.1f} MB", kind="matmul", dtype=dtype, shape=[m, k, n],
                  threads=threads, numpy_gflops=gflops(m, n, k, t_ref))


def scaling_row(table, repeats, min_sample, quick):
    cores = os.cpu_count() or 1
    if cores < 2:
        table.add("matmul threads scaling", None, "", note="skipped (one core)")
        return
    size = 512 if quick else 1024
    a = RNG.standard_normal((size, size)).astype(np.float32)
    one, two, ref = OptimizedBackend(threads=1), OptimizedBackend(threads=2), NumpyBackend()

    def blas(threads):
        with threadpool_limits(threads):
            ref.matmul(a, a)
    # Two runs, not one interleaved run of four: after a call, OpenBLAS's and
    # libgomp's idle workers busy-wait for a while, so a sample of one library's
    # two threads taken right after the other's would share the second core
    # with a spinning thread (measured: 0.95x here instead of 1.8x).
    t1, t2 = seconds_per_call(lambda: one.matmul(a, a), lambda: two.matmul(a, a),
                              repeats=repeats, min_sample=min_sample)
    b1, b2 = seconds_per_call(lambda: blas(1), lambda: blas(2),
                              repeats=repeats, min_sample=min_sample)
    table.add(f"matmul float32 {size}^3, 2 threads vs 1", gflops(size, size, size, t2),
              "GFLOP/s", t1 / t2, 1.7,
              f"1 thread {gflops(size, size, size, t1):.1f} GFLOP/s; OpenBLAS 2 vs 1 in the "
              f"same run: {b1 / b2:.2f}x", kind="scaling", openblas_ratio=b1 / b2)


def naive_row(table, opt, repeats):
    a = RNG.standard_normal((64, 64)).astype(np.float32)
    naive = NaiveBackend()
    t_naive, t_opt = seconds_per_call(lambda: naive.matmul(a, a), lambda: opt.matmul(a, a),
                                      repeats=repeats, min_sample=0.02)
    table.add("matmul float32 64^3 optimized vs naive", gflops(64, 64, 64, t_opt), "GFLOP/s",
              t_naive / t_opt, 1000, f"naive {gflops(64, 64, 64, t_naive):.4f} GFLOP/s",
              kind="naive")


def conv_rows(table, opt, ref, threads, repeats, min_sample, torch):
    n, c, f, hw = 64, 32, 32, 16
    x = RNG.standard_normal((n, c, hw, hw)).astype(np.float32)
    w = RNG.standard_normal((f, c, 3, 3)).astype(np.float32)
    g = RNG.standard_normal((n, f, hw, hw)).astype(np.float32)
    flops = 2.0 * n * f * hw * hw * c * 9
    with threadpool_limits(threads):
        t_opt, t_np = seconds_per_call(lambda: opt.conv2d(x, w, 1, 1),
                                       lambda: ref.conv2d(x, w, 1, 1),
                                       repeats=repeats, min_sample=min_sample)
    label = "conv2d fwd 64x32x16x16, 32 3x3 pad 1"
    table.add(f"{label}: vs numpy", flops / t_opt / 1e9, "GFLOP/s", t_np / t_opt, 1.0,
              f"numpy backend {flops / t_np / 1e9:.1f} GFLOP/s", kind="conv")

    def backward():
        opt.conv2d_grad_input(g, w, x.shape, 1, 1)
        opt.conv2d_grad_weight(x, g, w.shape, 1, 1)
    if torch is None:
        table.add(f"{label}: vs torch", None, "", note="skipped (torch not installed)")
        table.add("conv2d backward (both grads): vs torch", None, "",
                  note="skipped (torch not installed)")
        return
    torch.set_num_threads(threads)
    tx, tw, tg = (torch.from_numpy(v) for v in (x, w, g))
    with torch.no_grad():
        t_opt, t_torch = seconds_per_call(
            lambda: opt.conv2d(x, w, 1, 1), lambda: torch.nn.functional.conv2d(tx, tw, padding=1),
            repeats=repeats, min_sample=min_sample)

        def torch_backward():
            torch.nn.grad.conv2d_input(tx.shape, tw, tg, padding=1)
            torch.nn.grad.conv2d_weight(tx, tw.shape, tg, padding=1)
        t_bwd, t_torch_bwd = seconds_per_call(backward, torch_backward,
                                              repeats=repeats, min_sample=min_sample)
    table.add(f"{label}: vs torch", flops / t_opt / 1e9, "GFLOP/s", t_torch / t_opt, 1 / 1.5,
              f"torch {flops / t_torch / 1e9:.1f} GFLOP/s (target: within 1.5x)", kind="conv")
    table.add("conv2d backward (both grads): vs torch", 2 * flops / t_bwd / 1e9, "GFLOP/s",
              t_torch_bwd / t_bwd, 0.5,
              f"torch {2 * flops / t_torch_bwd / 1e9:.1f} GFLOP/s (target: within 2x)",
              kind="conv")


def memory_probe(threads):
    """Run in a fresh process: peak extra MB of one optimized conv2d forward at batch 64."""
    x = RNG.standard_normal((64, 32, 16, 16)).astype(np.float32)
    w = RNG.standard_normal((32, 32, 3, 3)).astype(np.float32)
    opt = OptimizedBackend(threads=threads)
    opt.conv2d(x[:1], w, 1, 1)                 # load and warm everything but the batch
    mem, out = peak_extra_mb(lambda: opt.conv2d(x, w, 1, 1))
    print(mem - out.nbytes / 1e6)


def memory_row(table, threads):
    n, c, hw, f = 64, 32, 16, 32
    full_im2col_mb = n * c * 9 * hw * hw * 4 / 1e6
    done = subprocess.run([sys.executable, __file__, "--memory-probe", "--threads", str(threads)],
                          capture_output=True, text=True, check=True)
    extra = max(float(done.stdout.strip().splitlines()[-1]), 0.0)
    table.add("conv2d fwd peak extra memory / full im2col", extra, "MB",
              full_im2col_mb / max(extra, 1e-3), 8.0,
              f"full-batch im2col {full_im2col_mb:.1f} MB (target: <= 1/8 of it)",
              kind="memory")


def cnn_row(table, opt, threads, repeats, torch):
    models = getattr(tinytorch, "models", None)
    if models is None or not hasattr(models, "build_resnet"):
        table.add("reference CNN forward vs torch", None, "",
                  note="skipped (tinytorch.models.build_resnet not available)")
        return
    if torch is None:
        table.add("reference CNN forward vs torch", None, "", note="skipped (torch not installed)")
        return
    tinytorch.manual_seed(0)
    model = models.build_resnet()
    model.eval()
    x = RNG.standard_normal((64, 3, 32, 32)).astype(np.float32)
    torch.set_num_threads(threads)
    twin, tx = torch_resnet(torch).eval(), torch.from_numpy(x)
    with tinytorch.use_backend(opt), tinytorch.no_grad(), torch.no_grad():
        t_ours, t_torch = seconds_per_call(lambda: model(tinytorch.Tensor(x)), lambda: twin(tx),
                                           repeats=repeats, min_sample=0.05)
    table.add("reference CNN forward (build_resnet, batch 64)", t_ours * 1e3, "ms",
              t_torch / t_ours, 1.0, f"torch {t_torch * 1e3:.1f} ms; the same layers, "
              "eval mode", kind="model")


def torch_resnet(torch, width=16, stages=3, classes=10):
    """The architecture of tinytorch.models.build_resnet() defaults, in PyTorch."""
    nn = torch.nn

    class Block(nn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.body = nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False),
                                      nn.BatchNorm2d(cout), nn.ReLU(),
                                      nn.Conv2d(cout, cout, 3, 1, 1, bias=False),
                                      nn.BatchNorm2d(cout))
            self.skip = nn.Identity() if stride == 1 and cin == cout else nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, 0, bias=False), nn.BatchNorm2d(cout))

        def forward(self, x):
            return torch.relu(self.body(x) + self.skip(x))

    layers = [nn.Conv2d(3, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU()]
    cin = width
    for s in range(stages):
        layers.append(Block(cin, width * 2 ** s, 2 if s else 1))
        cin = width * 2 ** s
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, classes)]
    return nn.Sequential(*layers)


# ---------------------------------------------------------------- issue 15: against PyTorch

#: The CIFAR-shaped 3x3 layers (padding 1) the convolution targets are set on:
#: (batch, channels, size, filters, stride).
CONV_LAYERS = [(64, 16, 32, 32, 1), (64, 32, 16, 64, 2), (64, 64, 16, 64, 1), (1, 128, 8, 128, 1)]


def _uniform(*shape):
    """Inputs as the competition draws them: uniform in [-0.5, 0.5)."""
    return RNG.random(shape, dtype=np.float32) - np.float32(0.5)


def layer_rows(table, threads, repeats, min_sample, torch, backward=True):
    """Each layer's forward (and both gradients) against torch, at `threads` threads each."""
    tag = "" if threads == 1 else f", {threads} threads"
    if torch is None:
        table.add(f"conv2d layers{tag} vs torch", None, "", note="skipped (torch not installed)")
        return
    opt = OptimizedBackend(threads=threads)
    torch.set_num_threads(threads)
    for n, c, hw, f, s in CONV_LAYERS:
        x, w = _uniform(n, c, hw, hw), _uniform(f, c, 3, 3)
        out = opt.conv2d(x, w, s, 1)
        g = _uniform(*out.shape)
        tx, tw, tg = (torch.from_numpy(v) for v in (x, w, g))
        flops = 2.0 * out.size * c * 9
        label = f"{n}x{c}x{hw}x{hw}->{f} s{s}"
        with torch.no_grad():
            t_opt, t_torch = seconds_per_call(
                lambda: opt.conv2d(x, w, s, 1),
                lambda: torch.nn.functional.conv2d(tx, tw, stride=s, padding=1),
                repeats=repeats, min_sample=min_sample)
            table.add(f"conv fwd {label}{tag} vs torch", flops / t_opt / 1e9, "GFLOP/s",
                      t_torch / t_opt, 1.0, f"torch {flops / t_torch / 1e9:.1f} GFLOP/s",
                      kind="conv_layer", threads=threads, shape=[n, c, hw, f, s])
            if not backward:
                continue

            def ours():
                opt.conv2d_grad_input(g, w, x.shape, s, 1)
                opt.conv2d_grad_weight(x, g, w.shape, s, 1)

            def theirs():
                torch.nn.grad.conv2d_input(tx.shape, tw, tg, stride=s, padding=1)
                torch.nn.grad.conv2d_weight(tx, tw.shape, tg, stride=s, padding=1)
            t_opt, t_torch = seconds_per_call(ours, theirs, repeats=repeats,
                                              min_sample=min_sample)
        table.add(f"conv bwd {label}{tag} vs torch", 2 * flops / t_opt / 1e9, "GFLOP/s",
                  t_torch / t_opt, 0.9, f"torch {2 * flops / t_torch / 1e9:.1f} GFLOP/s "
                  "(both gradients)", kind="conv_layer_backward", threads=threads,
                  shape=[n, c, hw, f, s])


def conv_stack_row(table, opt, threads, repeats, torch):
    """Five 3x3 convolutions with ReLU, CIFAR-shaped, batch 64, forward only."""
    if torch is None:
        table.add("conv stack forward vs torch", None, "", note="skipped (torch not installed)")
        return
    nn, tnn = tinytorch.nn, torch.nn
    plan = [(3, 16, 1), (16, 32, 1), (32, 64, 2), (64, 64, 1), (64, 128, 2)]
    tinytorch.manual_seed(0)
    ours = nn.Sequential(*[m for cin, cout, s in plan
                           for m in (nn.Conv2d(cin, cout, 3, s, 1), nn.ReLU())])
    theirs = tnn.Sequential(*[m for cin, cout, s in plan
                              for m in (tnn.Conv2d(cin, cout, 3, s, 1), tnn.ReLU())])
    x = _uniform(64, 3, 32, 32)
    torch.set_num_threads(threads)
    tx = torch.from_numpy(x)
    with tinytorch.use_backend(opt), tinytorch.no_grad(), torch.no_grad():
        t_ours, t_torch = seconds_per_call(lambda: ours(tinytorch.Tensor(x)),
                                           lambda: theirs(tx), repeats=repeats, min_sample=0.05)
    table.add("conv stack (5 conv+ReLU) fwd, batch 64", t_ours * 1e3, "ms", t_torch / t_ours,
              1.0, f"torch {t_torch * 1e3:.1f} ms", kind="model")


def resnet_train_row(table, opt, threads, repeats, torch):
    """build_resnet forward + backward (training mode: batch statistics), batch 64."""
    if torch is None:
        table.add("reference CNN forward+backward vs torch", None, "",
                  note="skipped (torch not installed)")
        return
    tinytorch.manual_seed(0)
    model = tinytorch.models.build_resnet().train()
    twin = torch_resnet(torch).train()
    x, y = _uniform(64, 3, 32, 32), RNG.integers(0, 10, 64)
    torch.set_num_threads(threads)
    tx, ty = torch.from_numpy(x), torch.from_numpy(y)
    loss, tloss = tinytorch.nn.CrossEntropyLoss(), torch.nn.CrossEntropyLoss()

    def ours():
        model.zero_grad()
        loss(model(tinytorch.Tensor(x)), y).backward()

    def theirs():
        twin.zero_grad()
        tloss(twin(tx), ty).backward()
    with tinytorch.use_backend(opt):
        t_ours, t_torch = seconds_per_call(ours, theirs, repeats=repeats, min_sample=0.05)
    table.add("reference CNN fwd+bwd (build_resnet, batch 64)", t_ours * 1e3, "ms",
              t_torch / t_ours, 0.8, f"torch {t_torch * 1e3:.1f} ms (training mode, "
              "cross-entropy, no optimizer step)", kind="model")


#: Small and skinny products: the MLP events' layers, a transformer block's
#: projections (M = batch * tokens), attention heads as (count, m, k, n).
SMALL_MATMULS = [(8, 64, 32), (64, 64, 64), (1000, 64, 10), (64, 3072, 256), (256, 64, 64),
                 (256, 64, 256), (256, 256, 64)]
SMALL_BATCHED = [(16, 64, 16, 64), (16, 64, 64, 16)]


def small_matmul_rows(table, opt, ref, threads, repeats):
    for m, k, n in SMALL_MATMULS:
        a, b = _uniform(m, k), _uniform(k, n)
        with threadpool_limits(threads):
            t_opt, t_ref = seconds_per_call(lambda: opt.matmul(a, b), lambda: ref.matmul(a, b),
                                            repeats=repeats, min_sample=0.02)
        table.add(f"small matmul float32 {m}x{k}x{n}", gflops(m, n, k, t_opt), "GFLOP/s",
                  t_ref / t_opt, 0.9, f"numpy {t_ref * 1e6:.1f} us, optimized "
                  f"{t_opt * 1e6:.1f} us", kind="small_matmul", shape=[m, k, n])
    for count, m, k, n in SMALL_BATCHED:
        a, b = _uniform(count, m, k), _uniform(count, k, n)
        with threadpool_limits(threads):
            t_opt, t_ref = seconds_per_call(lambda: opt.batched_matmul(a, b),
                                            lambda: ref.batched_matmul(a, b),
                                            repeats=repeats, min_sample=0.02)
        table.add(f"batched matmul float32 {count}x({m}x{k}x{n})",
                  gflops(count * m, n, k, t_opt), "GFLOP/s", t_ref / t_opt, 0.9,
                  f"numpy {t_ref * 1e6:.1f} us, optimized {t_opt * 1e6:.1f} us",
                  kind="small_matmul", shape=[count, m, k, n])


#: The default board's MLP training-step shapes: (batch, features, hidden, classes).
MLP_STEPS = [(8, 64, 32, 10), (64, 3072, 256, 10)]


def _mlp_step(model, optimizer, loss, x, y):
    optimizer.zero_grad()
    loss(model(x), y).backward()
    optimizer.step()


def mlp_rows(table, opt, ref, threads, repeats, torch):
    """One SGD training step (GELU MLP, cross-entropy), as the board's event runs it:
    against PyTorch eager, and against the same framework on the numpy backend."""
    for batch, features, hidden, classes in MLP_STEPS:
        label = f"batch {batch} {features}-{hidden}-{hidden}-{classes}"
        tinytorch.manual_seed(0)
        model = tinytorch.models.build_mlp(features, (hidden, hidden), classes,
                                           activation=tinytorch.nn.GELU)
        sgd, loss = tinytorch.optim.SGD(model.parameters(), lr=0.01), tinytorch.nn.CrossEntropyLoss()
        x, y = _uniform(batch, features), RNG.integers(0, classes, batch)
        tx = tinytorch.Tensor(x)

        def ours(backend=opt):
            with tinytorch.use_backend(backend):
                _mlp_step(model, sgd, loss, tx, y)
        with threadpool_limits(threads):
            t_ours, t_numpy = seconds_per_call(ours, lambda: ours(ref), repeats=repeats,
                                               min_sample=0.05)
        table.add(f"MLP train step {label}: vs numpy backend", t_ours * 1e6, "us",
                  t_numpy / t_ours, 1.0, f"numpy backend {t_numpy * 1e6:.0f} us",
                  kind="model")
        if torch is None:
            table.add(f"MLP train step {label}: vs torch", None, "",
                      note="skipped (torch not installed)")
            continue
        tnn = torch.nn
        layers, width = [], features
        for _ in range(2):
            layers += [tnn.Linear(width, hidden), tnn.GELU(approximate="tanh")]
            width = hidden
        twin = tnn.Sequential(*layers, tnn.Linear(width, classes))
        tsgd, tloss = torch.optim.SGD(twin.parameters(), lr=0.01), tnn.CrossEntropyLoss()
        torch.set_num_threads(threads)
        ttx, ty = torch.from_numpy(x), torch.from_numpy(y)
        t_ours, t_torch = seconds_per_call(ours, lambda: _mlp_step(twin, tsgd, tloss, ttx, ty),
                                           repeats=repeats, min_sample=0.05)
        table.add(f"MLP train step {label}: vs torch", t_ours * 1e6, "us", t_torch / t_ours,
                  1.0, f"torch eager {t_torch * 1e6:.0f} us", kind="model")


def transformer_row(table, opt, ref, threads, repeats):
    """The board's larger transformer event: forward, batch 4 x 64 tokens, 2 layers."""
    tinytorch.manual_seed(0)
    model = tinytorch.models.build_transformer(256, 64, 64, 4, 2).eval()
    ids = RNG.integers(0, 256, size=(4, 64))

    def run(backend):
        with tinytorch.use_backend(backend), tinytorch.no_grad():
            model(ids)
    with threadpool_limits(threads):
        t_ours, t_numpy = seconds_per_call(lambda: run(opt), lambda: run(ref),
                                           repeats=repeats, min_sample=0.05)
    table.add("transformer fwd 4x64 tokens: vs numpy backend", t_ours * 1e3, "ms",
              t_numpy / t_ours, 1.0, f"numpy backend {t_numpy * 1e3:.2f} ms", kind="model")


def overhead_rows(table):
    """Per-call cost of tinytorch.matmul's dispatch and the contract's validation."""
    out = np.zeros((1, 1), np.float32)

    class Trivial(ComputeBackend):
        def matmul(self, a, b):
            return out

        def conv2d(self, x, w, stride=1, padding=0):
            raise NotImplementedError

    a = np.ones((1, 1), np.float32)
    trivial = Trivial()
    bare = Trivial.matmul.__tinytorch_unchecked__
    with tinytorch.use_backend(trivial):
        t_bare, t_checked, t_dispatch = seconds_per_call(
            lambda: bare(trivial, a, a), lambda: trivial.matmul(a, a),
            lambda: tinytorch.matmul(a, a), repeats=9, min_sample=0.02)
    us = (t_dispatch - t_bare) * 1e6
    table.add("overhead: tinytorch.matmul dispatch+validation", us, "us", 10 / max(us, 1e-3),
              1.0, f"validation alone {(t_checked - t_bare) * 1e6:.2f} us (target: < 10 us)",
              kind="overhead")


# ---------------------------------------------------------------- main

#: Sections of the table, in the order they run ("layers2": the layers on 2 threads).
SECTIONS = ("matmul", "scaling", "naive", "conv", "layers", "layers2", "memory", "cnn", "small",
            "mlp", "overhead")

def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes, fewer repeats")
    parser.add_argument("--threads", type=int, default=1,
                        help="threads for every side of the main table (default 1: the "
                             "GEMM targets are single-thread); the scaling row uses 1 and 2")
    parser.add_argument("--only", default="", metavar="SECTION,...",
                        help="run only these sections: " + ", ".join(SECTIONS))
    parser.add_argument("--memory-probe", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.memory_probe:
        return memory_probe(args.threads)
    repeats, min_sample = (3, 0.005) if args.quick else (11, 0.02)

    unset = os.environ.get("TINYTORCH_BENCH_UNSET")
    print(f"unset for this process: {unset}" if unset else
          "OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE: not set")
    for lib in threadpool_info():
        print(f"BLAS/OpenMP: {lib.get('internal_api')} {lib.get('version')} "
              f"kernel={lib.get('architecture')} threads={lib.get('num_threads')} "
              f"({os.path.basename(lib.get('filepath', ''))})")
    opt, ref, torch = OptimizedBackend(threads=args.threads), NumpyBackend(), torch_or_none()
    print(f"optimized: micro-kernel {opt.isa}, openmp={opt.openmp}, threads={opt.threads}; "
          f"torch: {torch.__version__ if torch else 'not installed'}; cores: {os.cpu_count()}")
    print(f"{'row':<44} {'value':>22} {'ratio':>9}  target")

    only = {name.strip() for name in args.only.split(",") if name.strip()}
    if only - set(SECTIONS):
        parser.error(f"--only: unknown section(s) {', '.join(sorted(only - set(SECTIONS)))}; "
                     f"choose from {', '.join(SECTIONS)}")
    t = args.threads
    runs = {
        "matmul": lambda: matmul_rows(table, opt, ref, t, repeats, min_sample, args.quick),
        "scaling": lambda: scaling_row(table, repeats, min_sample, args.quick),
        "naive": lambda: naive_row(table, opt, repeats),
        "conv": lambda: conv_rows(table, opt, ref, t, repeats, min_sample, torch),
        "layers": lambda: layer_rows(table, t, repeats, min_sample, torch),
        "layers2": lambda: layer_rows(table, 2, repeats, min_sample, torch, backward=False),
        "memory": lambda: memory_row(table, t),
        "cnn": lambda: (cnn_row(table, opt, t, repeats, torch),
                        conv_stack_row(table, opt, t, repeats, torch),
                        resnet_train_row(table, opt, t, repeats, torch)),
        "small": lambda: small_matmul_rows(table, opt, ref, t, repeats),
        "mlp": lambda: (mlp_rows(table, opt, ref, t, repeats, torch),
                        transformer_row(table, opt, ref, t, repeats)),
        "overhead": lambda: overhead_rows(table),
    }
    table = Table()
    for section in SECTIONS:
        if not only or section in only:
            runs[section]()
    missed = [r["name"] for r in table.rows if r["met"] is False]
    print(f"targets met: {sum(r['met'] is True for r in table.rows)}, "
          f"not met: {len(missed)}" + (f" ({'; '.join(missed)})" if missed else ""))
    print("JSON " + json.dumps({"threads": args.threads, "quick": args.quick,
                                "isa": opt.isa, "rows": table.rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
