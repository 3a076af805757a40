"""Inference: runtimes as plugins, model files, tasks."""
