"""Critique construction: teachers, prompts, the durable result store, verdict parsing."""
