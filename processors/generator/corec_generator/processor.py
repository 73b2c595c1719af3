"""The generator processor (scaffolds). Behaviour arrives with the generator issue."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from corec_plugin_kit import CommandContext, NotImplementedYet, hookimpl


class GeneratePluginParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    plugin_name: str = Field(min_length=1, max_length=64)
    description: str | None = None
    author: str | None = None
    output: str | None = None
    force: bool = False
    dry_run: bool = False


class GenerateWebsiteParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    template: Literal["react", "fastapi"]
    project_name: str = Field(min_length=1, max_length=64)
    output: str | None = None
    force: bool = False
    dry_run: bool = False


async def generate_plugin(params: GeneratePluginParams, ctx: CommandContext) -> Any:
    """Write a new processor package from the plugin template."""
    raise NotImplementedYet("generate_plugin is not built yet (generator issue)")


async def generate_website(params: GenerateWebsiteParams, ctx: CommandContext) -> Any:
    """Write a React (Vite) or FastAPI site from its template."""
    raise NotImplementedYet("generate_website is not built yet (generator issue)")


@hookimpl
def corec_register_actions(register: Any) -> None:
    register("generate_plugin", generate_plugin, GeneratePluginParams)
    register("generate_website", generate_website, GenerateWebsiteParams)
