"""Evaluate predictions against a dataset: metrics.json, report.html, the Polar-Ano average."""
