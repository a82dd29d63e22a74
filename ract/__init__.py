"""ract: RaCT (ranking-critical actor-critic training, Lobel et al., ICLR 2020) in PyTorch."""

__version__ = "0.1.0"
