"""Scores: pure functions of model weights, a dataset and a capture, returning DataFrames."""
