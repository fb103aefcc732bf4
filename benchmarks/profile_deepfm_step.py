"""Where a DeepFM training step's time goes, against DeepCTR-Torch's whole step.

Builds the ML-100K CTR columns of ``bench_ranking.py``, runs recfunnel's DeepFM
training steps (batch 256 by default, 1 thread) under ``torch.profiler`` and
splits the step into the MLP's matrix multiplications (``aten::mm`` and
``aten::addmm``, the same work in every DeepFM implementation) and everything
else. It then times one epoch of DeepCTR-Torch's ``fit`` on the same columns and
prints the ceiling on the training-throughput ratio that the shared matrix
multiplications leave: DeepCTR-Torch's time per step over recfunnel's matmul
time per step (the ratio if the rest of recfunnel's step cost nothing).

    python benchmarks/profile_deepfm_step.py [--batch-size 256] [--steps 200]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_ranking import DEFAULT_DATA, build_ctr_data, run_deepctr_deepfm  # noqa: E402

MATMULS = ("aten::mm", "aten::addmm")


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    if not (args.data / "ml-100k.inter").exists():
        print(f"ML-100K not found at {args.data}; skipping", file=sys.stderr)
        return {}
    torch.set_num_threads(args.threads)
    from torch.profiler import ProfilerActivity, profile

    from recfunnel.stages.rank.models import build_model
    from recfunnel.training.losses import bce_loss
    from recfunnel.training.optim import FusedAdam

    schema, train, _, test = build_ctr_data(args.data)
    torch.manual_seed(0)
    model = build_model("deepfm", schema)
    optimizer = FusedAdam(model.parameters(), lr=1e-3)  # the trainer's optimiser
    train = train.without_sequences().select(torch.randperm(len(train)))
    n_batches = len(train) // args.batch_size

    def steps(count: int) -> None:
        for j in range(count):
            j %= n_batches
            batch = train.select(slice(j * args.batch_size, (j + 1) * args.batch_size))
            loss = bce_loss(model(batch), batch.label)
            loss.backward()
            optimizer.step()

    steps(50)  # warm-up: allocator, Adam state
    timings = []
    for _ in range(3):
        t0 = time.perf_counter()
        steps(args.steps)
        timings.append((time.perf_counter() - t0) / args.steps)
    step_s = float(np.median(timings))
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        steps(args.steps)
    events = prof.key_averages()
    total_us = sum(e.self_cpu_time_total for e in events)
    matmul_us = sum(e.self_cpu_time_total for e in events if e.key in MATMULS)
    # the profiler's own cost per op inflates the small ops, not these long kernels: their absolute
    # time per step is the trustworthy figure, and the ceiling below uses it
    matmul_s = matmul_us / 1e6 / args.steps
    print(f"recfunnel DeepFM: {step_s * 1e3:.3f} ms per step of {args.batch_size} "
          f"({args.batch_size / step_s:,.0f} samples/s, median of 3 x {args.steps} steps)")
    print(f"  matrix multiplications: {matmul_s * 1e3:.3f} ms per step "
          f"({matmul_us / total_us:.1%} of the profiled self time)")
    print("  largest self times:")
    for e in sorted(events, key=lambda e: -e.self_cpu_time_total)[:10]:
        print(f"    {e.key:<40} {e.self_cpu_time_total / total_us:6.1%}  {e.count // args.steps:>3} calls/step")

    deepctr = run_deepctr_deepfm(schema, train, test, 1, args.batch_size, 16, 0)
    deepctr_step_s = args.batch_size / deepctr["train_samples_s"]
    ceiling = deepctr_step_s / matmul_s
    print(f"DeepCTR-Torch DeepFM: {deepctr_step_s * 1e3:.3f} ms per step ({deepctr['train_samples_s']:,.0f} samples/s, "
          f"1 epoch of fit)")
    print(f"ratio now: {deepctr_step_s / step_s:.2f}x; ceiling if all but the matmuls cost nothing: {ceiling:.2f}x")
    return {"step_s": step_s, "matmul_s": matmul_s, "deepctr_step_s": deepctr_step_s, "ceiling": ceiling}


if __name__ == "__main__":
    main()
