"""The distillation dividend: what cmkd's recommended model gains over the best model a user could train from
their labels alone, on the same (student) inputs.

:func:`dividend` reads a run's metrics.json dict. The label-only candidates are ``student_baseline`` (the network
trained on the labels alone) and every classical reference with ``trained_on == "labels"``. Two comparisons:

- on validation (fair): the recommended model's selection figure against the best label-only one's, both from
  ``recommended["cv"]`` (cross-validated selection) when present, else ``recommended["val"]``;
- on test (strict, with hindsight): the recommended model's test figure against the best label-only test figure,
  whichever candidate has it (a user could not have picked it without the test labels).

Differences are signed so that a POSITIVE figure means cmkd's model is better, whatever the metric's direction.
"""

from __future__ import annotations

import math
from typing import Any

from cmkd.evaluation.metrics import HIGHER_IS_BETTER, yardstick_figure

__all__ = ["dividend", "label_only_candidates"]

BASELINE = "student_baseline"  # cmkd.config.Role.BASELINE (evaluation keeps to figures, not the config)
_LABEL = {"rmse": "RMSE", "mae": "MAE", "r2": "R2", "accuracy": "accuracy", "macro_f1": "macro F1",
          "standardised_error": "standardised error"}


def _num(x: Any) -> float | None:
    """``x`` as a finite float, else None (missing, NaN, infinite, not a number)."""
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return None
    return float(x) if math.isfinite(x) else None


def _get(d: Any, *keys: str) -> Any:
    """``d[k0][k1]...`` or None where any level is missing or not a dict."""
    for k in keys:
        if not isinstance(d, dict):
            return None
        d = d.get(k)
    return d


def label_only_candidates(metrics: dict) -> list[str]:
    """The models of a run trained on the labels alone, on the student's inputs: ``student_baseline`` (when the
    run has it) and the references with ``trained_on == "labels"``, in metrics.json order."""
    names = [BASELINE] if isinstance(_get(metrics, "models", BASELINE), dict) else []
    refs = metrics.get("references")
    if isinstance(refs, dict):
        names += [n for n, r in refs.items() if isinstance(r, dict) and r.get("trained_on") == "labels"]
    return names


def _figure(m: Any, metric: str, yard: dict | None) -> float | None:
    """The figure of a metrics dict ``m``: ``metric``'s value, or with several targets the yardstick's
    (``recommended.yardstick``, :func:`cmkd.evaluation.metrics.yardstick_figure`)."""
    if not isinstance(m, dict):
        return None
    return _num(yardstick_figure(m, yard) if yard else m.get(metric))


def _test_figure(metrics: dict, name: str, metric: str, yard: dict | None = None) -> float | None:
    """``name``'s test figure: ``models[name]["metrics"]`` or the reference's flat (or ``metrics``) entry."""
    if isinstance(_get(metrics, "models", name), dict):
        return _figure(_get(metrics, "models", name, "metrics"), metric, yard)
    ref = _get(metrics, "references", name)
    if isinstance(ref, dict):
        return _figure(ref if (metric in ref or yard) else ref.get("metrics"), metric, yard)
    return None


def _val_figure(metrics: dict, name: str, metric: str, selection: dict, yard: dict | None = None
                ) -> float | None:
    """``name``'s validation figure: the one the recommendation compared (``selection``), else the model's own
    (``models[name]["val_metrics"]``, a reference's ``val``); None where unknown."""
    v = _num(selection.get(name))
    if v is not None:
        return v
    own = _get(metrics, "models", name, "val_metrics")
    if own is None:
        own = _get(metrics, "references", name, "val")
    return _figure(own, metric, yard)


def _best(figures: dict[str, float | None], higher: bool) -> str | None:
    """The name with the best finite figure (the first of ties), or None when none has one."""
    known = {n: v for n, v in figures.items() if v is not None}
    if not known:
        return None
    return (max if higher else min)(known, key=known.__getitem__)


def _gain(ours: float | None, theirs: float | None, higher: bool) -> float | None:
    """``ours`` minus ``theirs``, signed so that positive means ``ours`` is better; None if either is unknown."""
    if ours is None or theirs is None:
        return None
    return ours - theirs if higher else theirs - ours


def _decimals(*xs: float | None) -> int:
    """Decimals that show about three significant digits of the largest of ``xs`` (all printed alike)."""
    m = max((abs(x) for x in xs if x is not None and x != 0), default=1.0)
    return max(0, 2 - math.floor(math.log10(m)))


def _fmt(x: float | None, d: int) -> str:
    return "?" if x is None else f"{x:.{d}f}"


def _sentence(out: dict, deployed: bool, fallback: bool) -> str:
    """The dividend in plain words (see :func:`dividend`); ``fallback``: the recommended ``student`` is the safe
    fallback's copy of the baseline."""
    label = _LABEL.get(out["metric"].rsplit("/", 1)[-1], out["metric"])
    rec, rv, rt = out["recommended"], out["recommended_val"], out["recommended_test"]
    lv, lt = out["label_only_val"], out["label_only_test"]
    d = _decimals(rv, rt, lv and lv["val"], lt and lt["test"])
    if out["label_only_recommended"]:
        what = f"{rec}, the safe fallback's copy of {BASELINE}" if fallback else rec
        s = f"no dividend: the best model here is trained on labels alone ({what}: {label} {_fmt(rt, d)} on test"
        if lt is not None and lt["model"] != rec:
            s += f"; the best label-only on test, with hindsight: {lt['model']} {_fmt(lt['test'], d)}"
        return s + ")"
    who = f"cmkd's {'deployed' if deployed else 'recommended'} model ({rec})"
    if lt is None and lv is None:
        return f"{who}: no label-only model has a figure of {label} to compare with"
    base = (lt or lv)["model"]
    s = f"{who} vs the best you could train from your labels alone ({base}): "
    tested = lt is not None and rt is not None
    if tested:
        g = out["test"]
        s += f"{label} {_fmt(rt, d)} vs {_fmt(lt['test'], d)} on test, "
        s += ("the same" if g == 0 else f"{_fmt(abs(g), d)} {'better' if g > 0 else 'worse'}")
        if out["relative_test"] is not None and g != 0:
            s += f" ({abs(out['relative_test']) * 100:.0f}%)"
    else:
        s += f"no test figure of {label} to compare"
    if lv is not None and rv is not None:
        s += f"; on {out['val_from']} {'' if tested else label + ' '}{_fmt(rv, d)} vs {_fmt(lv['val'], d)}"
        if lv["model"] != base:
            s += f" ({lv['model']}, the best label-only model there)"
    return s


def dividend(metrics: dict) -> dict | None:
    """The distillation dividend of one run: cmkd's recommended model against the best label-only model.

    Args:
        metrics: A run's metrics.json dict (``primary_metric``, ``models``, ``references``, ``recommended``).

    Returns:
        None when the run has no recommendation or no label-only candidate; else a dict with ``metric``,
        ``higher_is_better``, ``recommended`` (name), ``recommended_val``, ``recommended_test``,
        ``label_only_val`` (the best label-only model on validation: ``{model, val, test}``, or None),
        ``label_only_test`` (the best label-only test figure, picked with hindsight: ``{model, test}``, or
        None), ``val`` and ``test`` (recommended minus label-only, POSITIVE = cmkd better), ``relative_test``
        (``test`` over the label-only test figure's magnitude), ``n_label_only``, ``val_from``
        (``"cross-validation"`` or ``"validation"``), ``label_only_recommended`` and ``sentence``. Figures
        that are missing or not finite are None.
    """
    rec = metrics.get("recommended")
    rec_name = rec.get("model") if isinstance(rec, dict) else None
    names = label_only_candidates(metrics)
    if not rec_name or not names:
        return None
    # the figure the recommendation compared: the primary metric, or with several targets the yardstick over all
    yard = rec.get("yardstick") if isinstance(rec.get("yardstick"), dict) else None
    metric = str(rec.get("metric") or metrics.get("primary_metric", ""))
    higher = HIGHER_IS_BETTER.get(metric.rsplit("/", 1)[-1], True)
    cv = rec.get("cv")
    by_cv = isinstance(cv, dict) and bool(cv)
    selection: dict = cv if by_cv else (rec.get("val") if isinstance(rec.get("val"), dict) else {})
    if by_cv:  # every candidate's cross-validated figure, student_baseline's too (metrics["selection"])
        folds = _get(metrics, "selection", "candidates") or {}
        selection = {**{k: v.get("mean") for k, v in folds.items() if isinstance(v, dict)}, **selection}
    vals = {n: _val_figure(metrics, n, metric, selection, yard) for n in names}
    tests = {n: _test_figure(metrics, n, metric, yard) for n in names}
    bv, bt = _best(vals, higher), _best(tests, higher)
    rv, rt = _val_figure(metrics, rec_name, metric, selection, yard), _test_figure(metrics, rec_name, metric, yard)
    lt_test = tests[bt] if bt is not None else None
    g_test = _gain(rt, lt_test, higher)
    out: dict[str, Any] = {
        "metric": metric, "higher_is_better": higher, "recommended": rec_name,
        "recommended_val": rv, "recommended_test": rt,
        "label_only_val": None if bv is None else {"model": bv, "val": vals[bv], "test": tests[bv]},
        "label_only_test": None if bt is None else {"model": bt, "test": lt_test},
        "val": _gain(rv, vals[bv] if bv is not None else None, higher),
        "test": g_test,
        "relative_test": (g_test / abs(lt_test) if g_test is not None and lt_test else None),
        "n_label_only": len(names),
        "val_from": "cross-validation" if by_cv else "validation",
    }
    # the safe fallback (distill.fallback) deploys the baseline's training as ``student`` when distillation lost
    # on validation: label-only too (unless dataset aggregation retrained it with the teacher afterwards)
    fallback = (rec_name == "student" and _get(metrics, "distill", "fallback") is True
                and not _get(metrics, "data", "n_train_aggregated"))
    out["label_only_recommended"] = rec_name in names or fallback
    out["sentence"] = _sentence(out, _get(metrics, "deployed", "model") == rec_name, fallback and rec_name not in names)
    return out
