"""Paste the result tables written by the other benchmark scripts into README.md, between the
``<!-- more:start -->`` and ``<!-- more:end -->`` markers, so every number there comes from a script.

Usage:
    python benchmarks/readme_sections.py

Sections (each only when its .md exists): recommended.md (benchmarks/recommended.py), blend.md
(benchmarks/blend.py), selection_optimism.md (benchmarks/selection_optimism.py), classical_overhead.md
(benchmarks/classical_overhead.py), small_data.md
(benchmarks/small_data.py), habitat.md (benchmarks/habitat.py), microgrid.md
(benchmarks/microgrid.py), recycling.md (benchmarks/recycling.py), sensor_select.md (benchmarks/sensor_select.py),
ddp.md (benchmarks/ddp.py), sharded.md (benchmarks/sharded.py), coastal_real_bound.md
(benchmarks/coastal_real_bound.py), minerals_ceiling.md (benchmarks/minerals_ceiling.py), houston_validation.md
(benchmarks/houston_validation.py).
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
START, END = "<!-- more:start -->", "<!-- more:end -->"
SECTIONS = [("recommended", "The recommended student against the best classical reference "
             "(`python benchmarks/recommended.py`)"),
            ("blend", "The blended student: the network and its best tree partner averaged "
             "(`python benchmarks/blend.py`)"),
            ("selection_optimism", "How optimistic is the network's validation figure? "
             "(`python benchmarks/selection_optimism.py`)"),
            ("classical_overhead", "What the classical stage adds to a run "
             "(`python benchmarks/classical_overhead.py`)"),
            ("small_data", "Small data: the default network against one-line classical models "
             "(`python benchmarks/small_data.py`)"),
            ("habitat", "Habitat design (`python benchmarks/habitat.py`)"),
            ("microgrid", "Microgrid controller (`python benchmarks/microgrid.py`)"),
            ("recycling", "Recycling sorter (`python benchmarks/recycling.py`)"),
            ("sensor_select", "Sensor selection (`python benchmarks/sensor_select.py`)"),
            ("ddp", "Distributed training (`python benchmarks/ddp.py`)"),
            ("sharded", "Larger-than-memory data (`python benchmarks/sharded.py`)"),
            ("coastal_real_bound", "coastal-real: a floor under Vlissingen-only gap-filling "
             "(`python benchmarks/coastal_real_bound.py`)"),
            ("minerals_ceiling", "minerals: what RGB alone supports (`python benchmarks/minerals_ceiling.py`)"),
            ("houston_validation", "houston: a test-like validation split, and what it ranks "
             "(`python benchmarks/houston_validation.py`)")]


def main() -> None:
    parts = []
    for name, title in SECTIONS:
        md = ROOT / "benchmarks" / f"{name}.md"
        if md.is_file():  # headings inside a benchmark's .md become level-4 headings under its section
            lines = md.read_text().strip().splitlines()
            if lines and lines[0].startswith("#") and f"benchmarks/{name}.py" in lines[0]:
                lines = lines[1:]  # the .md's own title repeats the section's
            body = "\n".join(f"#### {ln.lstrip('#').strip()}" if ln.startswith("#") else ln for ln in lines).strip()
            parts.append(f"### {title}\n\n{body}")
    readme = ROOT / "README.md"
    text = readme.read_text()
    if START not in text or END not in text:
        raise SystemExit(f"README.md lacks the {START} / {END} markers")
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    readme.write_text(head + START + "\n" + "\n\n".join(parts) + "\n" + END + tail)
    print(f"README.md: {len(parts)} section(s) written")


if __name__ == "__main__":
    main()
