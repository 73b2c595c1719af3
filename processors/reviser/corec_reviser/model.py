"""Optional suggestions from a local transformers model (``pip install corec-reviser[model]``).

The model is loaded from a folder on disk, never downloaded: ``local_files_only`` and the
offline switches are set, so a missing file is an error, not a network call. transformers and
torch are imported here only, when the step is used.
"""

from __future__ import annotations

import functools
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from corec_plugin_kit import HandlerError

if TYPE_CHECKING:
    from .findings import FileReview

_LOCK = threading.Lock()

#: How many reviewed files the model is shown.
PROMPT_FILES = 5


class ModelUnavailable(HandlerError):  # noqa: N818 - names the condition, like the kernel errors
    """The model step was asked for but cannot run (extra not installed, path missing)."""


@functools.lru_cache(maxsize=2)
def _load(path: str) -> tuple[Any, Any]:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    try:
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError:
        raise ModelUnavailable(
            "model suggestions need the optional extra: pip install 'corec-reviser[model]'"
        ) from None
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError) as exc:
        raise ModelUnavailable(f"cannot load the model at {path}: {exc}") from None
    model.eval()  # type: ignore[no-untyped-call]
    return tokenizer, model


def prompt_source(paths: Sequence[Path], reviews: Sequence[FileReview], limit: int) -> str:
    """The text the model reviews for a review of files: the first few it could review.

    The model's context is small, and a prompt made of nothing would give suggestions about
    nothing, so files that could not be reviewed or read are skipped.
    """
    from .files import Unreadable, read_source

    texts: list[str] = []
    for path, item in zip(paths, reviews, strict=True):
        if item.error is None and len(texts) < PROMPT_FILES:
            try:
                texts.append(read_source(path, limit))
            except Unreadable:
                continue
    return "\n".join(texts)


def suggest(source: str, model_path: str | Path, max_new_tokens: int = 64) -> list[str]:
    """Ask the model for review suggestions about ``source``; one string per non-empty line."""
    path = Path(model_path).expanduser()
    if not path.is_dir():
        raise ModelUnavailable(
            f"model path {path} is not a folder; set reviser.model_path to a saved "
            "transformers model (save_pretrained output)"
        )
    tokenizer, model = _load(str(path.resolve()))
    prompt = f"# Review this Python code and suggest improvements.\n{source}\n# Suggestions:\n"
    with _LOCK:  # one generation at a time: the model is shared by every thread
        import torch

        inputs = tokenizer(prompt, return_tensors="pt", truncation=True, max_length=512)
        with torch.no_grad():
            output = model.generate(
                **inputs,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id or 0,
            )
    text = tokenizer.decode(output[0][inputs["input_ids"].shape[1] :], skip_special_tokens=True)
    return [line.strip() for line in text.splitlines() if line.strip()]
