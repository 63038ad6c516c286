"""Tiny random chat models for tests and benchmarks, built offline in about a second.

``save_tiny_chat_model(path)`` writes a Llama-architecture model (hidden size 32, two layers) with a
byte-level BPE tokenizer (ChatML special tokens, chat template) that loads by path like any hub model.
Useful for testing reward plugins and trainer hooks without downloading anything.
"""

from __future__ import annotations

from pathlib import Path

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def build_tiny_tokenizer():
    """A byte-level BPE tokenizer (vocab ~400) with ChatML special tokens and a chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    corpus = [
        "Janet has 16 eggs. She eats 3 and sells the rest for $2 each. #### 26",
        "The answer is 42. Let's think step by step: 6 * 7 = 42.",
        "system user assistant Solve the math problem. Final answer: 18",
    ] * 20
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(corpus, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token=None,
    )
    fast.chat_template = CHATML_TEMPLATE
    return fast


def _tiny_llama_config(tokenizer, *, hidden_size: int, layers: int, **extra):
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=None,
        **extra,
    )


def build_tiny_causal_lm(tokenizer, *, seed: int = 0, hidden_size: int = 32, layers: int = 2):
    """A tiny random ``LlamaForCausalLM`` whose generation stops at the tokenizer's EOS."""
    import torch
    from transformers import LlamaForCausalLM

    torch.manual_seed(seed)
    config = _tiny_llama_config(
        tokenizer, hidden_size=hidden_size, layers=layers, max_position_embeddings=2048, tie_word_embeddings=True
    )
    model = LlamaForCausalLM(config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model


def save_tiny_chat_model(path: str | Path, *, seed: int = 0, hidden_size: int = 32, layers: int = 2) -> Path:
    """Build and save a tiny chat model and its tokenizer under ``path``; returns ``path``."""
    path = Path(path)
    tokenizer = build_tiny_tokenizer()
    model = build_tiny_causal_lm(tokenizer, seed=seed, hidden_size=hidden_size, layers=layers)
    model.save_pretrained(path, safe_serialization=True)
    tokenizer.save_pretrained(path)
    return path


def build_tiny_classifier(tokenizer, *, num_labels: int = 1, id2label: dict[int, str] | None = None,
                          seed: int = 0, hidden_size: int = 32, layers: int = 2):
    """A tiny random ``LlamaForSequenceClassification`` (``num_labels=1``: a scalar reward model)."""
    import torch
    from transformers import LlamaForSequenceClassification

    torch.manual_seed(seed)
    labels = {} if id2label is None else {"id2label": dict(id2label), "label2id": {v: k for k, v in id2label.items()}}
    config = _tiny_llama_config(
        tokenizer, hidden_size=hidden_size, layers=layers, max_position_embeddings=2048, num_labels=num_labels, **labels
    )
    return LlamaForSequenceClassification(config)


def save_tiny_classifier(path: str | Path, *, num_labels: int = 1, id2label: dict[int, str] | None = None,
                         seed: int = 0, hidden_size: int = 32, layers: int = 2) -> Path:
    """Build and save a tiny random sequence classifier (and its tokenizer) under ``path``; returns ``path``."""
    path = Path(path)
    tokenizer = build_tiny_tokenizer()
    model = build_tiny_classifier(tokenizer, num_labels=num_labels, id2label=id2label, seed=seed,
                                  hidden_size=hidden_size, layers=layers)
    model.save_pretrained(path, safe_serialization=True)
    tokenizer.save_pretrained(path)
    return path
