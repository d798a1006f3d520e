"""Dataset loaders -> one normalized record schema; the `data` stage."""
