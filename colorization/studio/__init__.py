"""The studio: a local web page (and JSON API) for colouring pictures; see `app.py`."""

from colorization.studio.app import StudioConfig, create_app

__all__ = ["StudioConfig", "create_app"]
