"""Composition root and process concerns: configuration, the controller, the CLI, metrics, logging, task helpers."""
