"""Inference backends: thin wrappers that turn a preprocessed batch into raw model outputs."""
