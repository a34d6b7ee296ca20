"""Evaluation: steering curves, reports, judges, the paper's measures, model shift, transfer, composition,
calibration."""
