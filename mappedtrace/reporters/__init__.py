"""Reporters: render analysis results to a stream (rich on a terminal, JSON to a file)."""
