"""Dataset-aggregation rounds (DAgger, used by microgrid) and the pruning fine-tune under ``--resume``.

A tiny SYNTHETIC recipe with an ``aggregate`` hook is registered from this test (touching no core file: a new
recipe is its Recipe plus one registration line) and runs ``--quick`` end to end; the training calls are
recorded. Every training stage must have its own checkpoint file (a shared one lets ``--resume`` after a crash
in round k load round k's weights into round 0), and the pruning fine-tune must be resumable too."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import make_arrays, make_config

import cmkd.pipeline as pipeline
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
    real_fit = pipeline.fit

    def fit(*args, **kw):  # noqa: ANN002, ANN003, ANN202 - a recording wrapper
        seen.append({"desc": kw.get("desc"), "ckpt": kw.get("ckpt_path"), "resume": kw.get("resume", False)})
        return real_fit(*args, **kw)

    mp.setattr(pipeline, "fit", fit)
    try:
        out = tmp_path_factory.mktemp("dagger")
        metrics = pipeline.run(NAME, out, quick=True, quiet=True, resume=True)
    finally:
        mp.undo()
    assert metrics["data"]["n_train_aggregated"] == [30, 30]
    return seen


def test_every_training_stage_has_its_own_checkpoint(calls: list[dict]) -> None:
    students = [c for c in calls if c["desc"] == "student"]
    assert len(students) == 3  # round 0 and two aggregation rounds
    paths = [Path(c["ckpt"]).name for c in calls]
    assert len(paths) == len(set(paths)), f"stages share a checkpoint file: {paths}"


def test_pruning_finetune_resumes(calls: list[dict]) -> None:
    pruned = [c for c in calls if c["desc"] == "student_pruned"]
    assert pruned and all(c["resume"] for c in pruned)
    assert all(c["resume"] for c in calls)



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
