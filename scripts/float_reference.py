#!/usr/bin/env python3
"""Write tests/data/float_formats_ml_dtypes.csv: f32 inputs and the codes ml_dtypes gives them.

An independent check of `FloatFormat::encode` (round to nearest, ties to even, subnormals)
against Google's ml_dtypes. Run once by hand; tests read the committed CSV and never Python:

    pip install --target /tmp/mld ml_dtypes==0.6.0
    PYTHONPATH=/tmp/mld python3 scripts/float_reference.py

ml_dtypes does not saturate E4M3/E5M2 (overflow gives NaN/inf), so inputs stay within
±max_finite, where every conversion agrees; saturation is tested in Rust.
"""
import os

import ml_dtypes
import numpy as np

FORMATS = [
    ("e4m3", ml_dtypes.float8_e4m3fn, 448.0, 2.0**-9),
    ("e5m2", ml_dtypes.float8_e5m2, 57344.0, 2.0**-16),
    ("e2m1", ml_dtypes.float4_e2m1fn, 6.0, 0.5),
]
PER_FORMAT = 1200

rng = np.random.default_rng(20240601)
out = os.path.join(os.path.dirname(__file__), "..", "tests", "data", "float_formats_ml_dtypes.csv")
with open(out, "w") as fh:
    fh.write("format,f32_bits,code\n")
    for name, dtype, max_finite, min_sub in FORMATS:
        # Every value of the format and the midpoints between neighbours (ties), nudged one
        # f32 ulp either way, then log-uniform random magnitudes from min_sub/8 to max.
        codes = np.arange(256 if name != "e2m1" else 16, dtype=np.uint8)
        values = np.abs(codes.view(dtype).astype(np.float64)) if name != "e2m1" else None
        if values is None:
            values = np.array([0, 0.5, 1, 1.5, 2, 3, 4, 6], dtype=np.float64)
        values = np.unique(values[np.isfinite(values)])
        mids = ((values[:-1] + values[1:]) / 2).astype(np.float32)
        exact = np.concatenate([values.astype(np.float32), mids,
                                np.nextafter(mids, np.float32(np.inf)),
                                np.nextafter(mids, np.float32(0))])
        n_random = max(PER_FORMAT - len(exact), 200)
        logs = rng.uniform(np.log2(min_sub / 8), np.log2(max_finite), n_random)
        rand = (2.0 ** logs).astype(np.float32)
        xs = np.concatenate([exact, rand]).astype(np.float32)
        xs = xs[np.abs(xs) <= max_finite]
        signs = np.where(rng.uniform(size=len(xs)) < 0.5, -1, 1).astype(np.float32)
        xs = xs * signs
        enc = xs.astype(dtype)
        if name == "e2m1":
            # float4 values are stored one per byte, low nibble.
            codes = enc.view(np.uint8) & 0xF
        else:
            codes = enc.view(np.uint8)
        for x, c in zip(xs.view(np.uint32), codes):
            fh.write(f"{name},{x:08x},{c}\n")
print("wrote", out)
