"""lightyard: an image classifier from training to production."""

__version__ = "0.1.0"
