"""The experiment harness behind the training scripts: configuration, data, networks, methods, the
training loop, results. Nothing here runs at import; the package itself imports nothing (aggregate.py
reaches its torch-free modules without torch)."""
