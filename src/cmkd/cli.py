"""The ``cmkd`` command line: run, list, predict, export, evaluate, adapt, tune, select, data, and each recipe's own
subcommands (e.g. ``cmkd habitat design``, from the recipe's ``cli`` hook).

User mistakes print one line (``error: ...``) on stderr and exit with code 2; never a traceback.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from cmkd.errors import CmkdError
from cmkd.exits import SIGNALLED, end_at_once_if_working, guarded, on_signal
from cmkd.io import check_out_file, dumps, model_dir
from cmkd.pipeline.rundir import output_folder  # light: no torch, no numpy

# markdown: a docstring paragraph is reflowed to the terminal width instead of keeping its source line breaks
app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  rich_markup_mode="markdown",
                  help="cmkd: cross-modal knowledge distillation. Train a teacher on rich modalities, distil it "
                       "into a compact student that needs only the cheap ones, export it to ONNX/INT8.")

def _version(value: bool) -> None:
    if value:
        from cmkd.version import __version__

        typer.echo(f"cmkd {__version__}")
        raise typer.Exit()


@app.callback()
def _root(ctx: typer.Context,
          version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                                help="Print the version and exit.")] = False) -> None:
    """cmkd: cross-modal knowledge distillation. Train a teacher on rich modalities, distil it into a compact
    student that needs only the cheap ones, export it to ONNX/INT8."""
    ctx.obj = {"output_folder": output_folder}  # for recipes' commands (a layer below the pipeline's folder rules)


SetOpt = Annotated[list[str] | None, typer.Option("--set", help="Override a config key, e.g. --set student.epochs=5 "
                                                                "(repeatable; values parsed as YAML).")]
FolderOverwrite = Annotated[bool, typer.Option(help="Replace this command's earlier outputs in OUT (a folder of "
                                                    "yours, or another command's, is always refused).")]
FileOverwrite = Annotated[bool, typer.Option(help="Replace the output file if it exists (else it is refused).")]


@app.command()
def run(target: Annotated[str, typer.Argument(help="A recipe name (see `cmkd list`) or an experiment YAML file.")],
        out: Annotated[Path, typer.Option("--out", "-o", help="Output folder.")] = Path("runs/latest"),
        quick: Annotated[bool, typer.Option(help="A short smoke-test run (few epochs).")] = False,
        overrides: SetOpt = None,
        resume: Annotated[bool, typer.Option(help="Continue an interrupted run from OUT/.ckpt.")] = False,
        overwrite: Annotated[bool, typer.Option(help="Replace the results of an earlier run in OUT.")] = False,
        quiet: Annotated[bool, typer.Option(help="No progress bars and no summary table.")] = False,
        device: Annotated[str | None, typer.Option(help="auto (CUDA when present), cpu or cuda.")] = None) -> None:
    """Teacher -> baseline student -> distilled student -> test metrics -> ONNX/INT8 -> report.

    Writes OUT/metrics.json, OUT/report.html, OUT/config.yaml, OUT/teacher.pt, OUT/student.pt,
    OUT/student.onnx and OUT/student.int8.onnx. A YAML's data.path may be an .npz or a directory of .npy shards
    (larger than memory). Launched by torchrun (`torchrun --nproc_per_node=N -m cmkd.cli run ...`) the training is
    data-parallel and rank 0 writes the outputs.
    """
    from cmkd.pipeline.rundir import check_run_out

    check_run_out(out, resume, overwrite)  # a folder of the user's own, results kept without --overwrite
    from cmkd.pipeline.core import run as run_pipeline

    run_pipeline(target, out, overrides=overrides, quick=quick, resume=resume, quiet=quiet, device=device)


@app.command("list")
def list_cmd() -> None:
    """List the built-in recipes."""
    from cmkd.recipes import list_recipes

    for name, desc in list_recipes().items():
        typer.echo(f"{name:12s} {desc}")


@app.command()
def predict(model: Annotated[Path, typer.Option("--model", "-m", help="Output folder of `cmkd run`.")],
            input: Annotated[Path, typer.Option("--input", "-i", help=(
                ".npz with the student's modalities; for coastal models also a CSV of sensor readings with gaps "
                "(columns time, station, and the sensor channels); for recycling models a folder of item PNGs"))],
            output: Annotated[Path, typer.Option("--output", help="Where to write the predictions JSON.")] = Path(
                "preds.json"),
            int8: Annotated[bool, typer.Option(help="Use the INT8 model instead of FP32.")] = False,
            overwrite: FileOverwrite = False) -> None:
    """Predict with the exported student (ONNX Runtime, via the torch-free cmkd.runtime and the model's sidecar
    student.json); needs only the student's modalities. `<modality>__present` False marks a modality absent.

    Regression targets come with the head's std and, when the run calibrated them, split-conformal intervals.
    A CSV input (coastal models) gives per-station forecasts, intervals and resilience recommendations.
    A folder of PNGs (recycling models) gives one sorting route per image.
    """

    from cmkd.io import atomic_write_text
    from cmkd.runtime import EdgeModel, load_npz

    d = model_dir(model)
    check_out_file(output, overwrite)
    if input.is_dir():  # a folder of item images: the recycling sorting tool
        from cmkd.recipes.recycling.analysis import predict_folder

        result = predict_folder(d, input, int8)
        atomic_write_text(output, dumps(result, indent=1))
        typer.echo(f"wrote {result['n']} route(s) to {output}")
        return
    if input.suffix.lower() == ".csv":  # sensor readings with gaps: the coastal forecast tool
        from cmkd.runtime import read_card, sidecar_path

        recipe = read_card(sidecar_path(d / "student.onnx")).get("recipe")  # torch-free: the deployed sidecar
        if recipe != "coastal":
            raise CmkdError(f"CSV input is for models of the coastal recipe; {d} was trained by "
                            f"{recipe or 'a YAML experiment'}: pass an .npz")
        from cmkd.recipes.coastal.forecast import forecast_csv

        result = forecast_csv(d, input)
        atomic_write_text(output, dumps(result, indent=1))
        typer.echo(f"wrote {len(result['forecasts'])} station forecast(s) with recommendations to {output}")
        return
    onnx = d / ("student.int8.onnx" if int8 else "student.onnx")
    if not onnx.is_file():
        raise CmkdError(f"{onnx} not found; run `cmkd export --model {d}` first")
    result = EdgeModel(onnx).predict(load_npz(input), str(input))  # torch-free: the ONNX file and its sidecar
    atomic_write_text(output, dumps(result))
    typer.echo(f"wrote {result['n']} predictions to {output}")


@app.command()
def export(model: Annotated[Path, typer.Option("--model", "-m", help="Output folder of `cmkd run`.")],
           int8: Annotated[bool, typer.Option(help="Also write the INT8 model.")] = True) -> None:
    """(Re-)export MODEL/student.pt to MODEL/student.onnx (and student.int8.onnx), with a parity check, and write
    their sidecars (student.json, student.int8.json) for the torch-free runtime."""
    from cmkd.pipeline.export_stage import reexport

    d = model_dir(model)
    diff = reexport(d, int8)
    typer.echo(f"wrote {d / 'student.onnx'} and student.json (max |onnx - torch| = {diff:.2e})")
    if int8:
        typer.echo(f"wrote {d / 'student.int8.onnx'} and student.int8.json")


@app.command()
def evaluate(model: Annotated[Path, typer.Option("--model", "-m", help="Output folder of `cmkd run`.")],
             data: Annotated[Path, typer.Option("--data", "-d", help=".npz with the model's modalities and the "
                                                                    "targets (labels as in training).")],
             role: Annotated[str, typer.Option(help="Which model: student, student_baseline or teacher.")] = "student",
             split: Annotated[str, typer.Option(help="'all' samples, or 'test' (split == 2 when the npz has "
                                                     "a split key).")] = "all") -> None:
    """Score a saved model on labelled data and print its metrics as JSON."""
    from cmkd.config import Role
    from cmkd.data.arrays import load_npz
    from cmkd.evaluation.metrics import predict as predict_torch
    from cmkd.evaluation.metrics import task_metrics
    from cmkd.nn.checkpoint import load_model
    from cmkd.training.continual import model_dataset

    d = model_dir(model)
    roles = (Role.STUDENT, Role.BASELINE, Role.TEACHER)
    if role not in roles:
        raise CmkdError(f"--role {role!r}: valid: {', '.join(roles)}")
    if split not in ("all", "test"):
        raise CmkdError(f"--split {split!r}: valid: all, test")
    net, meta = load_model(d / f"{role}.pt")
    ds = model_dataset(meta, load_npz(data), str(data), "all" if split == "all" else "keep")
    idx = ds.labelled(ds.indices(2))
    if len(idx) == 0:
        raise CmkdError(f"{data}: no labelled sample to evaluate")
    typer.echo(dumps({"model": role, "n": int(len(idx)),
                           "metrics": task_metrics(ds, idx, predict_torch(net, ds, idx))}, indent=2))


# defaults of `cmkd adapt`, chosen on the VALIDATION splits of the minerals recipe (benchmarks/minerals_workflow.md);
# the same as those of cmkd.training.continual.adapt (a test checks it)
RESTANDARDISE_DEFAULT = True
AUGMENT_DEFAULT = True


@app.command()
def adapt(model: Annotated[Path, typer.Option("--model", "-m", help="Output folder of `cmkd run`.")],
          data: Annotated[Path, typer.Option("--data", "-d", help=".npz from the new site: the student's modalities "
                                                                 "and labelled targets (optional split key: shots "
                                                                 "from split 0, scoring on split 2).")],
          shots: Annotated[int, typer.Option(help="Labelled examples per class used for fine-tuning.")] = 10,
          ewc: Annotated[float, typer.Option(help="EWC strength against forgetting the original site; 0 = off.")
                         ] = 0.0,
          epochs: Annotated[int, typer.Option(help="Fine-tuning epochs.")] = 50,
          lr: Annotated[float, typer.Option(help="Fine-tuning learning rate.")] = 1e-3,
          seed: Annotated[int, typer.Option(help="Seeds the choice of shots and the fine-tuning.")] = 0,
          restandardise: Annotated[bool, typer.Option(
              "--restandardise/--no-restandardise",
              help="Re-fit the input standardisation on ALL of the new site's samples, without labels, before "
                   "fine-tuning (AdaBN-like); the original site keeps and is scored with its own statistics.")
          ] = RESTANDARDISE_DEFAULT,
          train: Annotated[str, typer.Option(help="Parameters to fine-tune: all, fusion (encoders frozen) or head."
                                             )] = "all",
          augment: Annotated[bool, typer.Option("--augment/--no-augment",
                                                help="Random flips / quarter turns of the image shots (chosen on the "
                                                     "minerals recipe, whose patches have no preferred orientation; "
                                                     "use --no-augment where orientation matters).")
                             ] = AUGMENT_DEFAULT,
          pseudo: Annotated[int, typer.Option(help="Self-training: then also fine-tune on this many most confident "
                                                   "unlabelled new-site samples per predicted class; 0 = off.")] = 0,
          out: Annotated[Path | None, typer.Option("--out", "-o", help="Where to write student_adapted.pt and "
                                                                       "adapt.json (default: MODEL/adapt).")] = None,
          overwrite: FolderOverwrite = False) -> None:
    """Few-shot adaptation of the student to a new site, optionally with EWC; scores both sites before and after.

    The original site's data are rebuilt from the run's config (a recipe regenerates them; a YAML run rereads its
    npz): its test split gives the original-site score and its training split the EWC Fisher information. With
    --restandardise the adapted model holds the new site's input statistics; adapt.json keeps both sites' (the
    original site is scored with its own).
    """
    from cmkd.data.arrays import load_npz
    from cmkd.io import atomic_write_text
    from cmkd.nn.checkpoint import load_model
    from cmkd.pipeline.resolve import original_dataset
    from cmkd.training.continual import adapt as adapt_model
    from cmkd.training.continual import model_dataset, save_adapted
    from cmkd.validate import check_adapt_options

    d = model_dir(model)
    check_adapt_options(shots=shots, ewc=ewc, epochs=epochs, lr=lr, pseudo=pseudo)
    dest = out or d / "adapt"
    with output_folder(dest, "adapt", overwrite) as staging:  # checked before the fine-tuning, swapped in after it
        net, meta = load_model(d / "student.pt")
        if "ensemble" in meta["hparams"]:
            raise CmkdError(f"{d / 'student.pt'} is an ensemble of {len(meta['hparams']['ensemble'])} networks "
                            "(student.ensemble); cmkd adapt fine-tunes one network: train with student.ensemble=1")
        new = model_dataset(meta, load_npz(data), str(data), "keep")
        original = original_dataset(meta)
        adapted, report = adapt_model(net, new, shots, original, ewc, epochs, lr, seed, restandardise=restandardise,
                                      train=train, pseudo=pseudo, augment=augment)
        save_adapted(adapted, meta, report, staging / "student_adapted.pt")
        atomic_write_text(staging / "adapt.json", dumps(report, indent=1))
    pm = next(iter(report["before"]["new_site"]))
    for site in ("new_site", "original_site"):
        if site in report["before"]:
            typer.echo(f"{site}: {pm} {report['before'][site][pm]:.4f} -> {report['after'][site][pm]:.4f}")
    typer.echo(f"wrote {dest / 'student_adapted.pt'} and {dest / 'adapt.json'}")


@app.command("tune")
def tune_cmd(target: Annotated[str, typer.Argument(help="A recipe name or an experiment YAML file.")],
             trials: Annotated[int, typer.Option(help="Evaluations, the defaults included.")] = 20,
             sampler: Annotated[str, typer.Option(help="tpe (Optuna) or de (SciPy differential evolution).")] = "tpe",
             out: Annotated[Path, typer.Option("--out", "-o", help="Folder for trials.json and best.yaml.")] = Path(
                 "runs/tune"),
             quick: Annotated[bool, typer.Option(help="Short trainings (smoke test).")] = False,
             overrides: SetOpt = None,
             quiet: Annotated[bool, typer.Option(help="No progress output.")] = False,
             overwrite: FolderOverwrite = False) -> None:
    """Search kd temperature, loss weights, learning rate and width for the distilled student on the validation
    split; writes every trial to trials.json and the best config to best.yaml, ready for `cmkd run best.yaml`."""
    from rich.console import Console
    from rich.table import Table

    from cmkd.pipeline.resolve import resolve
    from cmkd.pipeline.tune import tune

    with output_folder(out, "tune", overwrite) as staging:  # checked before the trials, swapped in after them
        cfg, arrays, _, _ = resolve(target, overrides, quick)
        res = tune(cfg, arrays, trials, sampler, staging, quiet=quiet)
    tab = Table(title=f"cmkd tune ({sampler}, {len(res['trials'])} trials; {res['metric']} on validation)")
    for col in ("trial", res["metric"], "settings"):
        tab.add_column(col)
    for r in res["trials"]:
        tab.add_row(str(r["trial"]), f"{r[res['metric']]:.4f}", str(r["params"]))
    Console().print(tab)
    typer.echo(f"defaults {res['default']:.4f} -> best {res['best']:.4f} ({res['best_params']}); "
               f"wrote {out / 'trials.json'} and {out / 'best.yaml'}")


@app.command("select")
def select_cmd(target: Annotated[str, typer.Argument(help="A recipe name or an experiment YAML file.")],
               budget: Annotated[float, typer.Option(help="The most the deployed sensors may cost (same unit as the "
                                                          "modalities' cost: W, $, ...).")],
               candidates: Annotated[str | None, typer.Option(help="Comma-separated modalities to choose from "
                                                                   "(default: every declared modality).")] = None,
               out: Annotated[Path, typer.Option("--out", "-o", help="Folder for select.json and pareto.png.")] = Path(
                   "runs/select"),
               quick: Annotated[bool, typer.Option(help="Short trainings (smoke test).")] = False,
               overrides: SetOpt = None,
               quiet: Annotated[bool, typer.Option(help="No progress output.")] = False,
               overwrite: FolderOverwrite = False) -> None:
    """Sensor selection: train a distilled student on every subset of the candidate modalities (greedy beyond 6),
    print the Pareto front of sensor cost against the validation metric, plot it, and name the best subset
    within the budget."""
    from rich.console import Console
    from rich.table import Table

    from cmkd.pipeline.resolve import resolve
    from cmkd.pipeline.select import select

    cands = [c.strip() for c in candidates.split(",") if c.strip()] if candidates is not None else None
    with output_folder(out, "select", overwrite) as staging:  # checked before the trainings, swapped in after them
        cfg, arrays, _, _ = resolve(target, overrides, quick)
        res = select(cfg, arrays, budget, cands, staging, quiet=quiet)
    key, m = f"val_{res['metric']}", res["metric"]
    tab = Table(title=f"cmkd select: Pareto front of cost vs validation {m} ({res['search']}, "
                      f"{len(res['subsets'])} subsets)")
    for col in ("modalities", "cost", f"val {m}", f"test {m}", "within budget"):
        tab.add_column(col)
    for r in res["pareto_front"]:
        tab.add_row("+".join(r["modalities"]), f"{r['cost']:g}", f"{r[key]:.4f}",
                    f"{r.get('test_' + m, float('nan')):.4f}", "yes" if r["cost"] <= budget else "no")
    Console().print(tab)
    b = res["best_within_budget"]
    typer.echo(f"best within budget {budget:g}: {'+'.join(b['modalities'])} (cost {b['cost']:g}, val {m} "
               f"{b[key]:.4f}); wrote {out / 'select.json'} and {out / 'pareto.png'}")


@app.command("data")
def data_cmd(target: Annotated[str, typer.Argument(help="`inspect` or `build`, then a recipe or YAML; or a recipe.")],
             second: Annotated[str | None, typer.Argument(help="The recipe or YAML after inspect / build.")] = None,
             out: Annotated[Path | None, typer.Option("--out", "-o", help="The .npz to write.")] = None,
             overrides: SetOpt = None, overwrite: FileOverwrite = False) -> None:
    """`cmkd data inspect X`: what cmkd would build from a recipe or YAML (samples per split, modalities,
    targets, warnings). `cmkd data build X --out x.npz` (or `cmkd data RECIPE --out x.npz`): write its arrays as
    an .npz (the bring-your-own-data format), e.g. data for `cmkd adapt` / `cmkd evaluate`."""
    from cmkd.pipeline.inspect import data_command

    data_command(target, second, out, overrides, typer.echo, overwrite=overwrite)


_MOUNTED: dict[str, bool] = {}  # recipe name -> its real commands are mounted (False: the help-only stub)


def mount_recipe_commands(argv: list[str]) -> None:
    """Each recipe's own subcommands (its ``cli`` hook) as ``cmkd <recipe> ...``. A built-in recipe declares
    them with a literal ``CLI_HELP`` in its module; that module (and torch with it) is imported only when the
    command line ``argv`` names the recipe, so ``cmkd --help`` lists the group without loading it."""
    from cmkd.recipes import REGISTRY, cli_help, get_recipe, recipe_names

    words = [a for a in argv if not a.startswith("-")]
    for name in recipe_names():
        helptext = cli_help(name)
        if _MOUNTED.get(name):
            continue
        if name in REGISTRY or (helptext and words[:1] == [name]):
            rec = get_recipe(name)
            if rec.cli is not None:
                app.registered_groups[:] = [g for g in app.registered_groups if g.name != name]  # the stub
                app.add_typer(rec.cli(), name=name)
                _MOUNTED[name] = True
        elif helptext and name not in _MOUNTED:  # listed in `cmkd --help`; the commands come when it is called
            app.add_typer(typer.Typer(help=helptext, no_args_is_help=True), name=name)
            _MOUNTED[name] = False


def main() -> None:
    """Entry point: run the app, turning user mistakes (typer's usage errors too) into one-line errors with exit
    code 2, and SIGINT / SIGTERM into one line saying how to resume."""
    import signal

    SIGNALLED.clear()
    saved = {}
    try:
        for sig in (signal.SIGINT, signal.SIGTERM):
            saved[sig] = signal.signal(sig, on_signal)
    except ValueError:  # not the main thread (main() called in-process by a test): leave the handlers alone
        pass
    try:
        guarded(_app)
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)


def entry() -> None:
    """The ``cmkd`` program (the console script, ``python -m cmkd``, ``python -m cmkd.cli``): :func:`main`; a
    non-zero exit while a run's classical fits still work ends the process at once
    (:func:`cmkd.exits.end_at_once_if_working`: no abort at interpreter exit)."""
    try:
        main()
    except SystemExit as e:
        end_at_once_if_working(e.code)
        raise


def _app() -> object:
    mount_recipe_commands(sys.argv[1:])
    return app(standalone_mode=False)


if __name__ == "__main__":
    entry()
