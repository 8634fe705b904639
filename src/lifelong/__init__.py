"""lifelong: lifelong (continual) learning on PyTorch."""

__version__ = "0.1.0"
