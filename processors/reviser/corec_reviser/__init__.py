"""corec-reviser processor for corec-plugin-kit."""

__version__ = "0.1.0"
