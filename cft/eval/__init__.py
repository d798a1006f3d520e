"""Evaluation: benchmarks, prompt templates, generation backends, grading, accuracy."""
