"""Build tiny Llama-architecture models offline (no hub): a byte-level BPE tokenizer
trained on a few sentences, a Llama-3-style chat template, and a random LlamaForCausalLM.

Real-model code paths are tested with these: same classes as Llama-3-8B, seconds on a CPU.
"""

from __future__ import annotations

from pathlib import Path

from trainer.pocket import CHAT_TEMPLATE  # Llama-3's layout, with {% generation %} markers

SPECIAL = ["<|begin_of_text|>", "<|eot_id|>", "<|start_header_id|>", "<|end_header_id|>", "<pad>"]

_CORPUS = [
    'Search(query="founder of Acme", thoughts="find the founder")',
    'SelectLink(summary="According to [link_id=1] Acme was founded by Ada.", thoughts="ok", selected_link_ids=[1])',
    'Answer(thoughts="done", answer="Ada [link_id=1]")',
    "Check_Answer(passed=True) Revise_Answer(thoughts=\"x\", revised_answer=\"y\") Terminate(thoughts=\"enough\")",
    "ORIGINAL_QUESTION PAST_ACTIONS REMAINING_SEARCHES CURRENT_SEARCH_RESULTS Result(link_id=1, title=, snippet=)",
    "The quick brown fox jumps over the lazy dog. 0 1 2 3 4 5 6 7 8 9 # restreact decide summarize answer",
]


def build_tokenizer(out: Path, vocab_size: int = 400, chat: bool = True):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(_CORPUS * 20, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|begin_of_text|>",
                                   eos_token="<|eot_id|>", pad_token="<pad>")
    if chat:
        fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(out)
    return fast


def build_tiny_model(out: str | Path, hidden: int = 64, layers: int = 2, chat: bool = True,
                     seed: int = 0) -> Path:
    """Write a random tiny Llama + tokenizer to `out` and return the path."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tok = build_tokenizer(out, chat=chat)
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=hidden, intermediate_size=hidden * 2,
                      num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                      max_position_embeddings=2048, bos_token_id=tok.bos_token_id,
                      eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                      tie_word_embeddings=True)
    LlamaForCausalLM(cfg).save_pretrained(out)
    return out
