"""``python -m corec_plugin_kit``: the same as ``corec-kit``."""

from corec_plugin_kit.cli import main

if __name__ == "__main__":
    main()
