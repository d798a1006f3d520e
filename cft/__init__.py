"""Critique Fine-Tuning: learn to critique noisy responses instead of imitating answers."""
