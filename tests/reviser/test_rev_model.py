"""The optional model step, with a tiny model the test builds and saves itself (no download)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import corec_reviser.processor as reviser
import pytest

pytestmark = pytest.mark.timeout(300)
# The tests that load a model carry the `model` marker: CI installs the [model] extra (torch)
# on Python 3.11 only and deselects them on the other Pythons (`-m "not model"`).


def _need_transformers() -> None:
    try:
        import tokenizers  # noqa: F401
        import torch  # noqa: F401
        import transformers  # noqa: F401
    except ImportError as exc:
        if os.environ.get("CI"):
            pytest.fail(f"the model tests need corec-reviser[model] in CI: {exc}")
        pytest.skip(f"corec-reviser[model] is not installed ({exc}); CI installs it")


#: The prompt corec_reviser.model builds around the reviewed source (its contract with the
#: model: the tiny model below learns to answer exactly these prompts).
PROMPT = "# Review this Python code and suggest improvements.\n{}\n# Suggestions:\n"
#: source -> what the tiny model is taught to answer (padded and with a blank line, which the
#: suggestions must not keep) -> the suggestions the reviser must return.
TAUGHT = {
    "import os\n": "  drop the unused import os  \n\nkeep imports at the top\n",
    "x = 1\n": "name x says nothing\n",
}
SUGGESTIONS = {
    "import os\n": ["drop the unused import os", "keep imports at the top"],
    "x = 1\n": ["name x says nothing"],
}


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 1-layer GPT-2 and a byte-level BPE tokenizer, both trained here (a few seconds on a
    CPU) to answer each source of TAUGHT with its suggestions: greedy decoding repeats them,
    so the tests can assert what the reviser makes of a model's answer."""
    _need_transformers()
    import torch
    from tokenizers import ByteLevelBPETokenizer
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    path = tmp_path_factory.mktemp("tiny-model")
    texts = [PROMPT.format(source) + answer for source, answer in TAUGHT.items()]
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(texts * 20, vocab_size=400, min_frequency=1, special_tokens=["<|eos|>"])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|eos|>")
    tokenizer.save_pretrained(path)
    eos = tokenizer.eos_token_id
    torch.manual_seed(0)
    config = GPT2Config(
        vocab_size=tokenizer.vocab_size, n_positions=256, n_embd=64, n_layer=1, n_head=2,
        bos_token_id=eos, eos_token_id=eos,
    )  # fmt: skip
    model = GPT2LMHeadModel(config)
    # Prompt and answer tokenized apart, as the reviser tokenizes the prompt alone; the answer
    # ends with eos, where generation stops.
    sequences = []
    for source, answer in TAUGHT.items():
        prompt = tokenizer(PROMPT.format(source))["input_ids"]
        ids = [*prompt, *tokenizer(answer)["input_ids"], eos]
        sequences.append((torch.tensor([ids]), len(prompt)))
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(300):
        loss = sum(
            torch.nn.functional.cross_entropy(model(input_ids=ids).logits[0, :-1], ids[0, 1:])
            for ids, _ in sequences
        )
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    # The lesson is learnt when every next token is the most likely one: then greedy decoding
    # answers each prompt with exactly its answer (a check of this fixture, not of the reviser).
    with torch.no_grad():
        for ids, prompt_len in sequences:
            predicted = model(input_ids=ids).logits[0, prompt_len - 1 : -1].argmax(-1)
            assert torch.equal(predicted, ids[0, prompt_len:]), "the tiny model did not learn"
    model.save_pretrained(path)
    return path


@pytest.mark.model
def test_suggestions_from_a_local_model(tiny_model: Path) -> None:
    from corec_reviser.model import suggest

    # What the model says after the prompt, one stripped line each, blank lines dropped, the
    # prompt itself never echoed; a different source gets its own answer.
    for source, expected in SUGGESTIONS.items():
        assert suggest(source, tiny_model, max_new_tokens=64) == expected
    # max_new_tokens bounds the answer (over a dozen tokens): three give a start of it only.
    short = "\n".join(suggest("import os\n", tiny_model, max_new_tokens=3))
    full = "\n".join(SUGGESTIONS["import os\n"])
    assert short and full.startswith(short) and len(short) < len(full), short


@pytest.mark.model
async def test_review_code_with_the_model(
    tiny_model: Path, corec_register: Any, corec_kernel: Any
) -> None:
    corec_register(reviser, name="reviser")
    kernel = corec_kernel(sections={"reviser": {"model_path": str(tiny_model)}})
    async with kernel:
        out = await kernel.execute({"action": "review_code", "params": {"source": "x = 1\n"}})
    assert out["status"] == "ok", out
    assert out["result"]["suggestions"] == SUGGESTIONS["x = 1\n"]


async def test_missing_model_path_is_a_typed_error(
    tmp_path: Path, corec_register: Any, corec_kernel: Any
) -> None:
    corec_register(reviser, name="reviser")
    kernel = corec_kernel()
    async with kernel:
        out = await kernel.execute(
            {
                "action": "review_code",
                "params": {"source": "x = 1\n", "model": str(tmp_path / "no")},
            }
        )
    assert out["error"]["type"] == "handler_error"
    assert "model_path" in out["error"]["message"]


def test_missing_extra_is_a_typed_error_not_an_import_error(tmp_path: Path) -> None:
    # Fault injection: transformers is installed here, so the test blocks its import in a
    # child process (sys.modules[...] = None makes `import transformers` fail).
    (tmp_path / "cfg").mkdir()
    script = (
        "import sys; sys.modules['transformers'] = None\n"
        "from corec_reviser.model import suggest, ModelUnavailable\n"
        f"try:\n    suggest('x = 1', {str(tmp_path / 'cfg')!r})\n"
        "except ModelUnavailable as exc:\n    print('typed:', exc)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=False
    )
    assert out.returncode == 0, out.stderr
    assert "typed: model suggestions need the optional extra" in out.stdout


def test_heavy_imports_only_when_the_step_is_used() -> None:
    script = (
        "import sys\n"
        "import corec_reviser.processor, corec_reviser.backends, corec_reviser.model\n"
        "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.model
async def test_review_code_on_paths_with_the_model(
    tiny_model: Path, tmp_path: Path, corec_register: Any, corec_kernel: Any
) -> None:
    corec_register(reviser, name="reviser")
    root = tmp_path / "root"
    root.mkdir()
    (root / "m.py").write_text("import os\n")
    section = {"root": str(root), "model_path": str(tiny_model), "model_max_new_tokens": 64}
    kernel = corec_kernel(sections={"reviser": section})
    async with kernel:
        out = await kernel.execute({"action": "review_code", "params": {"paths": ["m.py"]}})
    assert out["status"] == "ok", out
    assert out["result"]["files"][0]["findings"][0]["code"] == "F401"
    # The model saw the file's text: the answer taught for that source.
    assert out["result"]["suggestions"] == SUGGESTIONS["import os\n"]


@pytest.mark.model
def test_the_cli_runs_the_model(tiny_model: Path, kit: Any, tmp_path: Path) -> None:
    (tmp_path / "ok.py").write_text("x = 1\n")
    out = kit("reviser", "review", "ok.py", "--model", str(tiny_model), "--format", "json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["suggestions"] == SUGGESTIONS["x = 1\n"]
