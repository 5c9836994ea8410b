"""The inspection records: every answered /infer, read back through /inspections*."""
