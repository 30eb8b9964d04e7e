"""Dataset-aggregation rounds (DAgger, used by microgrid) and the pruning fine-tune under ``--resume``.

A tiny SYNTHETIC recipe with an ``aggregate`` hook is registered from this test (touching no core file: a new
recipe is its Recipe plus one registration line) and runs ``--quick`` end to end; the training calls are
recorded. Every training stage must have its own checkpoint file (a shared one lets ``--resume`` after a crash
in round k load round k's weights into round 0), and the pruning fine-tune must be resumable too."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from helpers import make_arrays, make_config

import cmkd.pipeline.core as pipeline
from cmkd.pipeline import outputs, students
from cmkd.recipes.base import REGISTRY, Recipe, options_model

NAME = "tiny-dagger"


def _default_config(quick: bool = False) -> dict:
    cfg = make_config(npz="", student="vec", teacher=["vec", "img"], epochs=2)
    cfg["data"]["path"] = None
    cfg["data"]["modalities"] = {"vec": {"kind": "vector"}, "img": {"kind": "image"}}
    cfg["export"] = {"latency_runs": 5, "prune": 0.3, "prune_epochs": 1}
    cfg["options"] = {"n": 160}
    return cfg


def _load(config: dict, quick: bool = False) -> dict:
    a = make_arrays(n=int(config["options"]["n"]), seed=int(config["seed"]))
    return {k: a[k] for k in ("vec", "img", "y", "split")}


def _aggregate(config: dict, student: object, round_: int) -> dict | None:
    if round_ >= 2:
        return None
    a = make_arrays(n=30, seed=100 + round_)
    return {k: a[k] for k in ("vec", "img", "y", "split")}


# the whole recipe: what a new recipe package's recipe.py holds (plus its line in cmkd.recipes.RECIPES)
TINY = Recipe(name=NAME, description="test-only recipe with two aggregation rounds", synthetic=True,
              default_config=_default_config, load=_load, options=options_model(NAME, n=int), aggregate=_aggregate)


@pytest.fixture(scope="module")
def calls(tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    mp = pytest.MonkeyPatch()
    mp.setitem(REGISTRY, NAME, TINY)
    seen: list[dict] = []
    real_fit = students.fit

    def fit(*args, **kw):  # noqa: ANN002, ANN003, ANN202 - a recording wrapper
        o = args[-1]  # the FitSettings
        seen.append({"desc": o.desc, "ckpt": o.ckpt_path, "resume": o.resume})
        return real_fit(*args, **kw)

    mp.setattr(students, "fit", fit)
    try:
        out = tmp_path_factory.mktemp("dagger")
        metrics = pipeline.run(NAME, out, quick=True, quiet=True, resume=True)
    finally:
        mp.undo()
    assert metrics["data"]["n_train_aggregated"] == [30, 30]
    return seen


@pytest.mark.slow  # full runs of a tiny recipe
def test_every_training_stage_has_its_own_checkpoint(calls: list[dict]) -> None:
    students = [c for c in calls if c["desc"] == "student"]
    assert len(students) == 3  # round 0 and two aggregation rounds
    paths = [Path(c["ckpt"]).name for c in calls]
    assert len(paths) == len(set(paths)), f"stages share a checkpoint file: {paths}"


@pytest.mark.slow  # full runs of a tiny recipe
def test_pruning_finetune_resumes(calls: list[dict]) -> None:
    pruned = [c for c in calls if c["desc"] == "student_pruned"]
    assert pruned and all(c["resume"] for c in pruned)
    assert all(c["resume"] for c in calls)


def _record_fits(mp: pytest.MonkeyPatch) -> list[str]:
    """Record each training (``fit <desc>``) of the run in a list, in order; the list is returned."""
    order: list[str] = []
    real_fit = students.fit

    def fit(*args, **kw):  # noqa: ANN002, ANN003, ANN202
        order.append(f"fit {args[-1].desc}")  # the FitSettings
        return real_fit(*args, **kw)

    mp.setattr(students, "fit", fit)
    return order


@pytest.mark.slow  # full runs of a tiny recipe
def test_pruned_student_finetunes_before_the_run_waits_for_the_classical_fits(tmp_path: Path) -> None:
    # the fine-tuning trains: it runs beside the background fits, before stage_evaluate waits for them
    mp = pytest.MonkeyPatch()
    mp.setitem(REGISTRY, NAME, TINY)
    order = _record_fits(mp)
    real_wait = outputs.wait_classical

    def wait(st):  # noqa: ANN001, ANN202
        order.append("wait")
        return real_wait(st)

    mp.setattr(outputs, "wait_classical", wait)
    try:
        metrics = pipeline.run(NAME, tmp_path, quick=True, quiet=True)
    finally:
        mp.undo()
    assert order.index("fit student_pruned") < order.index("wait") == len(order) - 1
    ex = metrics["export"]
    assert ex["prune"] == 0.3 and 0.25 < ex["sparsity"] < 0.35 and ex["max_abs_diff"] <= 1e-4
    assert math.isfinite(ex["pruned_metrics"][metrics["primary_metric"]])  # the pruned model's own test figure


def test_tiny_recipe_is_listed_and_checks_its_options() -> None:
    from cmkd.errors import CmkdError
    from cmkd.recipes import list_recipes

    mp = pytest.MonkeyPatch()
    mp.setitem(REGISTRY, NAME, TINY)
    try:
        assert list_recipes()[NAME].endswith("[synthetic data]")
        with pytest.raises(CmkdError, match=r"unknown option 'options.nn'; valid: n$"):
            pipeline.resolve(NAME, ["options.nn=3"], quick=True)
    finally:
        mp.undo()


def _run_tiny(tmp: Path, rounds: int | None, aggregate=_aggregate) -> tuple[dict, list[str]]:  # noqa: ANN001
    """The tiny recipe run ``--quick`` with ``aggregate_rounds`` announcing ``rounds`` (None: no hook); returns
    its metrics and the order in which the students' trainings and the classical fits' start happened."""
    import dataclasses

    recipe = dataclasses.replace(TINY, aggregate=aggregate,
                                 aggregate_rounds=None if rounds is None else (lambda config: rounds))
    mp = pytest.MonkeyPatch()
    mp.setitem(REGISTRY, NAME, recipe)
    order = _record_fits(mp)
    real_start = students.start_classical

    def start(st):  # noqa: ANN001, ANN202
        if st.classical is None:
            order.append(f"classical after {len(st.aggregated)} rounds")
        return real_start(st)

    mp.setattr(students, "start_classical", start)
    try:
        metrics = pipeline.run(NAME, tmp, quick=True, quiet=True, overrides=["export.enabled=false"])
    finally:
        mp.undo()
    return metrics, order


@pytest.mark.slow  # full runs of a tiny recipe
def test_announced_rounds_start_the_classical_fits_beside_the_last_retraining(tmp_path: Path) -> None:
    """With ``aggregate_rounds`` the fits start once the last round's samples are in, before that round's
    retraining (microgrid: the stage ran after the networks, +34% on a default run); the figures are the
    same as when they start after the rounds."""
    late, late_order = _run_tiny(tmp_path / "late", None)
    early, early_order = _run_tiny(tmp_path / "early", 2)
    assert late_order.index("classical after 2 rounds") > max(i for i, o in enumerate(late_order) if o == "fit student")
    k = early_order.index("classical after 2 rounds")
    assert early_order[k + 1] == "fit student" and early_order.count("fit student") == 3
    assert early["data"]["n_train_aggregated"] == late["data"]["n_train_aggregated"] == [30, 30]
    def figures(m: dict) -> dict:  # what each reference scored (not its fit seconds)
        return {k: {f: v for f, v in r.items() if f != "fit_s"} for k, r in m["references"].items()}

    assert early["references"] and figures(early) == figures(late)
    assert early["models"]["student_trees"]["metrics"] == late["models"]["student_trees"]["metrics"]
    assert early["recommended"]["val"] == late["recommended"]["val"]


@pytest.mark.slow  # full runs of a tiny recipe
def test_a_round_the_recipe_did_not_announce_is_an_error(tmp_path: Path) -> None:
    from cmkd.errors import CmkdError

    with pytest.raises(CmkdError, match=r"aggregate\(\) returned samples for round 1, but aggregate_rounds\(\) "
                                         r"said 1"):
        _run_tiny(tmp_path / "bad", 1)
