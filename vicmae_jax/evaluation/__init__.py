"""Downstream evaluation: fine-tuning, linear probe, kNN and feature extraction (docs/evaluation.md)."""
