"""Runstream: durable, resumable AI-agent runs."""

__version__ = "0.1.0"
