"""The contract's inspection API (CONTRACT.md): /health, /fit_ok, /calibrate_ng, /infer, /state."""
