"""Evaluation: metrics, bootstrap intervals, slices, plots, paired comparisons and explanations.

Pure computations on predictions and models; the registry stores what they produce."""
