"""Core library of the experiment-control system: protocol, instrument model, clients."""

__version__ = "0.1.0"
