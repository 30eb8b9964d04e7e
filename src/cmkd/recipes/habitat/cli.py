"""``cmkd habitat ...``: the habitat recipe's design tool (its ``cli`` hook), mounted by :mod:`cmkd.cli`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cmkd.errors import CmkdError
from cmkd.io import atomic_write_text, check_out_file, dumps, model_dir
from cmkd.recipes.habitat.design import design, example


def app() -> typer.Typer:
    """The ``habitat`` subcommands: ``design`` (one proposed habitat) and ``example`` (inputs to try it on)."""
    habitat_app = typer.Typer(no_args_is_help=True, help="The habitat recipe's design tool (SYNTHETIC-trained "
                                                         "model, ILLUSTRATIVE rules, not legal advice).")

    @habitat_app.command("design")
    def habitat_design(
            model: Annotated[Path, typer.Option("--model", "-m", help="Output folder of `cmkd run habitat`.")],
            acoustic: Annotated[Path, typer.Option(help="Sonar survey: .npy with one ping of 512 samples.")],
            legal: Annotated[Path, typer.Option(help="The legal brief in force at the site: .txt or .pdf.")],
            sensor: Annotated[Path, typer.Option(help="Ocean sensor CSV with columns temperature_c, oxygen_mg_l, "
                                                      "current_m_s, pressure_dbar (hourly; the last 48 rows are "
                                                      "used).")],
            structural: Annotated[Path, typer.Option(help="Design spec JSON: the design parameters and distance_nm "
                                                          "(see `cmkd habitat example`).")],
            output: Annotated[Path, typer.Option("--output", "-o", help="Where to write design.json.")] = Path(
                "design.json"),
            rules: Annotated[Path | None, typer.Option(help="A rule-set YAML (default: the shipped illustrative "
                                                            "rules).")] = None,
            jurisdiction: Annotated[list[str] | None, typer.Option(help="Check only these jurisdictions "
                                                                        "(repeatable).")] = None,
            overwrite: Annotated[bool, typer.Option(help="Replace OUTPUT if it exists (else an existing file is "
                                                         "refused).")] = False) -> None:
        """Predict hull thickness, waste capacity, emergency buoyancy and compliance per jurisdiction for a proposed
        habitat; list violations (rule id, text, why), resolved conflicts and a concrete change per violation."""
        check_out_file(output, overwrite)
        res = design(model_dir(model), acoustic, legal, sensor, structural, rules, jurisdiction or None)
        atomic_write_text(output, dumps(res, indent=1))
        comp = ", ".join(f"{j}: {v['rule_engine']}" for j, v in res["compliance"].items())
        typer.echo(f"hull {res['hull_thickness_mm']:.1f} mm, waste {res['waste_capacity_m3']:.2f} m3, buoyancy "
                   f"{res['emergency_buoyancy_kn']:.1f} kN; {comp}; {len(res['violations'])} violation(s), "
                   f"{len(res['recommendations'])} recommendation(s); wrote {output}")


    @habitat_app.command("example")
    def habitat_example(ctx: typer.Context,
                        out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the example inputs.")] = Path(
                            "habitat-example"),
                        seed: Annotated[int, typer.Option(help="Seed of the SYNTHETIC site.")] = 0,
                        overwrite: Annotated[bool, typer.Option(help="Replace an earlier example in OUT (a folder of "
                                                                     "yours is always refused).")] = False) -> None:
        """Write one SYNTHETIC site's inputs for `cmkd habitat design`: survey.npy, rules.txt, rules.pdf, ocean.csv,
        spec.json (into a new or empty folder, or an earlier example's with --overwrite: the whole folder is
        replaced)."""
        output_folder = (ctx.find_root().obj or {}).get("output_folder")  # cmkd.pipeline.rundir's, from cmkd.cli
        if output_folder is None:
            raise CmkdError("cmkd habitat example: run it from the cmkd command line")
        with output_folder(out, "habitat example", overwrite) as staging:
            paths = example(staging, seed)
        typer.echo("wrote " + ", ".join(str(out / p.name) for p in paths))

    return habitat_app
