"""Larger-than-memory training: writes a SYNTHETIC sharded dataset of at least 10 GB (a 2,560-band "spectrum"
teacher modality, 10 KB per sample, and an 8-value "cheap" student modality), then runs ``cmkd run`` on it in a
child process and reports the child's peak resident memory (``ru_maxrss``), the wall time and the metrics.

Usage:
    python benchmarks/sharded.py [--samples 1000000] [--data /tmp/cmkd-sharded] [--keep]

Writes ``benchmarks/sharded.json`` and ``benchmarks/sharded.md``. The dataset is deleted afterwards unless
``--keep``.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import yaml
from common import save

from cmkd.data.shards import write_shards

BANDS, PER_SHARD = 2560, 50_000


def generate(folder: Path, n: int, seed: int = 0) -> int:
    """Write ``n`` samples in shards of PER_SHARD; returns the bytes written."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(4, BANDS)).astype(np.float32)
    for i, start in enumerate(range(0, n, PER_SHARD)):
        m = min(PER_SHARD, n - start)
        y = rng.integers(0, 4, size=m)
        spec = centres[y] * 0.5 + rng.standard_normal((m, BANDS), dtype=np.float32)
        cheap = (np.eye(4, 8, dtype=np.float32)[y] * 0.8 + rng.standard_normal((m, 8), dtype=np.float32))
        split = rng.choice(3, size=m, p=[0.8, 0.1, 0.1])
        write_shards(folder, {"spectrum": spec, "cheap": cheap, "y": y, "split": split}, i)
    return sum(f.stat().st_size for f in folder.rglob("*.npy"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--samples", type=int, default=1_000_000)
    ap.add_argument("--data", default="/tmp/cmkd-sharded")
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()
    root = Path(args.data)
    shutil.rmtree(root, ignore_errors=True)
    t0 = time.time()
    size = generate(root / "data", args.samples)
    gen_s = time.time() - t0
    cfg = {"name": "sharded-synthetic", "seed": 0,
           "data": {"path": "data", "modalities": {"spectrum": {"kind": "vector", "cost": 10.0},
                                                   "cheap": {"kind": "vector", "cost": 1.0}},
                    "targets": {"y": {"kind": "classification"}}, "split": "split"},
           "teacher": {"modalities": ["spectrum"], "width": 16, "epochs": 1, "batch_size": 1024, "lr": 3e-3},
           "student": {"modalities": ["cheap"], "width": 16, "epochs": 1, "batch_size": 1024, "lr": 3e-3},
           "export": {"latency_runs": 20}}
    (root / "exp.yaml").write_text(yaml.safe_dump(cfg))
    t0 = time.time()
    r = subprocess.run([sys.executable, "-m", "cmkd.cli", "run", str(root / "exp.yaml"), "--out", str(root / "run"),
                        "--quiet"], capture_output=True, text=True)
    wall = time.time() - t0
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    if r.returncode != 0:
        raise SystemExit(f"cmkd run failed: {r.stderr[-2000:]}")
    m = json.loads((root / "run" / "metrics.json").read_text())
    res = {"samples": args.samples, "dataset_bytes": size, "shards": len(list((root / "data").iterdir())),
           "generate_s": gen_s, "run_wall_s": wall, "peak_rss_bytes": peak_kib * 1024,
           "accuracy": {k: v["metrics"]["accuracy"] for k, v in m["models"].items()}}
    md = (f"Sharded SYNTHETIC dataset: {args.samples:,} samples in {res['shards']} shards, "
          f"{size / 1e9:.2f} GB on disk; `cmkd run` (teacher on the 2,560-band spectrum, students on 8 cheap values, "
          f"one epoch each) took {wall / 60:.1f} min with a peak resident memory of {peak_kib / 1024**2:.2f} GiB "
          f"(ru_maxrss of the child process). Test accuracy: "
          + ", ".join(f"{k} {v:.3f}" for k, v in res["accuracy"].items()) + ".")
    save("sharded", res, md)
    if not args.keep:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
