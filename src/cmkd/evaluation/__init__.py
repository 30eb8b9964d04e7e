"""Evaluation: metrics, conformal intervals, the HTML report, training logs."""
