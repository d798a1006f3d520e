"""Reporting: a run's results.json/results.md, and sweep-level tables and plots."""
