"""Build hook: put the repository's templates/ inside the package, for wheels and sdists.

The templates are edited in the repository's top-level ``templates/`` (beside the tests that
render them). A wheel built from the checkout copies them to ``corec_generator/templates``; an
sdist does the same, so a wheel built later from that sdist (``python -m build``) finds them
already inside the package and the hook has nothing to add.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface


class TemplatesHook(BuildHookInterface):  # type: ignore[type-arg]
    PLUGIN_NAME = "corec-templates"

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        if version == "editable":
            return  # an editable install reads templates/ from the checkout directly
        checkout = Path(self.root, "..", "..", "templates").resolve()
        if checkout.is_dir():
            build_data["force_include"][str(checkout)] = "corec_generator/templates"
