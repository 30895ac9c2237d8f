"""Evaluation: the FID Inception in Flax (`inception`) and the metrics on its features
(`metrics`)."""
