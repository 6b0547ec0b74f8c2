"""`recstream eval`: offline quality on real data against baselines (docs/evaluation.md)."""
