"""esr: efficient super-resolution for images and videos."""

__version__ = "0.1.0"
