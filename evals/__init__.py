"""Evaluation: task registry, scoring, metrics, analysis."""
