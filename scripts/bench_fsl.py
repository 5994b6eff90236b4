"""Memory and speed of the windowed feature similarity loss (method §3, eqs. 9–12) against the
all-pairs form.

Cases (each run in a fresh subprocess, so that its peak-memory reading is its own):

* ``allpairs``: :func:`graphwsss.losses.feature_similarity.feature_similarity_loss_allpairs`,
  the published code's form with dense ``[B, N, N]`` tensors (``N = h w``);
* ``cover``: :func:`graphwsss.losses.feature_similarity_loss` with a window covering the whole
  grid (radius ``max(h, w) - 1``): must give the all-pairs value and gradient;
* ``ours``: the same with the default window, radius ``ceil(3 sigma) = 15`` (961 offsets), as
  graphwsss trains.

Problem: a CAM of 56 x 56 cells (a 448 crop at stride 8), batch 8, 21 classes, sigma = 5,
mu = 2.5; activations are the softmax of smooth random logits, the image smooth random colours
(the cost does not depend on the values). Then a 112 x 112 CAM: the all-pairs form's peak is
estimated from the 56 x 56 measurement scaled by the number of pairs (or, when that case did not
run, from the size of one ``[B, N, N]`` float tensor times 8) and skipped with a message above
``--allpairs-limit-gb``; ours runs.

One step = forward and backward (gradient w.r.t. the activations). Time: median over the timed
steps after one warm-up step. Memory: on CPU the peak resident set size during the steps minus
the resident size once the inputs exist (``/proc/self/clear_refs`` resets the peak where allowed,
else ``getrusage``'s lifetime peak is used); on CUDA ``torch.cuda.max_memory_allocated`` above
the same point. Values and gradients of the 56 x 56 cases are written to a temporary folder and
compared in the parent process.

Threads: the subprocesses run with ``OMP_WAIT_POLICY=PASSIVE`` unless told otherwise (a shared
2-core machine otherwise times OpenMP's spinning, see scripts/bench_propagation.py).

Prints a table; the last line is one JSON object with ``memory_allpairs_over_ours`` and
``speed_ratio`` (all-pairs time / ours time, both at 56 x 56 with the default window).

Usage: ``python scripts/bench_fsl.py [--device auto|cpu|cuda] [--threads N]
[--allpairs-limit-gb 4]``
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import tempfile
import time

import torch
import torch.nn.functional as F

from graphwsss.losses.feature_similarity import (feature_similarity_loss,
                                                 feature_similarity_loss_allpairs)
from graphwsss.utils import resolve_device
from graphwsss.utils.memory import (memory_increase, memory_mark, run_case_if_asked,
                                    run_in_subprocess, synchronize)

BATCH, CLASSES, SIGMA, MU = 8, 21, 5.0, 2.5
ALLPAIRS_TENSORS = 8        # [B, N, N] tensors alive at the all-pairs peak, when not measured


# --------------------------------------------------------------------------------------------
# Inputs and measurement (in the subprocess)
# --------------------------------------------------------------------------------------------

def make_inputs(size: int, device: torch.device):
    """Smooth activations [B, C, s, s] (softmax of upsampled logits) and image [B, 3, s, s]."""
    generator = torch.Generator().manual_seed(0)
    coarse = max(2, size // 8)
    logits = torch.randn(BATCH, CLASSES, coarse, coarse, generator=generator) * 4
    logits = F.interpolate(logits, size=(size, size), mode="bilinear", align_corners=False)
    colours = torch.rand(BATCH, 3, coarse, coarse, generator=generator)
    image = F.interpolate(colours, size=(size, size), mode="bilinear", align_corners=False)
    activations = torch.softmax(logits, dim=1).to(device).requires_grad_()
    return activations, image.clamp(0, 1).to(device)


def run_case(case: dict) -> dict:
    device = resolve_device(case["device"])
    activations, image = make_inputs(case["size"], device)
    if case["kind"] == "allpairs":
        def loss_fn():
            return feature_similarity_loss_allpairs(activations, image, SIGMA, MU)
    else:
        window = case["size"] - 1 if case["kind"] == "cover" else None

        def loss_fn():
            return feature_similarity_loss(activations, image, SIGMA, MU, window=window)
    mark = memory_mark(device)
    peak_was_reset = mark is not None

    times, loss = [], None
    for step in range(1 + case["steps"]):
        activations.grad = None
        synchronize(device)
        start = time.perf_counter()
        loss = loss_fn()
        loss.backward()
        synchronize(device)
        if step > 0:
            times.append(time.perf_counter() - start)

    memory = memory_increase(device, mark)
    if case.get("save"):
        torch.save({"loss": loss.detach().double().cpu(),
                    "grad": activations.grad.detach().double().cpu()}, case["save"])
    return dict(seconds=statistics.median(times), steps=len(times), memory_bytes=memory,
                loss=float(loss.detach()), peak_reset=peak_was_reset, device=str(device),
                threads=torch.get_num_threads())


# --------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads in every case (default: torch's default)")
    parser.add_argument("--omp-wait-policy", default="PASSIVE",
                        choices=["PASSIVE", "ACTIVE", "inherit"])
    parser.add_argument("--allpairs-limit-gb", type=float, default=4.0,
                        help="skip an all-pairs case whose estimated peak exceeds this (GB)")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per case")
    parser.add_argument("--case", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if run_case_if_asked(args, run_case):
        return

    device = resolve_device(args.device)
    print(f"device {device}, threads {args.threads or torch.get_num_threads()}, "
          f"OMP_WAIT_POLICY {args.omp_wait_policy}, load average {os.getloadavg()[0]:.1f}; "
          f"batch {BATCH}, {CLASSES} classes, sigma {SIGMA}, mu {MU}, "
          f"default window radius {math.ceil(3 * SIGMA)}")
    header = f"{'case':18s} {'grid':9s} {'s/step':>8s} {'peak MiB':>9s} {'loss':>14s}"
    print(header)
    print("-" * len(header))

    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as folder:
        def run(name: str, kind: str, size: int, save: bool = False) -> dict:
            case = dict(kind=kind, size=size, device=str(device), threads=args.threads,
                        steps=max(1, args.steps if kind != "allpairs" else min(args.steps, 2)),
                        save=os.path.join(folder, f"{name}.pt") if save else None)
            result = run_in_subprocess(__file__, case, 1200, args.omp_wait_policy)
            results[name] = result
            grid = f"{size}x{size}"
            if "error" in result:
                print(f"{name:18s} {grid:9s} failed: {result['error']}", flush=True)
            else:
                print(f"{name:18s} {grid:9s} {result['seconds']:8.3f} "
                      f"{result['memory_bytes'] / 2**20:9.1f} {result['loss']:14.7e}", flush=True)
            return result

        run("ours_56", "ours", 56, save=True)
        run("cover_56", "cover", 56, save=True)
        allpairs = run("allpairs_56", "allpairs", 56, save=True)
        run("ours_112", "ours", 112)

        pairs_56, pairs_112 = BATCH * 56**4, BATCH * 112**4
        if "error" not in allpairs and allpairs["memory_bytes"] > 0:
            estimate = allpairs["memory_bytes"] * pairs_112 / pairs_56
            basis = "the 56x56 peak scaled by the number of pairs"
        else:
            estimate = ALLPAIRS_TENSORS * pairs_112 * 4
            basis = f"{ALLPAIRS_TENSORS} float32 [B, N, N] tensors"
        if estimate > args.allpairs_limit_gb * 1e9:
            print(f"{'allpairs_112':18s} {'112x112':9s} skipped: needs about "
                  f"{estimate / 1e9:.1f} GB ({basis}; one [B, N, N] float32 tensor is "
                  f"{pairs_112 * 4 / 1e9:.1f} GB), over --allpairs-limit-gb "
                  f"{args.allpairs_limit_gb:g}", flush=True)
        else:
            run("allpairs_112", "allpairs", 112)

        comparison = {}
        files = {name: os.path.join(folder, f"{name}.pt") for name in
                 ("ours_56", "cover_56", "allpairs_56")}
        if all(os.path.exists(path) for path in files.values()):
            saved = {name: torch.load(path, weights_only=True) for name, path in files.items()}
            reference = saved["allpairs_56"]
            for name in ("cover_56", "ours_56"):
                value_diff = float((saved[name]["loss"] - reference["loss"]).abs())
                grad_diff = float((saved[name]["grad"] - reference["grad"]).abs().max())
                comparison[name] = dict(
                    value_abs_diff=value_diff,
                    value_rel_diff=value_diff / max(abs(float(reference["loss"])), 1e-30),
                    grad_max_abs_diff=grad_diff,
                    grad_rel_diff=grad_diff / max(float(reference["grad"].abs().max()), 1e-30))
            cover, ours = comparison["cover_56"], comparison["ours_56"]
            print(f"covering window vs all pairs: max abs diff value {cover['value_abs_diff']:.3e}"
                  f" (relative {cover['value_rel_diff']:.2e}), gradient "
                  f"{cover['grad_max_abs_diff']:.3e} (relative to max |grad| "
                  f"{cover['grad_rel_diff']:.2e})")
            print(f"window 3 sigma vs all pairs (truncation): value relative diff "
                  f"{ours['value_rel_diff']:.2e}, gradient relative diff {ours['grad_rel_diff']:.2e}")

    def ratio(numerator: str, denominator: str, key: str):
        a, b = results.get(numerator), results.get(denominator)
        if not a or not b or "error" in a or "error" in b or not b[key]:
            return None
        return round(a[key] / b[key], 2)

    ours_112 = results.get("ours_112", {})
    print(f"load average at the end {os.getloadavg()[0]:.1f}")
    summary = {
        "memory_allpairs_over_ours": ratio("allpairs_56", "ours_56", "memory_bytes"),
        "speed_ratio": ratio("allpairs_56", "ours_56", "seconds"),
        "speed_ratio_covering_window": ratio("allpairs_56", "cover_56", "seconds"),
        "max_abs_diff_covering": comparison.get("cover_56", {}).get("value_abs_diff"),
        "max_abs_grad_diff_covering": comparison.get("cover_56", {}).get("grad_max_abs_diff"),
        "ours_112_seconds": (round(ours_112["seconds"], 3) if "seconds" in ours_112 else None),
        "ours_112_memory_mb": (round(ours_112["memory_bytes"] / 2**20, 1)
                               if "memory_bytes" in ours_112 else None),
        "allpairs_112_estimated_gb": round(estimate / 1e9, 1),
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
