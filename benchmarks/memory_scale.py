"""Peak memory of a run as the data grow: a SYNTHETIC scene of N samples (a 20-feature teacher input, a 10-feature
student input, one regression target), 57 labelled training samples, 20 labelled validation samples, every other
training sample paired and unlabelled; N = 5,250 / 10,500 / 21,000 (the 21k-sample, 10-feature case of issue 37).

Each run is ``python -m cmkd run <yaml> --quiet`` with library defaults (export off) as a subprocess; its peak RSS is
``os.wait4``'s ``ru_maxrss``. Usage::

    python benchmarks/memory_scale.py [--sizes 5250 10500 21000] [--out /tmp/cmkd-memory]

Writes ``benchmarks/memory_scale.md`` and ``.json``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from common import ROOT, save

YAML = """name: scene-synthetic
data:
  path: scene.npz
  modalities: {teacher: {kind: vector}, student: {kind: vector}}
  targets: {y: {kind: regression}}
teacher: {modalities: [teacher]}
student: {modalities: [student]}
export: {enabled: false}
"""


def make_case(n: int, folder: Path, seed: int = 0) -> Path:
    """The SYNTHETIC scene of ``n`` samples (55% train, 17% validation, 28% test) as an npz + YAML in ``folder``."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, 4))
    teacher = (z @ rng.normal(size=(4, 20)) + 0.05 * rng.normal(size=(n, 20))).astype(np.float32)
    student = (np.tanh(z @ rng.normal(size=(4, 10))) + 0.2 * rng.normal(size=(n, 10))).astype(np.float32)
    y = (2 * z[:, :1] + np.sin(z[:, 1:2])).astype(np.float32)
    n_tr, n_va = int(0.55 * n), int(0.17 * n)
    split = np.full(n, 2, np.int64)
    split[:n_tr], split[n_tr:n_tr + n_va] = 0, 1
    keep = np.r_[rng.choice(n_tr, 57, replace=False), n_tr + rng.choice(n_va, 20, replace=False)]
    labelled = np.zeros(n, bool)
    labelled[keep] = True
    labelled[split == 2] = True
    y[~labelled] = np.nan
    folder.mkdir(parents=True, exist_ok=True)
    np.savez(folder / "scene.npz", teacher=teacher, student=student, y=y, split=split)
    (folder / "scene.yaml").write_text(YAML)
    return folder / "scene.yaml"


def one(n: int, out: Path) -> dict:
    """One run on the scene of ``n`` samples: its peak RSS (MB) and wall seconds."""
    folder = out / f"n{n}"
    cfg = make_case(n, folder)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT / "src"), env.get("PYTHONPATH")) if p)
    t0 = time.time()
    with open(folder / "stderr.txt", "wb") as se:
        proc = subprocess.Popen([sys.executable, "-m", "cmkd", "run", str(cfg), "--out", str(folder / "run"),
                                 "--quiet", "--overwrite"], stdout=subprocess.DEVNULL, stderr=se, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = rc = os.waitstatus_to_exitcode(status)
    if rc != 0:
        raise RuntimeError(f"n={n}: exit code {rc}: {(folder / 'stderr.txt').read_text()[-400:]}")
    return {"n": n, "peak_rss_mb": round(usage.ru_maxrss / 1024, 1), "wall_s": round(time.time() - t0, 1)}


# measured with this script (one run per size) on the way to the table: kept in the table's notes
HISTORY = ("Earlier, with the same script: 1,028 / 1,492 / 2,414 MB at 5,250 / 10,500 / 21,000 samples before the "
           "forests a run no longer needs were released; 1,816 MB at 21,000 after that. ONNX Runtime session options "
           "(optimisation level, arena, memory pattern, a path instead of bytes) changed nothing in its load peak of "
           "the tree student's 2.3M-node forest (+1.10 GB); exporting a forest of more than 250k nodes in parts "
           "summed by Sum brought it to +0.73 GB, hence the table.")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[5250, 10500, 21000])
    ap.add_argument("--out", type=Path, default=Path("/tmp/cmkd-memory"))
    args = ap.parse_args()
    rows = []
    for n in args.sizes:
        rows.append(one(n, args.out))
        print(f"n={n}: peak RSS {rows[-1]['peak_rss_mb']:.0f} MB, {rows[-1]['wall_s']:.0f} s", flush=True)
    md = ["## Peak memory as the data grow (`python benchmarks/memory_scale.py`)", "",
          "SYNTHETIC scene: 20-feature teacher input, 10-feature student input, 57 + 20 labels, the rest of the "
          "training samples paired and unlabelled; library defaults, export off; one run per size (seed 0).", "",
          "| samples | peak RSS (MB) | wall (s) |", "|---|---|---|"]
    md += [f"| {r['n']:,} | {r['peak_rss_mb']:.0f} | {r['wall_s']:.0f} |" for r in rows]
    md += ["", HISTORY]
    save("memory_scale", {"runs": rows}, "\n".join(md) + "\n")


if __name__ == "__main__":
    main()
