"""W1's matrix product under each precision jaxkde could use on a GPU, against float64.

For MNIST pixels / 255, the product ``Q X^T`` (``--queries`` test images by ``--data``
training images, 784 features) is timed under ``HIGHEST`` (true float32, jaxkde's default),
``HIGH``, ``DEFAULT`` (TF32 on NVIDIA GPUs) and the bfloat16 multi-pass dot algorithms
(``BF16_BF16_F32_X3``, ``_X6``) where the backend has them (medians of 5 after a warm-up).
Each squared distance ``|q|^2 + |x|^2 - 2 q.x`` formed from that product in float32 is compared
with float64 on the first 200 queries, in nats of a Gaussian term at ``h = 0.2``, beside
``c_k eps (|q|^2 + |x|^2) / (2 h^2)``, the bound jaxkde's rounding-error account assumes for
true float32 products (:func:`jaxkde.gemm_error_bound`): a precision whose error exceeds it
cannot carry the account. About a minute on an H100; on a CPU pass smaller sizes.

Usage::

    python benchmarks/precision.py MNIST_DIR [--queries 10000] [--data 60000] [--out FILE]
"""

from __future__ import annotations

import argparse
import pathlib
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from _report import emit, machine

import jaxkde
from jaxkde.apps.datasets import read_idx

H = 0.2


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("data_dir", type=pathlib.Path)
    p.add_argument("--queries", type=int, default=10000)
    p.add_argument("--data", type=int, default=60000)
    p.add_argument("--out", type=pathlib.Path)
    args = p.parse_args(argv)

    def images(name, n):
        return (read_idx(args.data_dir / name).reshape(-1, 784)[:n] / np.float32(255)).astype(
            np.float32
        )

    x = images("train-images-idx3-ubyte.gz", args.data)
    q = images("t10k-images-idx3-ubyte.gz", args.queries)
    xd, qd = jnp.asarray(x), jnp.asarray(q)
    x_sq, q_sq = (np.sum(a.astype(np.float64) ** 2, axis=1) for a in (x, q))
    k = min(200, len(q))
    ref = q_sq[:k, None] + x_sq[None, :] - 2 * q[:k].astype(np.float64) @ x.T.astype(np.float64)
    bound = jaxkde.gemm_error_bound(784, np.float32) * np.max(q_sq[:k, None] + x_sq[None, :])
    choices = [(n, getattr(jax.lax.Precision, n)) for n in ("HIGHEST", "HIGH", "DEFAULT")]
    for name in ("BF16_BF16_F32_X6", "BF16_BF16_F32_X3", "TF32_TF32_F32"):
        preset = getattr(getattr(jax.lax, "DotAlgorithmPreset", None), name, None)
        if preset is not None:
            choices.append((name, preset))
    flops = 2.0 * len(q) * len(x) * 784
    rows = []
    for name, precision in choices:
        fn = jax.jit(lambda a, b, precision=precision: jnp.matmul(a, b.T, precision=precision))
        try:
            fn(qd, xd).block_until_ready()
        except Exception as exc:  # an algorithm this backend lacks
            rows.append(f"| {name} | not available ({type(exc).__name__}) | | | |")
            continue
        times = []
        for _ in range(5):
            t0 = time.perf_counter()
            fn(qd, xd).block_until_ready()
            times.append(time.perf_counter() - t0)
        cross = np.asarray(fn(qd[:k], xd), np.float64)
        q_sq32, x_sq32 = np.asarray(q_sq[:k], np.float32), np.asarray(x_sq, np.float32)
        d2 = q_sq32[:, None] + x_sq32[None] - 2 * cross
        err = float(np.max(np.abs(d2 - ref))) / (2 * H * H)
        sec = statistics.median(times)
        rows.append(f"| {name} | {sec:.4g} | {flops / sec / 1e12:.3g} | {err:.2e} | "
                    f"{'yes' if err <= bound / (2 * H * H) else 'no'} |")  # fmt: skip
        print(rows[-1], flush=True)
    table = "\n".join([
        f"W1's product, {len(q)} x {len(x)} x 784, per precision; {machine()}. Error: the "
        f"largest of |d2 - d2_float64| / (2 h^2), h = {H}, on {k} queries; the account's bound "
        f"for true float32 products is {bound / (2 * H * H):.2e} nats.",
        "",
        "| precision | time (s) | TFLOP/s | max error (nats per term) | within the account's "
        "bound |",
        "| --- | ---: | ---: | ---: | --- |",
        *rows,
    ])  # fmt: skip
    emit(table, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
