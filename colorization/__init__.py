"""Automatic colorization of anime line art (after Fu, Wang and Liu, Stanford CS231n)."""

__version__ = "0.1.0"
