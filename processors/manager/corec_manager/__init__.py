"""corec-manager: operations actions for corec-plugin-kit (ping, health, stats, dead letters)."""

__version__ = "0.1.0"
