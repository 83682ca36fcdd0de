#!/usr/bin/env python3
"""PyTorch peers for benches/cuda.rs, timed the same way in the same `run` command.

Method (as in benches/cuda.rs): warm up, give the GPU a head start (torch.cuda._sleep) so the
host enqueues ahead, record an event between consecutive iterations, report the median of
ITERS gaps. Packed int4 weights (32 MiB) rotate over ROTATE copies so that L2 (50 MiB) never
holds the next one; every other operand exceeds L2.

usage: python3 benches/cuda_peer.py [--no-compile]
"""
import statistics
import sys
import time

import torch
import torch.nn.functional as F

ITERS = 60
WARMUP = 5
ROTATE = 4
N = 8192
GROUP = 128


def timed(fn):
    for i in range(WARMUP):
        fn(i)
    torch.cuda.synchronize()
    torch.cuda._sleep(5_000_000)  # ~3 ms head start at ~1.7 GHz
    ev = [torch.cuda.Event(enable_timing=True) for _ in range(ITERS + 1)]
    ev[0].record()
    for i in range(ITERS):
        fn(i)
        ev[i + 1].record()
    torch.cuda.synchronize()
    return statistics.median(ev[i].elapsed_time(ev[i + 1]) * 1e3 for i in range(ITERS))


def row(name, us, nbytes=0.0, peer=None):
    bw = f"{nbytes / us / 1e3:8.0f} GB/s" if nbytes else " " * 13
    p = f"  {peer[1] / us:5.2f}x vs {peer[0]} ({peer[1]:.1f} us)" if peer else ""
    print(f"{name:<58} {us:9.1f} us {bw}{p}", flush=True)


def dequant_int4(codes, scales):
    """codes: uint8 [n, k/2], low nibble = even column; scales: f32 [n, k/GROUP]; sym, zero 8."""
    lo = (codes & 0xF).to(torch.int16)
    hi = (codes >> 4).to(torch.int16)
    q = torch.stack((lo, hi), dim=-1).reshape(codes.shape[0], -1) - 8
    n, k = q.shape
    w = q.reshape(n, k // GROUP, GROUP).to(torch.float32) * scales.unsqueeze(-1)
    return w.reshape(n, k).to(torch.bfloat16)


def main():
    compile_ = "--no-compile" not in sys.argv
    t0 = time.time()
    dev = torch.device("cuda")
    print(f"torch {torch.__version__} on {torch.cuda.get_device_name()}: median of {ITERS}")

    nbytes = 512 << 20
    src = torch.empty(nbytes, dtype=torch.uint8, device=dev)
    dst = torch.empty_like(src)
    copy_us = timed(lambda i: dst.copy_(src))
    row("torch dtod copy 512 MiB", copy_us, 2 * nbytes)
    copy_bw = 2 * nbytes / copy_us
    del src, dst

    # --- int4 g128 dequantize to bf16, eager and compiled (4 rotating weights).
    gen = torch.Generator(device=dev).manual_seed(0)
    codes = [torch.randint(0, 256, (N, N // 2), dtype=torch.uint8, device=dev, generator=gen)
             for _ in range(ROTATE)]
    scales = [torch.rand(N, N // GROUP, device=dev, generator=gen) * 0.01 for _ in range(ROTATE)]
    dbytes = N * N * 2.5 + N * N / GROUP * 4
    us = timed(lambda i: dequant_int4(codes[i % ROTATE], scales[i % ROTATE]))
    row("torch int4 g128 dequantize -> bf16 eager", us, dbytes, ("copy of same bytes", dbytes / copy_bw))
    if compile_:
        try:
            t = time.time()
            cdq = torch.compile(dequant_int4, dynamic=False)
            cdq(codes[0], scales[0])
            torch.cuda.synchronize()
            print(f"    (compile {time.time() - t:.1f} s)")
            ref = dequant_int4(codes[1], scales[1])
            assert torch.equal(cdq(codes[1], scales[1]), ref)
            us = timed(lambda i: cdq(codes[i % ROTATE], scales[i % ROTATE]))
            row("torch int4 g128 dequantize -> bf16 compiled", us, dbytes,
                ("copy of same bytes", dbytes / copy_bw))
        except Exception as e:  # report, keep going
            print(f"    torch.compile dequantize failed: {e!r}")
    del codes, scales

    # --- cuBLAS bf16 GEMV / GEMM y = x · Wᵀ.
    w = torch.randn(N, N, device=dev, dtype=torch.bfloat16)
    for m in (1, 2, 4, 8, 16, 64, 128, 256):
        x = torch.randn(m, N, device=dev, dtype=torch.bfloat16)
        us = timed(lambda i: F.linear(x, w))
        row(f"torch cuBLAS bf16 linear m={m}", us, N * N * 2 if m == 1 else 0)
    del w

    # --- Per-sample cross-entropy 4096 x 49152.
    rows, vocab = 4096, 49152
    logits32 = torch.randn(rows, vocab, device=dev) * 3
    tgt = torch.randint(0, vocab, (rows,), device=dev)
    for dt in (torch.float32, torch.bfloat16):
        lg = logits32.to(dt)
        b = lg.numel() * lg.element_size()
        us = timed(lambda i: F.cross_entropy(lg, tgt, reduction="none"))
        row(f"torch F.cross_entropy none {rows}x{vocab} {dt} eager", us, b,
            ("copy bandwidth over the logits", b / copy_bw))
        if compile_:
            try:
                t = time.time()
                cce = torch.compile(lambda a, y: F.cross_entropy(a, y, reduction="none"), dynamic=False)
                cce(lg, tgt)
                torch.cuda.synchronize()
                print(f"    (compile {time.time() - t:.1f} s)")
                us = timed(lambda i: cce(lg, tgt))
                row(f"torch F.cross_entropy none {rows}x{vocab} {dt} compiled", us, b,
                    ("copy bandwidth over the logits", b / copy_bw))
            except Exception as e:
                print(f"    torch.compile cross_entropy failed: {e!r}")
        del lg
    print(f"total {time.time() - t0:.1f} s")


if __name__ == "__main__":
    main()
