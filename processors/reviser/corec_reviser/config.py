"""The ``reviser`` config section."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Backend = Literal["ruff", "black+pyflakes"]

DEFAULT_EXCLUDES = [
    ".git",
    ".hg",
    ".venv",
    "venv",
    ".tox",
    "__pycache__",
    "node_modules",
    "build",
    "dist",
    "*.egg-info",
]


class ReviserConfig(BaseModel):
    """``[reviser]``: which back-end, where stream commands may read, limits, the model."""

    model_config = ConfigDict(extra="forbid")

    backend: Backend = Field(
        default="ruff", description="ruff (fast) or black+pyflakes (the guide's)"
    )
    root: Path | None = Field(
        default=None,
        description="folder `paths` (and revise's `file`) of stream/exec commands are relative "
        "to; revise rewrites files in it; unset = no paths",
    )
    exclude_patterns: list[str] = Field(
        default_factory=lambda: list(DEFAULT_EXCLUDES),
        description="gitignore-style patterns of files and folders never reviewed",
    )
    respect_gitignore: bool = Field(
        default=True, description="also skip what .gitignore files exclude"
    )
    line_length: int = Field(default=88, ge=20, le=400)
    ruff_isolated: bool = Field(
        default=True,
        description="ignore ruff config files of the reviewed tree (same verdict anywhere)",
    )
    max_source_bytes: int = Field(
        default=1_000_000, ge=1, description="largest source or file reviewed"
    )
    max_files: int = Field(default=5_000, ge=1, description="most files one command may review")
    jobs: int = Field(
        default=0, ge=0, description="parallel workers for black+pyflakes; 0 = CPU count"
    )
    model_path: Path | None = Field(
        default=None,
        description="local transformers model for suggestions (needs corec-reviser[model])",
    )
    model_max_new_tokens: int = Field(default=64, ge=1, le=2048)
