"""From what the user names (a recipe or a YAML file, plus ``--set`` overrides) to a validated config and its
data; and back from a saved model to the dataset it was trained on."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cmkd.config import ExperimentConfig, apply_overrides, load_yaml, validate
from cmkd.data.arrays import MultimodalData, build_data, load_npz
from cmkd.errors import CmkdError
from cmkd.nn import encoders, losses  # noqa: F401 - they register the checks that validate() runs


def resolve(target: str, overrides: list[str] | None = None, quick: bool = False
            ) -> tuple[ExperimentConfig, dict[str, np.ndarray], str, bool]:
    """Turn a recipe name or YAML path plus overrides into (config, arrays, source, synthetic)."""
    from cmkd.recipes import get_recipe, recipe_names

    if target in recipe_names():
        rec = get_recipe(target)
        raw = apply_overrides(rec.default_config(quick=quick), overrides)
        raw["recipe"] = target
        cfg = validate(raw, source=f"recipe {target}")
        rec.check_options(cfg.options)
        arrays = rec.load(cfg.model_dump(mode="json"), quick=quick)
        source = "synthetic" if rec.synthetic else str(cfg.data.path)
        return cfg, arrays, source, rec.synthetic
    p = Path(target)
    if p.suffix.lower() not in (".yaml", ".yml") and not p.exists():
        raise CmkdError(f"'{target}' is neither a recipe ({', '.join(sorted(recipe_names()))}) nor a YAML file")
    raw = apply_overrides(load_yaml(p), overrides)
    cfg = validate(raw, source=str(p))
    if cfg.recipe and not cfg.data.path:  # a recipe's config saved as YAML (e.g. by `cmkd tune`)
        from cmkd.recipes import get_recipe

        rec = get_recipe(cfg.recipe)
        rec.check_options(cfg.options)
        if isinstance(cfg.data.sources, dict):  # the recipe's raw inputs as they come (e.g. coastal-real's gauges)
            from cmkd.data.sources import absolute_paths

            cfg.data.sources = absolute_paths(cfg.data.sources, p.parent)
        arrays = rec.load(cfg.model_dump(mode="json"), quick=quick)
        _quick(cfg, quick)
        return cfg, arrays, "synthetic" if rec.synthetic else str(p), rec.synthetic
    if not cfg.data.path and cfg.data.sources is not None:  # data as they come: tables, streams, cubes
        from cmkd.data.sources import absolute_paths, build, declare_names

        cfg.data.sources = absolute_paths(cfg.data.sources, p.parent)
        built = build(cfg.data.sources, cfg.data, p.parent, cfg.seed, str(p))
        declare_names(built, cfg.data.sources, cfg.data)  # channel names and units -> metrics, report, sidecar
        arrays = built.arrays
        _quick(cfg, quick)
        return cfg, arrays, str(p), False
    if not cfg.data.path:
        raise CmkdError(f"{p}: data.path (the .npz file, relative to the YAML) or data.sources is required")
    dp = Path(cfg.data.path)
    try:
        dp = dp if dp.is_absolute() else (p.parent / dp).resolve()
    except (OSError, RuntimeError) as e:  # a symbolic link loop (RuntimeError before Python 3.13), a bad name
        raise CmkdError(f"{p}: data.path {cfg.data.path}: {getattr(e, 'strerror', None) or e}") from None
    cfg.data.path = str(dp)
    if dp.is_dir():  # a sharded, larger-than-memory dataset
        from cmkd.data.shards import load_shards

        arrays = load_shards(dp)
    else:
        arrays = load_npz(dp)
    _quick(cfg, quick)
    return cfg, arrays, str(dp), False


def _quick(cfg: ExperimentConfig, quick: bool) -> None:
    """``--quick`` on a user's YAML: at most 5 epochs, 30 latency runs."""
    if quick:
        for m in (cfg.teacher, cfg.student):
            m.epochs = min(m.epochs, 5) if m.epochs is not None else 5
        cfg.export.latency_runs = min(cfg.export.latency_runs, 30)


def original_dataset(meta: dict) -> MultimodalData | None:
    """Rebuild the dataset a saved model was trained on from its config (None when it cannot be found)."""
    from cmkd.validate import stored_config

    raw = stored_config(meta, "the model")  # corrupt or hostile text: one line, not a silent None
    try:
        cfg = validate(raw, source="the model's config")
        if cfg.recipe:
            from cmkd.recipes import get_recipe

            arrays = get_recipe(cfg.recipe).load(cfg.model_dump(mode="json"))
        elif cfg.data.path and Path(cfg.data.path).is_file():
            arrays = load_npz(cfg.data.path)
        elif cfg.data.sources is not None:  # saved with absolute paths by resolve()
            from cmkd.data.sources import build

            arrays = build(cfg.data.sources, cfg.data, Path.cwd(), cfg.seed, "the model's config").arrays
        else:
            return None
        mods = list(meta["hparams"]["modalities"])
        return build_data(arrays, cfg.data, cfg.seed, str(cfg.data.path or cfg.recipe or "data.sources"),
                          modalities=mods)
    except CmkdError:
        return None
