"""Metrics of sample quality. ``evaluate(names, ...)`` computes named metrics with bootstrap CIs."""

from evaluators.registry import METRICS, evaluate, list_metrics

__all__ = ["METRICS", "evaluate", "list_metrics"]
