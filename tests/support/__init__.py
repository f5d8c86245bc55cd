"""Shared test machinery: real service processes and wire-format readers."""
