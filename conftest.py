# Makes the top-level modules (mlp, train, ...) importable from tests/ without installing anything.
