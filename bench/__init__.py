"""liverbench: benchmark CT liver and liver-lesion segmentation (paper re-creation + baselines)."""

__version__ = "0.1.0"
