"""Crisis-surge call centre controller for Asterisk."""
__version__ = "0.1.0"
