"""Causal-LM families as configs, tiny for the family matrix (tests/test_families.py) or medium for
bench/bench_memory.py: each built in-process from its published architecture's shape, no download.

Each entry gives the config class and its keyword arguments at a hidden size `h` and `layers` blocks, in the
family's own field names (GPT-2's n_embd, Bloom's n_layer): the config's attribute map must turn them into
hidden_size and num_hidden_layers, which is one of the things the matrix checks.
"""

from __future__ import annotations


def _llama_like(h: int, layers: int, vocab: int, inter: int | None = None, **extra) -> dict:
    return dict(
        vocab_size=vocab,
        hidden_size=h,
        intermediate_size=inter or 2 * h,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        **extra,
    )


# family -> (transformers config class name, kwargs(h, layers, vocab))
FAMILIES = {
    "llama": ("LlamaConfig", lambda h, n, v: _llama_like(h, n, v)),
    "mistral": ("MistralConfig", lambda h, n, v: _llama_like(h, n, v, sliding_window=None)),
    "qwen2": ("Qwen2Config", lambda h, n, v: _llama_like(h, n, v)),
    "qwen3": ("Qwen3Config", lambda h, n, v: _llama_like(h, n, v, head_dim=h // 4)),
    "gemma2": ("Gemma2Config", lambda h, n, v: _llama_like(h, n, v, head_dim=h // 4, query_pre_attn_scalar=h // 4)),
    "phi3": ("Phi3Config", lambda h, n, v: _llama_like(h, n, v, pad_token_id=None)),
    "gpt2": ("GPT2Config", lambda h, n, v: dict(vocab_size=v, n_embd=h, n_layer=n, n_head=4, n_positions=256)),
    "gpt_neox": (
        "GPTNeoXConfig",
        lambda h, n, v: dict(
            vocab_size=v,
            hidden_size=h,
            intermediate_size=4 * h,
            num_hidden_layers=n,
            num_attention_heads=4,
            max_position_embeddings=256,
        ),
    ),
    "opt": (
        "OPTConfig",
        lambda h, n, v: dict(
            vocab_size=v,
            hidden_size=h,
            word_embed_proj_dim=h,
            ffn_dim=4 * h,
            num_hidden_layers=n,
            num_attention_heads=4,
            max_position_embeddings=256,
            pad_token_id=None,
        ),
    ),
    "falcon": (
        "FalconConfig",
        lambda h, n, v: dict(vocab_size=v, hidden_size=h, num_hidden_layers=n, num_attention_heads=4),
    ),
    "starcoder2": ("Starcoder2Config", lambda h, n, v: _llama_like(h, n, v, inter=4 * h)),
    "bloom": ("BloomConfig", lambda h, n, v: dict(vocab_size=v, hidden_size=h, n_layer=n, n_head=4)),
    "mixtral": ("MixtralConfig", lambda h, n, v: _llama_like(h, n, v, num_local_experts=4, num_experts_per_tok=2)),
    "qwen3_moe": (
        "Qwen3MoeConfig",
        lambda h, n, v: _llama_like(
            h, n, v, head_dim=h // 4, num_experts=4, num_experts_per_tok=2, moe_intermediate_size=h
        ),
    ),
    "qwen2_moe": (
        "Qwen2MoeConfig",
        lambda h, n, v: _llama_like(
            h,
            n,
            v,
            num_experts=4,
            num_experts_per_tok=2,
            moe_intermediate_size=h,
            shared_expert_intermediate_size=2 * h,
        ),
    ),
}


def family_config(family: str, h: int = 32, layers: int = 2, vocab: int = 128, **overrides):
    """The transformers config of `family` at hidden size h with `layers` blocks."""
    import transformers

    cls_name, kwargs = FAMILIES[family]
    return getattr(transformers, cls_name)(**{**kwargs(h, layers, vocab), **overrides})
