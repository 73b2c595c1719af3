"""The reviser processor (code review). Behaviour arrives with the reviser issue."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from corec_plugin_kit import CommandContext, NotImplementedYet, hookimpl


class ReviewParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    source: str | None = None
    paths: list[str] | None = None
    fix: bool = False
    model: str | None = Field(None, description="name or path of a local transformers model")

    @model_validator(mode="after")
    def _one_input(self) -> ReviewParams:
        if (self.source is None) == (not self.paths):
            raise ValueError("give exactly one of `source` or `paths`")
        return self


async def review_code(params: ReviewParams, ctx: CommandContext) -> Any:
    """Review Python code: formatter verdict and diff, lint findings."""
    raise NotImplementedYet("review_code is not built yet (reviser issue)")


@hookimpl
def corec_register_actions(register: Any) -> None:
    register("review_code", review_code, ReviewParams)
