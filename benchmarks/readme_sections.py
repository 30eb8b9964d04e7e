"""Paste the result tables written by the other benchmark scripts into the docs, so that every number there comes
from a script:

- ``docs/results.md``, between its ``<!-- NAME:start -->`` / ``<!-- NAME:end -->`` markers: ``results``
  (``benchmarks/results.md``, from ``benchmarks/run_benchmarks.py``), ``label-fraction``
  (``benchmarks/label_fraction.md``) and ``more`` (one section per benchmark listed in :data:`SECTIONS`, each
  only when its .md exists; those of :data:`NOTE_WHEN_ABSENT` with a note instead);
- ``docs/small-data.md``, between ``<!-- small-real:start -->`` / ``<!-- small-real:end -->``: the small real
  cases (``benchmarks/small_real.md``, from ``benchmarks/small_real.py``), or a note while it does not exist; and
  likewise ``cv-threshold``, ``cv-cost``, ``memory-scale`` and ``fold-epochs`` (``benchmarks/cv_threshold.md``,
  ``cv_cost.md``, ``memory_scale.md``, ``fold_epochs.md``);
- ``README.md``, between ``<!-- headline:start -->`` / ``<!-- headline:end -->``: the headline table, the
  label-scarce rows of ``benchmarks/label_fraction.md`` (5 seeds: the recommended model, the distilled network,
  the network on the labels alone and the best classical reference).

Usage:
    python benchmarks/readme_sections.py            # rewrite the generated parts
    python benchmarks/readme_sections.py --check    # exit 1 when they differ from what would be written
"""

from __future__ import annotations

import argparse
import re
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"
RESULTS_PAGE = ROOT / "docs" / "results.md"
SMALL_DATA_PAGE = ROOT / "docs" / "small-data.md"
README = ROOT / "README.md"

# benchmark -> the section's title on the results page; its command is `python benchmarks/<benchmark>.py`
SECTIONS = [("recommended", "The recommended student against the best classical reference"),
            ("blend", "The blended student: the network and its best tree partner averaged"),
            ("selection_optimism", "How optimistic is the network's validation figure?"),
            ("classical_overhead", "What the classical stage adds to a run"),
            ("small_data", "Small data: the default network against one-line classical models"),
            ("small_real", "Small real cases: the distillation dividend with few labels"),
            ("validation_noise", "Selection on validation: a label-only choice within noise"),
            ("fold_epochs", "Cross-validation's fold networks: does their epoch count make it optimistic?"),
            ("habitat", "Habitat design"),
            ("microgrid", "Microgrid controller"),
            ("recycling", "Recycling sorter"),
            ("sensor_select", "Sensor selection"),
            ("ddp", "Distributed training"),
            ("sharded", "Larger-than-memory data"),
            ("coastal_real_bound", "coastal-real: a floor under Vlissingen-only gap-filling"),
            ("minerals_ceiling", "minerals: what RGB alone supports"),
            ("houston_validation", "houston: a test-like validation split, and what it ranks")]

# benchmarks whose section (and its reference target, which other pages link to) stays, with a note, while their .md
# does not exist yet
NOTE_WHEN_ABSENT = {"small_real", "validation_noise"}


def _note(name: str) -> str:
    return f"(no table yet: `benchmarks/{name}.md` does not exist; run `python benchmarks/{name}.py`)"


def _body(name: str, level: int) -> str | None:
    """A benchmark's .md without its own title line, its headings set to ``level``; None when it does not exist."""
    md = BENCH / f"{name}.md"
    if not md.is_file():
        return None
    lines = md.read_text().strip().splitlines()
    if lines and lines[0].startswith("#") and f"benchmarks/{name}.py" in lines[0]:
        lines = lines[1:]  # the .md's own title repeats the section's
    hashes = "#" * level
    return "\n".join(f"{hashes} {ln.lstrip('#').strip()}" if ln.startswith("#") else ln for ln in lines).strip()


def more() -> str:
    """One ``##`` section per benchmark of :data:`SECTIONS` that has its .md, each with a reference target."""
    parts = []
    for name, title in SECTIONS:
        body = _body(name, 3)
        if body is None and name in NOTE_WHEN_ABSENT:
            body = _note(name)
        if body is not None:
            target = "results-" + name.replace("_", "-")
            parts.append(f"({target})=\n## {title}\n\nRegenerate with `python benchmarks/{name}.py`.\n\n{body}")
    return "\n\n".join(parts)


def headline() -> str:
    """Where distillation pays, over 5 seeds: the label-scarce rows of label_fraction.md (real data first), with a
    line saying where they come from."""
    text = (BENCH / "label_fraction.md").read_text() if (BENCH / "label_fraction.md").is_file() else ""
    rows = ["| case | data | labels (n) | recommended (deployed) | distilled student | student on labels alone | "
            "best classical reference (on val) |", "|---|---|---|---|---|---|---|"]
    case = data = metric = ""
    for ln in text.splitlines():
        m = re.match(r"### (\S+) \((\w+) data\): test (\w+)", ln)
        if m:
            case, data, metric = m.group(1), m.group(2).lower(), m.group(3)
            continue
        cells = [c.strip() for c in ln.strip().strip("|").split("|")] if ln.startswith("|") else []
        if len(cells) < 8 or cells[0] in ("labels", "---") or cells[0] not in ("1%", "2%", "5%", "100%"):
            continue
        strip = lambda c: re.sub(r"\s*\(.*\)$", "", c)  # noqa: E731 - the model names behind a figure
        rows.append(f"| {case} ({metric}) | {data} | {cells[0]} ({cells[1]}) | {strip(cells[7])} | {cells[2]} | "
                    f"{cells[3]} | {strip(cells[6])} |")
    if len(rows) == 2:
        return "(no table yet: run `python benchmarks/label_fraction.py`)"
    return "\n".join(rows) + "\n\n" + textwrap.fill(
        "Mean +- std over 5 seeds on the test split, a share of the training samples labelled and the rest paired "
        "and unlabelled (`python benchmarks/label_fraction.py`; minerals is SYNTHETIC data). `recommended`: the "
        "model the run deploys, chosen on validation; `distilled student`: the network distilled from the "
        "teacher; `student on labels alone`: the same network without distillation. Every recipe at its "
        "defaults, and when distillation does not pay, on the [results page](docs/results.md).", width=115,
        break_on_hyphens=False, break_long_words=False)


def blocks() -> dict[Path, dict[str, str]]:
    """File -> marker name -> the text to put between its markers."""
    return {RESULTS_PAGE: {"results": (BENCH / "results.md").read_text().strip(),
                           "label-fraction": _body("label_fraction", 3) or "",
                           "more": more()},
            SMALL_DATA_PAGE: {"small-real": _body("small_real", 3) or _note("small_real"),
                              **{k.replace("_", "-"): _body(k, 3) or _note(k)
                                 for k in ("cv_threshold", "cv_cost", "memory_scale", "fold_epochs")}},
            README: {"headline": headline()}}


def render(text: str, parts: dict[str, str], path: Path) -> str:
    """``text`` with each marked block replaced."""
    for name, body in parts.items():
        start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
        if start not in text or end not in text:
            raise SystemExit(f"{path.relative_to(ROOT)} lacks the {start} / {end} markers")
        text = re.sub(re.escape(start) + ".*?" + re.escape(end), lambda _m, b=body, s=start, e=end: f"{s}\n{b}\n{e}",
                      text, count=1, flags=re.S)
    return text


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check", action="store_true", help="write nothing; exit 1 when a generated part is stale")
    args = ap.parse_args()
    texts = {path: (path.read_text(), parts) for path, parts in blocks().items()}
    rendered = {path: render(old, parts, path) for path, (old, parts) in texts.items()}  # every marker checked first
    stale = []
    for path, new in rendered.items():
        old, parts = texts[path]
        if new != old:
            stale.append(path)
            if not args.check:
                path.write_text(new)
        print(f"{path.relative_to(ROOT)}: {len(parts)} block(s), {'rewritten' if new != old else 'up to date'}"
              + (" (--check: stale)" if new != old and args.check else ""))
    if args.check and stale:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
