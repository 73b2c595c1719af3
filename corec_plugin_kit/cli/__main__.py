"""``python -m corec_plugin_kit.cli``: the same as ``corec-kit``."""

from corec_plugin_kit.cli import main

if __name__ == "__main__":  # pragma: no cover
    main()
