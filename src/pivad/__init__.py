"""π-VAD: a Poly-modal Inductor for weakly-supervised video anomaly detection (CVPR 2025)."""

__version__ = "0.1.0"
