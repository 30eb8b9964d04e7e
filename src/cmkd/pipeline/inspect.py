"""``cmkd data``: what cmkd would build from a recipe or an experiment YAML, before any training.

``cmkd data inspect my.yaml`` prints, in a table a person reads in ten seconds, the samples per split (labelled
vs paired unlabelled), each modality's shape, presence and missing-value share, each target's class counts or
range, the time span per split, and every warning. ``cmkd data build my.yaml --out x.npz`` (or the older
``cmkd data RECIPE --out x.npz``) writes the arrays the run would use.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cmkd.errors import CmkdError
from cmkd.nn import losses, models  # noqa: F401 - they register the name checks that validate() runs

PARTS = {0: "train", 1: "val", 2: "test", 3: "calib"}


def data_command(first: str, second: str | None, out: Path | None, overrides: list[str] | None,
                 echo=print, overwrite: bool = False) -> None:  # noqa: ANN001 - a print function
    """``cmkd data inspect TARGET``, ``cmkd data build TARGET --out X.npz`` or ``cmkd data TARGET --out X.npz``."""
    if first == "inspect":
        if second is None:
            raise CmkdError("cmkd data inspect: name a recipe or an experiment YAML")
        if out is not None:
            raise CmkdError("cmkd data inspect writes nothing; drop --out (or use cmkd data build)")
        print_inspection(*inspect(second, overrides))
        return
    target = second if first == "build" else first
    if target is None or (first != "build" and second is not None):
        raise CmkdError("usage: cmkd data inspect TARGET | cmkd data build TARGET --out X.npz")
    if out is None:
        raise CmkdError("cmkd data build: --out X.npz is required")
    write_npz(target, out, overrides, echo, overwrite)


def write_npz(target: str, out: Path, overrides: list[str] | None, echo=print,  # noqa: ANN001
              overwrite: bool = False) -> None:
    """Write the arrays a run of ``target`` would use as an ``.npz`` (an existing file only with ``overwrite``)."""
    from cmkd.io import atomic_write, check_out_file
    from cmkd.pipeline.resolve import resolve

    if out.suffix != ".npz":
        raise CmkdError(f"--out {out}: the file name must end in .npz")
    check_out_file(out, overwrite, "--out")
    _, arrays, _, synthetic = resolve(target, overrides)
    atomic_write(out, lambda tmp: np.savez_compressed(tmp, **arrays))
    echo(f"wrote {out} ({len(next(iter(arrays.values())))} samples{', SYNTHETIC' if synthetic else ''})")


def _load(target: str, overrides: list[str] | None):  # noqa: ANN202 - (config, arrays, source, warnings)
    """The config and arrays of ``target``; a YAML with ``data.sources`` is built here to keep its warnings."""
    from cmkd.config import apply_overrides, load_yaml, validate
    from cmkd.pipeline.resolve import resolve

    p = Path(target)
    if p.suffix.lower() in (".yaml", ".yml") and p.is_file():
        raw = apply_overrides(load_yaml(p), overrides)
        cfg = validate(raw, source=str(p))
        if not cfg.data.path and cfg.data.sources is not None and not cfg.recipe:
            from cmkd.data.sources import absolute_paths, build, declare_names

            b = build(absolute_paths(cfg.data.sources, p.parent), cfg.data, p.parent, cfg.seed, str(p))
            declare_names(b, cfg.data.sources, cfg.data)
            return cfg, b.arrays, str(p), list(b.warnings)
    cfg, arrays, source, _ = resolve(target, overrides)
    return cfg, arrays, source, []


def inspect(target: str, overrides: list[str] | None = None) -> tuple[dict, list[str]]:
    """A summary of what ``target`` builds: ``{"source", "parts": {part: n}, "labelled": {part: n},
    "modalities": {m: {"shape", "present": {part: share}, "missing"}}, "targets": {t: {...}}, "time": {part:
    (first, last)}}`` and the warnings."""
    from cmkd.data.arrays import UNLABELLED, build_data

    cfg, arrays, source, warnings = _load(target, overrides)
    try:
        data = build_data(arrays, cfg.data, cfg.seed, source)
    except CmkdError as e:
        raise CmkdError(f"the run would stop here: {e}") from None
    parts = {PARTS[k]: np.flatnonzero(data.split == k) for k in PARTS if (data.split == k).any()}
    summary: dict = {"source": source, "n": data.n, "parts": {k: len(v) for k, v in parts.items()}}
    summary["labelled"] = {k: len(data.labelled(v)) for k, v in parts.items()}
    mods = {}
    for m, a in data.inputs.items():
        pres = data.present[m]
        x = np.asarray(a[pres]) if data.kinds[m] != "text" else None
        miss = float(np.isnan(x).mean()) if x is not None and x.size else 0.0
        mods[m] = {"shape": tuple(a.shape[1:]), "kind": data.kinds[m], "missing": miss,
                   "present": {k: float(pres[v].mean()) for k, v in parts.items()}}
        if "test" in parts and not pres[parts["test"]].any():
            warnings.append(f"modality '{m}' is absent in every test sample")
    srcs = (cfg.data.sources or {}).get("modalities") or {}
    for m in mods:  # units declared in data.sources
        if isinstance(srcs.get(m), dict) and srcs[m].get("units"):
            mods[m]["units"] = str(srcs[m]["units"])
    summary["modalities"] = mods
    tg = {}
    for t, kind in data.target_kinds.items():
        y = data.targets[t]
        if kind == "classification":
            names = data.classes[t]
            counts = {k: np.bincount(y[v][y[v] != UNLABELLED], minlength=len(names)) for k, v in parts.items()}
            total = sum(counts.values())
            tg[t] = {"kind": kind, "classes": [str(c) for c in names], "counts": {k: c.tolist() for k, c in
                                                                                counts.items()}}
            for c, n in zip(names, total):
                if n == 1:
                    warnings.append(f"target '{t}': class {c} has only one labelled sample")
        else:
            lab = ~np.isnan(y)
            tg[t] = {"kind": kind, "units": cfg.data.targets[t].units,
                     "range": {k: (float(np.nanmin(y[v])), float(np.nanmax(y[v]))) if lab[v].any() else None
                               for k, v in parts.items()}}
    summary["targets"] = tg
    if "time" in arrays and len(arrays["time"]) == data.n:
        tm = arrays["time"]
        summary["time"] = {k: tuple(str(x)[:16].replace("T", " ") for x in np.sort(tm[v])[[0, -1]])
                           for k, v in parts.items()}
    return summary, warnings


def print_inspection(summary: dict, warnings: list[str]) -> None:
    """The inspection as rich tables on the terminal."""
    from rich.console import Console
    from rich.table import Table

    con = Console()
    parts = list(summary["parts"])

    def table(title: str, first: list[str]) -> Table:
        t = Table(title=title, title_justify="left")
        for c in first:
            t.add_column(c)
        for k in parts:
            t.add_column(k, justify="right")
        return t

    tab = table(f"{summary['source']}: {summary['n']} samples", [""])
    tab.add_row("samples", *[str(summary["parts"][k]) for k in parts])
    tab.add_row("labelled", *[str(summary["labelled"][k]) for k in parts])
    tab.add_row("paired unlabelled", *[str(summary["parts"][k] - summary["labelled"][k]) for k in parts])
    if summary.get("time"):
        tab.add_row("first", *[summary["time"][k][0] for k in parts])
        tab.add_row("last", *[summary["time"][k][1] for k in parts])
    con.print(tab)
    units = any("units" in s for s in summary["modalities"].values())
    tab = table("modalities (share of samples present)",
                ["modality", "kind", "shape", *(["units"] if units else []), "missing values"])
    for m, s in summary["modalities"].items():
        tab.add_row(m, s["kind"], str(s["shape"]), *([s.get("units", "")] if units else []), f"{s['missing']:.1%}",
                    *[f"{s['present'][k]:.0%}" for k in parts])
    con.print(tab)
    tab = table("targets (labelled: class counts or range)", ["target", "kind"])
    for t, s in summary["targets"].items():
        if s["kind"] == "classification":
            cells = [" ".join(str(v) for v in s["counts"][k]) for k in parts]
            tab.add_row(t, f"{len(s['classes'])} classes", *cells)
        else:
            tab.add_row(t, "regression" + (f" ({s['units']})" if s.get("units") else ""),
                        *["-" if s["range"][k] is None else
                          f"{s['range'][k][0]:.4g}..{s['range'][k][1]:.4g}" for k in parts])
    con.print(tab)
    for w in warnings:
        con.print(f"[yellow]warning:[/] {w}")
    if not warnings:
        con.print("no warnings")
