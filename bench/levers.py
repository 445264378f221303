"""Speed levers for the CPU trainer, each measured on against off in one run (issue 13).

- batch norm: `nn.BatchNorm2d` (PyTorch's native kernel) against `ssvae_core.batchnorm`'s
  rows path, forward + backward on one step's maps [60, 6, 64, 64] (the `small` preset's
  first layer), and the naive tensor-op version (`var_mean` over the rows) for reference;
- the host allocator (`ssvae_core.allocator`): `ssvae_core.train`'s step in a fresh process
  with its settings off and on, at `small` and `paper` (pairs/s);
- `torch.compile` of the centre-of-mass encoder against eager, per step (forward + backward),
  and the compile time the first step pays;
- the probe's batch (`ssvae_core.frames.frames_per_batch`): 300 paper-size frames encoded
  without gradients in batches of 256 against 4, each in a fresh process (seconds, peak RSS);
- oneDNN's instruction set for Fig. 2's convolutions (AVX-512 against AVX2), in fresh
  processes: measured, not kept;
- Fig. 2's convolutions by the C kernels (`ssvae_core.conv3x3`, NCHW) against oneDNN in
  channels-last, forward + backward, and each one's error against float64;
- Fig. 2's first batch norm and ReLU by the C kernels (``batchnorm.c``, one pass each way)
  against PyTorch's batch norm and ReLU, both NCHW, forward + backward, and each one's error
  against float64;
- the first ReLU's output not kept for the backward (`conv3x3.conv2d`'s ``input_from``: the
  second convolution's weight gradient reads it from the batch norm's input): a paper-size
  training step in fresh processes, against kept (ms, the step's peak memory, and whether
  the weights are the same to the bit);
- start-up: importing the command line, importing the trainer (torch), and the first
  optimiser a process builds: ``torch.optim``'s imports `torch._dynamo`, `ssvae_core.optim`'s
  (the same rules, written out) does not.

One torch thread, best of `--rounds` rounds, the variants alternating so machine noise hits
them alike. A ratio above 1 means the lever is faster.

    python bench/levers.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor, nn

from ssvae_core import batchnorm, conv3x3
from ssvae_core.batchnorm import BatchNorm2d
from ssvae_core.encoder import CentreOfMassEncoder
from ssvae_core.frames import frames_per_batch

FRAMES = (60, 3, 64, 64)  # one `small` step: 2B distinct frames at most, B = 30
MAPS = (60, 6, 64, 64)  # after the first convolution (hidden = 6)


def _best_ms(work: Callable[[], object], rounds: int, repeats: int = 10) -> float:
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(repeats):
            work()
        best = min(best, (time.perf_counter() - start) / repeats)
    return best * 1e3


def _alternating_ms(variants: dict[str, Callable[[], object]], rounds: int) -> dict[str, float]:
    """Each variant's best ms over `rounds` rounds, the variants alternating within a round
    so machine noise hits them alike."""
    times = dict.fromkeys(variants, float("inf"))
    for _ in range(rounds):
        for name, work in variants.items():
            times[name] = min(times[name], _best_ms(work, 1))
    return times


def _fresh(code: str, *args: str, env: dict[str, str] | None = None) -> str:
    """The last line `code` prints, run in a fresh interpreter (``sys.argv[1:]`` = args)."""
    done = subprocess.run(
        [sys.executable, "-c", code, *args], check=True, capture_output=True, text=True, env=env
    )
    return done.stdout.strip().splitlines()[-1]


def _relative_error(got: list[Tensor], want: list[Tensor]) -> float:
    """The largest |got − want| of any pair, relative to that pair's largest |want|."""
    return max(
        ((g.double() - w).abs().max() / w.abs().max()).item()
        for g, w in zip(got, want, strict=True)
    )


def batch_norm_rows(x: Tensor, weight: Tensor, bias: Tensor, eps: float = 1e-5) -> Tensor:
    """Training-mode batch norm of x [N, C, H, W] (channels-last) as rows [N*H*W, C]."""
    n, c, h, w = x.shape
    rows = x.permute(0, 2, 3, 1).reshape(-1, c)
    var, mean = torch.var_mean(rows, dim=0, correction=0)
    out = (rows - mean) * (torch.rsqrt(var + eps) * weight) + bias
    return out.view(n, h, w, c).permute(0, 3, 1, 2)


def batch_norm(rounds: int) -> dict[str, float]:
    x = torch.randn(MAPS).contiguous(memory_format=torch.channels_last).requires_grad_()
    grad = torch.randn(MAPS).contiguous(memory_format=torch.channels_last)  # as from ReLU
    native, rows_path = nn.BatchNorm2d(MAPS[1]), BatchNorm2d(MAPS[1])
    weight = torch.ones(MAPS[1], requires_grad=True)
    bias = torch.zeros(MAPS[1], requires_grad=True)
    diff = (native(x) - rows_path(x)).abs().max().item()
    variants: dict[str, Callable[[], object]] = {
        "native": lambda: native(x).backward(grad),
        "rows": lambda: rows_path(x).backward(grad),
        "ops": lambda: batch_norm_rows(x, weight, bias).backward(grad),
    }
    times = _alternating_ms(variants, rounds)
    return {
        "batch norm native ms (fwd+bwd)": times["native"],
        "batch norm rows path ms (fwd+bwd)": times["rows"],
        "batch norm lever gain (native / rows path)": times["native"] / times["rows"],
        "batch norm max |difference|": diff,
        "batch norm naive tensor ops ms (fwd+bwd)": times["ops"],
    }


ALLOCATOR = """
import json, sys
if sys.argv[1] == "on":
    from ssvae_core import allocator
    allocator.tune_process()
sys.path.insert(0, sys.argv[4])
import torch
from trainer import ours
from ssvae_core import loader
from ssvae_core.balls import simulate
torch.set_num_threads(1)
cfg = loader.load(sys.argv[2], None, ["train.device=cpu"])
video = simulate(cfg.data.balls, cfg.data.seed)
ours(cfg, video, 1)  # warm-up
print(json.dumps(ours(cfg, video, int(sys.argv[3]))))
"""


def allocator(rounds: int, presets: tuple[tuple[str, int], ...]) -> dict[str, float]:
    """Pairs/s of `ssvae_core.train`'s step in fresh processes, allocator settings off / on."""
    bench = str(Path(__file__).resolve().parent)
    out = {}
    for preset, steps in presets:
        best = {"off": 0.0, "on": 0.0}
        for _ in range(rounds):
            for mode in best:
                pairs = float(_fresh(ALLOCATOR, mode, preset, str(steps), bench))
                best[mode] = max(best[mode], pairs)
        out[f"allocator {preset}: pairs/s off"] = best["off"]
        out[f"allocator {preset}: pairs/s on"] = best["on"]
        out[f"allocator {preset}: lever gain (on / off)"] = best["on"] / best["off"]
    return out


def compiled(rounds: int) -> dict[str, float]:
    encoder = CentreOfMassEncoder().to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    frames = torch.rand(FRAMES).contiguous(memory_format=torch.channels_last)

    def step(model: Callable[[Tensor], Tensor]) -> None:
        model(frames).square().sum().backward()

    start = time.perf_counter()
    try:
        fast = torch.compile(encoder)
        step(fast)
    except Exception as err:  # no compiler here: the lever does not apply
        print(f"[levers] torch.compile unavailable: {type(err).__name__}", file=sys.stderr)
        return {"compile: unavailable": 1.0}
    first = time.perf_counter() - start
    times = dict.fromkeys(("eager", "compiled"), float("inf"))
    for _ in range(rounds):
        times["eager"] = min(times["eager"], _best_ms(lambda: step(encoder), 1))
        times["compiled"] = min(times["compiled"], _best_ms(lambda: step(fast), 1))
    return {
        "encoder step eager ms": times["eager"],
        "encoder step compiled ms": times["compiled"],
        "compile lever gain (eager / compiled)": times["eager"] / times["compiled"],
        "compile: first step s": first,
    }


CONV_ISA = """
import hashlib, json, time, torch
from torch import nn
torch.set_num_threads(1)
cl = torch.channels_last
torch.manual_seed(0)
x = torch.rand(60, 3, 64, 64).contiguous(memory_format=cl)
convs = [nn.Conv2d(3, 6, 3, padding=1), nn.Conv2d(6, 3, 3, padding=1)]
for conv in convs:
    conv.to(memory_format=cl)
def step():
    h = convs[0](x)
    convs[1](h).square().sum().backward()
for _ in range(3):
    step()
best = float("inf")
for _ in range(5):
    tic = time.perf_counter()
    for _ in range(10):
        step()
    best = min(best, (time.perf_counter() - tic) / 10)
grads = b"".join(p.grad.numpy().tobytes() for conv in convs for p in conv.parameters())
print(json.dumps({"ms": best * 1e3, "grad": hashlib.sha256(grads).hexdigest()}))
"""


def conv_isa(rounds: int) -> dict[str, float]:
    """Fig. 2's two convolutions (forward + backward, one `small` step) in fresh processes,
    oneDNN free to use AVX-512 (its default here) against capped at AVX2
    (``ONEDNN_MAX_CPU_ISA=AVX2``): its AVX-512 kernels block output channels by 16, and Fig. 2
    has 6 and 3. Also whether every gradient is the same to the bit (a hash of their bytes)."""
    best = {"default": float("inf"), "AVX2": float("inf")}
    grads = {}
    for _ in range(rounds):
        for isa in best:
            env = {**os.environ, **({"ONEDNN_MAX_CPU_ISA": isa} if isa != "default" else {})}
            got = json.loads(_fresh(CONV_ISA, env=env))
            best[isa], grads[isa] = min(best[isa], got["ms"]), got["grad"]
    return {
        "convolutions ms (fwd+bwd), oneDNN default (AVX-512 here)": best["default"],
        "convolutions ms (fwd+bwd), ONEDNN_MAX_CPU_ISA=AVX2": best["AVX2"],
        "conv ISA lever gain (default / AVX2), not kept": best["default"] / best["AVX2"],
        "conv ISA: same gradients to the bit (1 = yes)": float(grads["default"] == grads["AVX2"]),
    }


def native_conv(rounds: int) -> dict[str, float]:
    """Fig. 2's two convolutions, forward + backward on one `small` step ([60, 3, 64, 64] ->
    6 -> 3 maps): oneDNN in channels-last (PyTorch's fastest layout for them) against the C
    kernels in NCHW, and the largest error of each one's weight gradients against float64,
    relative to the gradient's largest entry."""
    if conv3x3.library() is None:
        return {"native conv: C kernels not built (no C compiler)": float("nan")}
    torch.manual_seed(0)
    made = [nn.Conv2d(3, 6, 3, padding=1), nn.Conv2d(6, 3, 3, padding=1)]  # float32 weights
    exact = [copy.deepcopy(conv).double() for conv in made]
    x = torch.rand(FRAMES)

    def step(convs: list[nn.Module], frames: Tensor) -> list[Tensor]:
        for conv in convs:
            conv.zero_grad()
        convs[1](convs[0](frames)).square().sum().backward()
        return [conv.weight.grad for conv in convs]  # type: ignore[misc]

    want = step(exact, x.double())
    cl = torch.channels_last
    variants = {
        "oneDNN": (nn.Conv2d, x.contiguous(memory_format=cl), cl),
        "C": (conv3x3.Conv2d, x, torch.contiguous_format),
    }
    errors, works = {}, {}
    for name, (kind, frames, layout) in variants.items():
        convs = [kind(3, 6, 3, padding=1), kind(6, 3, 3, padding=1)]
        for conv, original in zip(convs, made, strict=True):
            conv.load_state_dict(original.state_dict())
            conv.to(memory_format=layout)
        errors[name] = _relative_error(step(convs, frames), want)
        works[name] = lambda c=convs, f=frames: step(c, f)
    times = _alternating_ms(works, rounds)
    return {
        "native conv: ms (fwd+bwd), oneDNN channels-last": times["oneDNN"],
        "native conv: ms (fwd+bwd), C kernels NCHW": times["C"],
        "native conv lever gain (oneDNN / C)": times["oneDNN"] / times["C"],
        "native conv: weight-gradient error vs float64, oneDNN": errors["oneDNN"],
        "native conv: weight-gradient error vs float64, C kernels": errors["C"],
    }


def native_batch_norm(rounds: int) -> dict[str, float]:
    """Fig. 2's first batch norm and its ReLU, forward + backward on one `small` step's maps
    [60, 6, 64, 64] in NCHW (the layout the C convolutions give): PyTorch's `nn.BatchNorm2d`
    then `torch.relu` against `BatchNorm2d.forward_relu` by the C kernels; and the largest
    error of each one's input and weight gradients against float64, relative to their
    largest entry."""
    if batchnorm.library() is None:
        return {"native batch norm: C kernels not built (no C compiler)": float("nan")}
    torch.manual_seed(0)
    x = (torch.randn(MAPS) * 2 + 3).requires_grad_()  # a conv output: offset mean
    grad = torch.randn(MAPS)
    exact_norm = nn.BatchNorm2d(MAPS[1]).double()
    with torch.no_grad():
        exact_norm.weight.uniform_(0.5, 2.0)
        exact_norm.bias.normal_()
    pytorch, ours = nn.BatchNorm2d(MAPS[1]), BatchNorm2d(MAPS[1])
    pytorch.load_state_dict(exact_norm.state_dict())
    ours.load_state_dict(exact_norm.state_dict())
    variants: dict[str, tuple[nn.BatchNorm2d, Callable[[Tensor], Tensor]]] = {
        "PyTorch": (pytorch, lambda v: torch.relu(pytorch(v))),
        "C": (ours, ours.forward_relu),
    }
    xd = x.detach().double().requires_grad_()
    torch.relu(exact_norm(xd)).backward(grad.double())
    want = [xd.grad, exact_norm.weight.grad]
    errors, works = {}, {}
    for name, (norm, apply) in variants.items():
        x.grad = None
        apply(x).backward(grad)
        errors[name] = _relative_error([x.grad, norm.weight.grad], want)  # type: ignore[list-item]
        works[name] = lambda f=apply: f(x).backward(grad)
    times = _alternating_ms(works, rounds)
    return {
        "native batch norm + ReLU: ms (fwd+bwd), PyTorch NCHW": times["PyTorch"],
        "native batch norm + ReLU: ms (fwd+bwd), C kernels NCHW": times["C"],
        "native batch norm lever gain (PyTorch / C)": times["PyTorch"] / times["C"],
        "native batch norm: gradient error vs float64, PyTorch": errors["PyTorch"],
        "native batch norm: gradient error vs float64, C kernels": errors["C"],
    }


PROBE_BATCH = """
import hashlib, json, sys, time, torch
from ssvae_core import allocator, loader
from ssvae_core.frames import encode_all
from ssvae_core.train import Run, video_on_device
allocator.reuse_freed_memory()  # as `ssvae` and every trial
torch.set_num_threads(1)
cfg = loader.load("paper", None, ["data.n_frames=300", "train.device=cpu"])
run = Run(cfg, *video_on_device(cfg, None))
batch = int(sys.argv[1])
tic = time.perf_counter()
z = encode_all(run.encoder, run.frames, batch=batch or None)
seconds = time.perf_counter() - tic
digest = hashlib.sha256(z.tobytes()).hexdigest()
# VmHWM, this process's own peak: ru_maxrss would report the parent's size at the fork
peak = int(open("/proc/self/status").read().split("VmHWM:")[1].split()[0]) / 1024
print(json.dumps({"s": seconds, "peak": peak, "z": digest}))
"""


def probe_batch(rounds: int) -> dict[str, float]:
    """The probe's encoding of 300 paper-size frames (256 px) in a fresh process: in batches
    of 256 frames (as once) against `frames.frames_per_batch` (4 here); seconds (best of
    `rounds`), peak RSS (the largest), and whether the representations are the same to the bit
    (a hash of their bytes)."""
    ours = frames_per_batch(256, 256, torch.device("cpu"))
    best = {"256": {"s": float("inf"), "peak": 0.0}, "0": {"s": float("inf"), "peak": 0.0}}
    digests = {}
    for _ in range(rounds):
        for batch, seen in best.items():
            got = json.loads(_fresh(PROBE_BATCH, batch))
            seen["s"], seen["peak"] = min(seen["s"], got["s"]), max(seen["peak"], got["peak"])
            digests[batch] = got["z"]
    return {
        "probe 256 px, 300 frames: s in batches of 256": best["256"]["s"],
        f"probe 256 px, 300 frames: s in batches of {ours} (frames_per_batch)": best["0"]["s"],
        f"probe batch lever gain (256 / {ours})": best["256"]["s"] / best["0"]["s"],
        "probe 256 px: peak RSS MiB, batches of 256": best["256"]["peak"],
        f"probe 256 px: peak RSS MiB, batches of {ours}": best["0"]["peak"],
        "probe batch: same representations (1 = yes)": float(digests["256"] == digests["0"]),
    }


RELU_INPUT = """
import hashlib, json, sys, time, torch
from ssvae_core import allocator
allocator.tune_process()  # as `ssvae` and every trial
from ssvae_core import encoder, loader
from ssvae_core.train import Run, video_on_device
if sys.argv[1] == "kept":
    encoder.relu_input = lambda y: None  # the second convolution keeps the ReLU output
torch.set_num_threads(1)
cfg = loader.load("paper", None, ["data.n_frames=300", "train.device=cpu"])
run = Run(cfg, *video_on_device(cfg, None))
status = lambda key: int(open("/proc/self/status").read().split(key)[1].split()[0]) / 1024
before, best = status("VmRSS:"), float("inf")
for _, (index, keep) in zip(range(int(sys.argv[2])), run.batches()):
    tic = time.perf_counter()
    loss, _ = run.step(index, keep)
    run.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    run.update()
    best = min(best, time.perf_counter() - tic)
weights = b"".join(p.detach().numpy().tobytes() for p in run.encoder.parameters())
print(json.dumps({"ms": best * 1e3, "growth": status("VmHWM:") - before,
                  "weights": hashlib.sha256(weights).hexdigest()}))
"""


def relu_input(rounds: int, steps: int = 4) -> dict[str, float]:
    """The first ReLU's output read from the batch norm's input by the second convolution's
    weight gradient (`conv3x3.conv2d`'s ``input_from``), not kept, at the paper's size
    (256 px): a fresh process trains `steps` steps each way; the fastest step (best of
    `rounds` processes), how far the steps grew the process (VmHWM minus the resident size
    before them: the step's own peak), and whether the weights they end with are the same to
    the bit."""
    best = {mode: {"ms": float("inf"), "growth": 0.0} for mode in ("read", "kept")}
    digests = {}
    for _ in range(rounds):
        for mode, seen in best.items():
            got = json.loads(_fresh(RELU_INPUT, mode, str(steps)))
            seen["ms"], seen["growth"] = (
                min(seen["ms"], got["ms"]),
                max(seen["growth"], got["growth"]),
            )
            digests[mode] = got["weights"]
    return {
        "ReLU output: paper step ms, kept": best["kept"]["ms"],
        "ReLU output: paper step ms, read from the BN input": best["read"]["ms"],
        "ReLU output lever gain (kept / read)": best["kept"]["ms"] / best["read"]["ms"],
        "ReLU output: paper step growth MiB, kept": best["kept"]["growth"],
        "ReLU output: paper step growth MiB, read from the BN input": best["read"]["growth"],
        "ReLU output: the same weights (1 = yes)": float(digests["kept"] == digests["read"]),
    }


START_UP = {
    "start-up: import ssvae_core.cli s": "import ssvae_core.cli",
    "start-up: import ssvae_core.train s": "import ssvae_core.train",
    "start-up: first torch.optim.SGD s": (
        "import torch, time; p = [torch.nn.Parameter(torch.zeros(1))]; t = time.perf_counter(); "
        "torch.optim.SGD(p, lr=0.1); print(time.perf_counter() - t)"
    ),
    "start-up: first ssvae_core.optim.SGD s": (
        "import torch, time; from ssvae_core import optim; "
        "p = [torch.nn.Parameter(torch.zeros(1))]; t = time.perf_counter(); "
        "optim.SGD(p, lr=0.1); print(time.perf_counter() - t)"
    ),
}


def start_up(rounds: int) -> dict[str, float]:
    out = {}
    for name, code in START_UP.items():
        best = float("inf")
        for _ in range(rounds):
            start = time.perf_counter()
            done = subprocess.run(
                [sys.executable, "-c", code], check=True, capture_output=True, text=True
            )
            took = time.perf_counter() - start
            best = min(best, float(done.stdout) if done.stdout.strip() else took)
        out[name] = best
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = {**batch_norm(args.rounds), **compiled(args.rounds), **start_up(3)}
    rows |= allocator(3, (("small", 29), ("paper", 3)))
    rows |= probe_batch(3) | conv_isa(3) | native_conv(args.rounds)
    rows |= native_batch_norm(args.rounds) | relu_input(3)
    width = max(map(len, rows))
    print(f"\n{'lever':<{width}}  value")
    for key, value in rows.items():
        print(f"{key:<{width}}  {value:.4g}")


if __name__ == "__main__":
    main()
