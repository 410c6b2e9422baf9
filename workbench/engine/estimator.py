"""The analytic memory estimate: the peak of fine-tuning (or evaluating) one variant, from the model's
config alone, before any weight loads. docs/estimator.md has the measurements behind every term.

Long because: every term of the estimate and the shapes a run feeds it are one derivation, checked row by row
against measurements; split, a term's why would sit away from its bytes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from workbench.engine.layout import Linear, ModelLayout, expert_count

if TYPE_CHECKING:  # for annotations only
    from workbench.core.config import RunConfig
from workbench.machine.memory import MiB

# Bits per parameter of bitsandbytes storage, from its block layout (QLoRA paper, section 3):
# 4-bit: 4 bits + one fp32 absmax per 64-weight block (0.5 bits); with double quantization the
# absmax is itself stored as 8 bits per block plus one fp32 per 256 blocks (8/64 + 32/(64*256)).
NF4_BLOCK = 64
DQ_BLOCK = 256


def bits_per_param(bits: int, double_quant: bool = True) -> float:
    if bits == 4:
        consts = (8 / NF4_BLOCK + 32 / (NF4_BLOCK * DQ_BLOCK)) if double_quant else 32 / NF4_BLOCK
        return 4 + consts
    if bits == 8:
        return 8.0  # plus one fp32 scale per output row, counted per layer below
    return float(bits)


def quantization_constants_per_layer(bits: int, double_quant: bool = True) -> int:
    """Bytes each quantized layer stores besides its per-block constants: a 4-bit weight's quant_state
    holds its own float32 code table (16 entries for NF4/FP4) and, double-quantized, the nested
    8-bit code (256 float32) and an offset. (An 8-bit layer's float32 scale per row is counted apart.)"""
    if bits != 4:
        return 0
    return (16 + (256 + 1 if double_quant else 0)) * 4


@dataclass
class MemoryEstimate:
    components: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(self.components.values())

    def to_dict(self) -> dict:
        return {"components": dict(self.components), "total": self.total, "notes": list(self.notes)}

    def table(self) -> str:
        width = max(len(k) for k in self.components) if self.components else 5
        lines = [f"{k:<{width}}  {v / MiB:10.1f} MiB" for k, v in self.components.items()]
        lines.append(f"{'total':<{width}}  {self.total / MiB:10.1f} MiB")
        return "\n".join(lines)


def parameter_count(model_config) -> int:
    """Parameters of the model a config describes (tied embeddings once), from a weightless meta-device build."""
    return ModelLayout(model_config).total_params


# What a training step holds at its peak, and why (measured on the embedded SmolLM2-135M by
# `python bench/bench_memory.py`; docs/estimator.md has the table). The peak of a step on the CPU
# is the moment the backward pass starts: every tensor autograd saved during the forward is still
# alive, and the loss's backward has just made two more vocabulary-sized tensors. The adapter's
# gradients do not exist yet at that moment (they appear as the backward frees the activations), so
# counting them, as the sum of the components does, makes the estimate an upper bound by their size.

# Tensors the loss keeps, in bytes per token per vocabulary entry, at the start of the backward:
# the float32 log-softmax that cross_entropy saves, the gradient nll_loss writes into a tensor of
# that size, and the logits' gradient that log_softmax's backward makes from both. The logits
# themselves are not needed for the backward and train() lets them go before it starts.
LOSS_BYTES_PER_TOKEN_AND_VOCAB = 3 * 4

# The CPU process also grows by things that are not tensors of the model (peft's imports, kernel code
# pages, the allocator's free lists, Python objects): a constant, the median over the 27 training rows of
# docs/estimator.md, run as the workbench runs (tcmalloc; "The components" says what it is made of).
CPU_RUNTIME_BYTES = 135 * MiB
# The same for evaluate/generate with the adapter attached (run_compare's base variant), measured likewise.
CPU_EVAL_RUNTIME_BYTES = 108 * MiB

# glibc's malloc, as it is, keeps much of the memory of a step's freed tensors in a fragmented heap
# (workbench.machine.allocator): a training step's peak on it ran above the tensors' by about these shares of the
# activations and of the loss's vocabulary-sized tensors (the logits themselves, freed before the backward, go
# the same way). Fitted on five CPU runs on glibc (docs/benchmarks.md, "Allocators", with each one's error); the
# constants above were measured with tcmalloc, and mimalloc measured alike. Not added for evaluation.
GLIBC_KEPT_ACTIVATIONS = 0.55
GLIBC_KEPT_LOSS = 1.5

# Loading at 4 or 8 bits on the CPU reads the whole checkpoint while quantizing: the loader's own transients
# beside the checkpoint and the weights, measured over 43 rows (docs/estimator.md).
CPU_LOAD_RUNTIME_BYTES = 54 * MiB


def _dtype_bytes(value, default: int = 4) -> int:
    name = str(value or "").replace("torch.", "")
    return {"float32": 4, "float": 4, "bfloat16": 2, "float16": 2, "half": 2}.get(name, default)


_SHARED_INPUT = {
    "q_proj": "attn_in",
    "k_proj": "attn_in",
    "v_proj": "attn_in",
    "gate_proj": "mlp_in",
    "up_proj": "mlp_in",
}


def _input_key(name: str) -> tuple[str, str] | None:
    """Which tensor a linear layer reads, as (owner, input): in a Llama block q/k/v read the same normed
    hidden states, and so do gate/up. None for o_proj, whose input is (a view of) the attention output
    that scaled_dot_product_attention keeps anyway."""
    owner, leaf = name.rsplit(".", 1) if "." in name else ("", name)
    if leaf == "o_proj":
        return None
    if leaf in _SHARED_INPUT:
        return owner.rsplit(".", 1)[0], _SHARED_INPUT[leaf]
    return owner, leaf


def mlp_width(cfg) -> int:
    """The MLP width a token passes through: intermediate_size (4 x hidden where a config has none, as GPT-2's
    n_inner=None means); in a mixture of experts each token goes through num_experts_per_tok experts of
    moe_intermediate_size (or intermediate_size) and the shared expert, if there is one."""
    h = cfg.hidden_size
    inter = getattr(cfg, "intermediate_size", None) or getattr(cfg, "n_inner", None) or 4 * h
    if expert_count(cfg):
        per_expert = getattr(cfg, "moe_intermediate_size", None) or inter
        inter = per_expert * (getattr(cfg, "num_experts_per_tok", None) or 1)
        inter += getattr(cfg, "shared_expert_intermediate_size", None) or 0
    return inter


def layout_of(model) -> ModelLayout:
    """A ModelLayout as it is, or built from a transformers config."""
    return model if isinstance(model, ModelLayout) else ModelLayout(model)


def compute_bytes(device_type: str, dtype: str | None = None) -> int:
    """Bytes per element of the unquantized base and its activations: `dtype` as given, or float32 on the CPU
    and bfloat16 on a GPU when it is not (models.pick_device says which a machine gets)."""
    if dtype in (None, "", "auto"):
        return 4 if device_type == "cpu" else 2
    return _dtype_bytes(dtype)


def activation_bytes_per_token(
    model,
    *,
    bits: int = 16,
    rank: int = 8,
    targets="all-linear",
    device_type: str = "cpu",
    dropout: float = 0.05,
    dtype: str | None = None,
    adapt_experts: bool = True,
) -> dict[str, float]:
    """Bytes autograd keeps per token for the backward, summed over the decoder blocks, by cause.

    For a Llama-style block (Llama, Qwen2, Mistral), as the saved tensors of a training step show:
    - norms: each RMSNorm keeps its input, in float32 (on a GPU it upcasts a bf16 input first), and one
      rsqrt per token;
    - attention: scaled_dot_product_attention keeps q, k and v (k and v at the key/value heads: the
      kernel repeats them for grouped-query attention itself), its output and one logsumexp per head;
    - mlp: SwiGLU keeps gate's output, silu of it and up's output (down's input is rebuilt from them);
    - lora: each adapted layer keeps its input after dropout and dropout's mask (a float32 tensor of
      the input's size on the CPU, where torch's dropout multiplies by a noise tensor; one byte per
      element on CUDA's fused kernel), plus the rank-r output of lora_A; the adapter runs in float32.
      With dropout 0 peft's dropout is the identity: lora_A keeps the layer's own input, one tensor
      for the layers that share it (q/k/v, gate/up) and none for o_proj (the attention output);
    - 8-bit base: bitsandbytes' LLM.int8 layers keep their input (ctx.A / ctx.tensors) for the input
      gradient, once per distinct input, as above.
    A frozen 16-bit or 4-bit base layer keeps nothing but its weight. The first block's input (the
    frozen embeddings' output) needs no gradient, so nothing computed from it alone is kept: not its
    input norm, not the dropout masks of its q/k/v, not an 8-bit q/k/v's input; the final norm before
    the output head keeps its input instead. estimate() assumes dropout > 0 (LoraSettings' 0.05).
    """
    layout = layout_of(model)
    cfg = layout.config
    cpu = device_type == "cpu"
    # activations in the base's dtype; at 4 and 8 bits peft's k-bit preparation casts the embeddings and norms
    # to float32, and bitsandbytes returns its output in its input's dtype: the whole stream is float32
    act = 4 if bits < 16 else compute_bytes(device_type, dtype)
    h = cfg.hidden_size
    inter = mlp_width(cfg)
    n_layers = cfg.num_hidden_layers
    heads = cfg.num_attention_heads
    kv_heads = getattr(cfg, "num_key_value_heads", heads) or heads
    head_dim = getattr(cfg, "head_dim", None) or h // heads
    mask = 4 if cpu else 1
    linears = layout.linears
    targeted = layout.selected(targets) if rank else []
    first = min((lin.block for lin in linears if lin.block is not None), default=None)

    def reads_first_input(lin: Linear) -> bool:
        return first is not None and lin.block == first and lin.module in ("q_proj", "k_proj", "v_proj")

    out = {
        "norms": n_layers * 2 * (h + 1) * 4,  # less the first block's input norm, plus the final norm
        "attention": n_layers * ((2 * heads + 2 * kv_heads) * head_dim * act + heads * 4),
        "mlp": n_layers * 3 * inter * act,
    }
    if layout.experts:
        # transformers' experts loop, per routed token: each expert's output is kept to be scaled by its routing
        # weight; with the expert weights adapted, W + B·A needs the expert's input and down's input as well
        top_k = getattr(cfg, "num_experts_per_tok", None) or 1
        per_expert = getattr(cfg, "moe_intermediate_size", None) or getattr(cfg, "intermediate_size", 4 * h)
        routed = h + ((h + per_expert) if adapt_experts else 0)
        out["experts"] = n_layers * top_k * routed * act
    kept_inputs: dict[tuple[str, str], int] = {}  # layer inputs kept as they are, each tensor once
    if dropout > 0:
        out["lora"] = sum(
            lin.in_features * (4 + (0 if reads_first_input(lin) else mask)) + rank * 4 for lin in targeted
        )
    else:
        for lin in targeted:
            if act != 4:  # a half-precision input: each adapter casts its own float32 copy, and keeps it
                kept_inputs[(lin.name, "float32 copy")] = lin.in_features * 4
            elif (key := _input_key(lin.name)) is not None:
                kept_inputs[key] = lin.in_features * 4  # the float32 input itself, shared by q/k/v and gate/up
        out["lora"] = sum(kept_inputs.values()) + sum(rank * 4 for _ in targeted)
    if bits == 8:
        # every layer reads the float32 stream (see act above), q/k/v and gate/up the same normed input
        int8: dict[tuple[str, str], int] = {}
        for lin in layout.quantized_linears:
            key = _input_key(lin.name)
            if key is not None and key not in kept_inputs and not reads_first_input(lin):
                int8[key] = lin.in_features * 4
        out["8-bit base inputs"] = sum(int8.values())
    return out


def estimate(
    model,
    *,
    bits: int = 16,
    rank: int | None = 8,
    targets="all-linear",
    batch_size: int = 8,
    seq_len: int = 128,
    gradient_checkpointing: bool = False,
    device_type: str = "cpu",
    double_quant: bool = True,
    train: bool = True,
    dtype: str | None = None,
    scored_tokens: int | None = None,
    adapt_experts: bool = True,
    allocator: str = "tcmalloc",
    init: InitCost | None = None,
) -> MemoryEstimate:
    """Analytic breakdown of the peak memory of fine-tuning (or, with train=False, evaluating) one variant.

    The training estimate predicts the peak of a training step (from before the model loads to the
    last optimizer step), which is what a machine must hold to fine-tune. Components:
    - weights: every parameter at its stored size (bitsandbytes quantizes the linear layers inside the
      blocks; embeddings, norms and the output head stay in the base dtype, and peft's k-bit
      preparation upcasts those to float32);
    - adapter, gradients, optimizer state: float32 LoRA weights, their gradients and AdamW's two moments
      (the gradients do not exist yet at the CPU peak, so the sum is an upper bound by their size);
    - activations: what autograd keeps for the backward (see activation_bytes_per_token); with
      gradient checkpointing, each block's input plus one block recomputed;
    - logits and loss: the float32 log-softmax over the vocabulary, its gradient and the logits'
      gradient, alive together when the backward starts, for the `scored_tokens` positions a loss reads
      (models.scored_loss runs the output head on those only; None: every position, as on plain text);
    - runtime (CPU only): what the process grows by besides tensors, a measured constant;
    - expert updates (a mixture of experts whose stacked expert weights are adapted, adapt_experts): peft's
      ParamWrapper adds B·A to each expert weight as a parametrization, so a step holds every updated weight
      W + B·A (the size of the expert weights again) for the backward, and one B·A at a time; the adapter has
      no dropout then (ParamWrapper allows none). bitsandbytes leaves stacked experts unquantized.
    - kept by glibc (CPU training, `allocator="glibc"`: the process runs on glibc's malloc as it is, see
      workbench.machine.allocator.current()): what glibc keeps of the freed activations and loss tensors.
    On the CPU a 4- or 8-bit load reads the whole checkpoint while quantizing (a mixture of experts' at
    any bits, stacking the experts); when that is more than the training step, the difference is added
    as "loading" so the total is still the peak. Likewise `init` (init_cost: an SVD or QR per layer, EVA's
    activation pass), which runs after the load and before the first step: when the weights, the adapter and the
    init's float32 transients are more than the step, the difference is added as "init".
    """
    layout = layout_of(model)
    cfg = layout.config
    cpu = device_type == "cpu"
    dtype_bytes = compute_bytes(device_type, dtype)
    # bitsandbytes quantizes the weight of every linear layer but the output head; the rest (embeddings,
    # norms, biases) stays in full precision
    quantized_params = rows = n_quantized = 0
    if bits < 16:
        quantized = layout.quantized_linears
        quantized_params = sum(lin.in_features * lin.out_features for lin in quantized)
        rows = sum(lin.out_features for lin in quantized)
        n_quantized = len(quantized)
    other_params = layout.total_params - quantized_params
    est = MemoryEstimate()
    other_bytes = 4 if (bits < 16 and train) else dtype_bytes
    if bits == 16:
        est.components["weights"] = other_params * dtype_bytes
    else:
        est.components["weights (quantized layers)"] = int(
            quantized_params * bits_per_param(bits, double_quant) / 8
            + (rows * 4 if bits == 8 else 0)
            + n_quantized * quantization_constants_per_layer(bits, double_quant)
        )
        est.components["weights (kept in full precision)"] = other_params * other_bytes
    weights = est.total
    tokens = batch_size * seq_len
    vocab = cfg.vocab_size
    h = cfg.hidden_size
    inter = mlp_width(cfg)

    if not (train and rank):
        # evaluate(): a no-grad forward keeps nothing for a backward, and a block's temporaries (SwiGLU's
        # three intermediates and the hidden states) are freed as it ends. The peak is at the loss, after
        # the forward returned: the logits (float32 on the CPU, bf16 on a GPU), the float32 copy of all
        # but the last position that evaluate() scores, and cross_entropy's log-softmax of that copy.
        # Measured on the embedded model (bench_memory, base rows): the heap's peak is these three alone.
        # The head runs on the scored positions only (models.scored_loss): its output in the compute dtype,
        # its float32 copy (none when it is float32 already) and cross_entropy's log-softmax. Before it, one
        # block's temporaries at a time; after it, greedy answers with a KV cache of every layer's keys and values.
        scored = scored_tokens if scored_tokens is not None else batch_size * max(seq_len - 1, 1)
        logits = scored * vocab * (dtype_bytes + (0 if dtype_bytes == 4 else 4) + 4)
        block = tokens * (3 * inter + 2 * h) * dtype_bytes
        kv_heads = getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads
        head_dim = getattr(cfg, "head_dim", None) or h // cfg.num_attention_heads
        cache = batch_size * (seq_len + 16) * cfg.num_hidden_layers * 2 * kv_heads * head_dim * dtype_bytes
        # activations: what is more than the loss's tensors at the larger of those moments
        est.components["activations"] = max(0, block - logits, cache - logits)
        est.components["logits and loss"] = logits
        est.notes.append("inference: one forward pass, no adapter gradients or optimizer")
    else:
        adapter = layout.adapter_params(rank, targets, adapt_experts)
        est.components["adapter"] = adapter * 4
        est.components["gradients"] = adapter * 4
        est.components["optimizer state"] = adapter * 8
        # LoRA dropout > 0 assumed (LoraSettings' default); with 0 fewer tensors are kept, see
        # activation_bytes_per_token(dropout=0.0) and docs/estimator.md. Adapted experts force dropout 0.
        note = layout.expert_dropout_note(0.05, adapt_experts) and (
            "no LoRA dropout: peft adapts the stacked expert weights with lora.ParamWrapper, which allows none"
        )
        per_token = activation_bytes_per_token(
            layout,
            bits=bits,
            rank=rank,
            targets=targets,
            device_type=device_type,
            dtype=dtype,
            dropout=0.0 if note else 0.05,
            adapt_experts=adapt_experts,
        )
        if note:
            est.notes.append(note)
        expert_weights = layout.selected_experts(adapt_experts)
        if expert_weights:
            # each adapted expert weight is used as W + B·A, a tensor of its size in the weight's dtype (float32
            # after k-bit preparation) that the experts' matmuls keep for the backward; B·A itself is transient
            wide = 4 if bits < 16 else dtype_bytes
            sizes = [e.numel * wide for e in expert_weights]
            est.components["expert updates"] = sum(sizes) + max(sizes)
        layers = sum(per_token.values())
        if gradient_checkpointing:
            # each block keeps only its input (float32 residual stream on the CPU and after k-bit
            # preparation; bf16 on a GPU otherwise), and one block at a time is recomputed
            resid = 4 if (dtype_bytes == 4 or bits < 16) else 2
            layers = cfg.num_hidden_layers * h * resid + layers / cfg.num_hidden_layers
        est.components["activations"] = int(tokens * layers)
        scored = scored_tokens if scored_tokens is not None else tokens
        est.components["logits and loss"] = scored * vocab * LOSS_BYTES_PER_TOKEN_AND_VOCAB
    if cpu:
        est.components["runtime (CPU)"] = CPU_RUNTIME_BYTES if (train and rank) else CPU_EVAL_RUNTIME_BYTES
        if allocator == "glibc" and train and rank:
            kept = (
                GLIBC_KEPT_ACTIVATIONS * est.components["activations"]
                + GLIBC_KEPT_LOSS * est.components["logits and loss"]
            )
            est.components["kept by glibc (freed activations)"] = int(kept)
        if bits < 16 or layout.experts:
            # the float32 (or bf16) checkpoint's pages, all read while quantizing (or while stacking a mixture
            # of experts' weights), stay mapped until the load ends, next to the weights it made
            # (models.release_checkpoint_pages) (a config without a dtype: float32, transformers' default)
            checkpoint = (quantized_params + other_params) * _dtype_bytes(getattr(cfg, "dtype", None))
            loading = checkpoint + weights + CPU_LOAD_RUNTIME_BYTES
            if loading > est.total:
                est.components["loading (checkpoint read while quantizing)"] = loading - est.total
                est.notes.append("the peak is the load: the checkpoint is read whole while quantizing")
    if init is not None and train and rank:
        # after the load, before the optimizer exists: the weights, the adapter and the init's transients
        start = weights + est.components["adapter"] + init.extra_bytes
        start += CPU_RUNTIME_BYTES if cpu else 0
        if start > est.total:
            est.components[f"init ({init.init}) at start"] = start - est.total
            est.notes.append(f"the peak is the init: {init.what}")
    return est


# --------------------------------------------------------------------------- what an init costs at the start

# The init's float32 linear algebra in FLOPs a second, fitted to peft's own inits of the embedded model's 210 layers
# (576-1536 wide) on one thread of the 2-core CPU this project is tested on, loaded by other work: pissa exact
# 17.7 s, pissa_niter_4 2.8 s, olora 5.3 s (docs/estimator.md, "What an init costs"); matmul (EVA's forward) from
# a microbenchmark of those shapes. More cores are faster; no GPU was measured, so a GPU plan gives memory alone.
INIT_FLOPS_PER_S = {"svd": 25e9, "lowrank": 6e9, "qr": 18e9, "matmul": 30e9}
# EVA's activation pass: the training batches it reads before training (inits.EVA_BATCHES, kept equal by a test;
# peft stops earlier once the components converge)
EVA_BATCHES = 8
# peft's EVA keeps rank x rho components a layer (rho 2) and its incremental PCA samples twice that many
EVA_RHO, EVA_OVERSAMPLE = 2, 2
F32 = 4


@dataclass(frozen=True)
class InitCost:
    """What an init does before the first step: its work (FLOPs, seconds on a CPU) and the memory it holds then
    beyond the loaded weights and the adapter (float32 copies of the largest layer and its factors)."""

    init: str
    layers: int
    what: str
    flops: float
    seconds: float | None  # None: no speed measured for this device
    extra_bytes: int

    def line(self) -> str:
        """One line for a plan: "init pissa: one fast SVD per layer (210 layers), about 3 s and 40 MiB at start"."""
        if self.seconds is None:
            when = "time measured on CPUs only"
        elif self.seconds < 1:
            when = "under a second"
        elif self.seconds < 120:
            when = f"about {self.seconds:.0f} s"
        else:
            when = f"about {self.seconds / 60:.0f} min"
        mib = self.extra_bytes / MiB
        return f"init {self.init}: {self.what} ({self.layers} layers), {when} and {mib:,.0f} MiB at start"


def _svd_flops(m: int, n: int) -> float:
    """A thin SVD with both factors (LAPACK's gesdd): about 4·M·k² + 8·k³ for M = the longer side, k the shorter."""
    big, k = max(m, n), min(m, n)
    return 4 * big * k * k + 8 * k**3


def _svd_bytes(m: int, n: int) -> int:
    """A thin SVD's float32 output and working copy beside its input: U (m x k), Vh (k x n), and LAPACK's copy of A."""
    k = min(m, n)
    return (m * k + k * n + m * n + 2 * k * k) * F32


def init_cost(
    model,
    *,
    init: str,
    rank: int = 8,
    targets="all-linear",
    bits: int = 16,
    loftq_iter: int = 1,
    pissa_niter: int = 4,
    device_type: str = "cpu",
    batch_size: int = 8,
    seq_len: int = 128,
) -> InitCost | None:
    """What `init` costs before training starts, for the layers `targets` adapts; None for gaussian (peft's default
    draws A at random, a cost too small to count).

    - pissa: one SVD per layer, out x in, kept to rank r: torch.svd_lowrank's pissa_niter power iterations
      (2·niter + 2 products of the layer with an in x r block), or with niter 0 the exact SVD;
    - olora: one QR of each layer;
    - loftq: loftq_iter x (the exact SVD of the layer's rounding residual + one 4-bit quantization), each layer's
      16-bit weight read as float32 one at a time;
    - eva: forward passes over EVA_BATCHES training batches with the adapted layers' inputs kept, for an
      incremental SVD (peft's EVA) per distinct input per batch;
    each float32 and one layer at a time, so the memory is the largest layer's: its float32 copy, the residual
    that replaces it and the factors."""
    from workbench.core.config import INITS

    if init not in INITS:
        raise ValueError(f"init must be one of {', '.join(INITS)}; got {init!r}")
    if init == "gaussian":
        return None
    layout = layout_of(model)
    layers = layout.selected(targets)
    shapes = [(lin.out_features, lin.in_features) for lin in layers]
    if not shapes:
        return None
    per_layer: list[tuple[float, int]] = []  # (seconds-weighted FLOPs by op, bytes) for each layer
    flops = seconds = 0.0
    for m, n in shapes:
        if init == "pissa" and pissa_niter > 0:
            q = min(rank, m, n)
            work = {"lowrank": 2 * m * n * q * (2 * pissa_niter + 2)}
            held = (2 * m * n + 2 * (m + n) * q) * F32  # the float32 layer, the residual, the sketches
        elif init == "pissa":
            work = {"svd": _svd_flops(m, n)}
            held = m * n * F32 + _svd_bytes(m, n)
        elif init == "olora":
            big, k = max(m, n), min(m, n)
            work = {"qr": 2 * big * k * k - 2 * k**3 / 3}
            held = (3 * m * n + m * k + k * n) * F32  # the layer, LAPACK's copy, the residual; Q and R
        elif init == "loftq":
            work = {"svd": loftq_iter * _svd_flops(m, n), "matmul": loftq_iter * 2 * m * n * rank}
            held = 2 * m * n * F32 + _svd_bytes(m, n)  # the 16-bit layer as float32, the residual, the SVD
        else:  # eva: the layer's share of the forward; its incremental SVD is counted once per distinct input
            tokens = batch_size * seq_len
            work = {"matmul": EVA_BATCHES * 2 * m * n * tokens}
            held = 0
        flops += sum(work.values())
        seconds += sum(f / INIT_FLOPS_PER_S[op] for op, f in work.items())
        per_layer.append((sum(work.values()), held))
    extra = max(held for _, held in per_layer)
    if init == "eva":
        tokens = batch_size * seq_len
        q = EVA_RHO * EVA_OVERSAMPLE * rank
        inputs = {}
        for lin in layers:  # layers that read one tensor (q/k/v, gate/up) share one SVD
            inputs[_input_key(lin.name) or (lin.name, "")] = lin.in_features
        svd = sum(EVA_BATCHES * 2 * (tokens + q) * n * q * 10 for n in inputs.values())  # lowrank, niter 4
        flops += svd
        seconds += svd / INIT_FLOPS_PER_S["lowrank"]
        # a no-grad forward's own peak at the training batch, and one layer's float32 inputs and their sketch
        forward = estimate(
            layout,
            bits=bits,
            rank=rank,
            targets=targets,
            batch_size=batch_size,
            seq_len=seq_len,
            device_type=device_type,
            train=False,
        )
        widest = max(inputs.values())
        extra = forward.components["activations"] + forward.components["logits and loss"]
        extra += (2 * (tokens + q) * widest + len(inputs) * q * widest) * F32
    what = {
        "pissa": "one fast SVD per layer" if pissa_niter > 0 else "one exact SVD per layer",
        "olora": "one QR per layer",
        "loftq": "one exact SVD and one 4-bit quantization per layer"
        + (f", {loftq_iter} times" if loftq_iter > 1 else ""),
        "eva": f"{EVA_BATCHES} forward passes over training batches and an SVD of each layer's inputs",
    }[init]
    return InitCost(init, len(shapes), what, flops, seconds if device_type == "cpu" else None, int(extra))


def init_cost_for(layout, cfg: RunConfig, bits: int, device_type: str) -> InitCost | None:
    """init_cost for a run's settings at `bits` (a trained variant's base)."""
    lora, t = cfg.lora, cfg.train
    return init_cost(
        layout,
        init=lora.init,
        rank=lora.rank,
        targets=lora.target_modules,
        bits=bits,
        loftq_iter=lora.loftq_iter,
        pissa_niter=lora.pissa_niter,
        device_type=device_type,
        batch_size=t.batch_size,
        seq_len=t.seq_len,
    )


def init_plan_line(cfg: RunConfig, device_type: str = "cpu") -> str:
    """The plan's line on what the config's init costs before the first step ("" for gaussian or no trained
    variant), at its trained variants' lowest bits; from the model's config alone, no weights."""
    from workbench.core.config import VARIANTS

    bits = [VARIANTS[v].bits for v in cfg.variants if VARIANTS[v].trained]
    if cfg.lora.init == "gaussian" or not bits:
        return ""
    cost = init_cost_for(ModelLayout.for_model(cfg.model.name), cfg, min(bits), device_type)
    return cost.line() if cost else ""


# --------------------------------------------------------------------------- a variant as a run runs it


@dataclass(frozen=True)
class EstimateShapes:
    """The tensor shapes a variant runs at: training batches and evaluation batches (as evaluate() cuts them),
    and how many positions of each the loss reads (the output head runs on those only)."""

    train_batch: int
    train_seq: int
    eval_batch: int
    eval_seq: int
    train_scored: int | None = None
    eval_scored: int | None = None
    general_batch: int = 0  # the forgetting pass: blocks of general text per forward (0: none)
    general_seq: int = 0

    @classmethod
    def of(
        cls, train_rows, eval_rows, batch_size: int, eval_batch_size: int, general_rows=None, general_batch: int = 0
    ) -> EstimateShapes:
        """From the encoded splits (data.Encoded). Training batches are batch_size x the longest example (at
        most seq_len: a batch is padded to its longest row); evaluation batches are eval_batch_size (or the
        whole eval split, if smaller) x its longest. Scored positions: a batch of the rows with the most
        labelled tokens."""
        eval_batch = min(eval_batch_size, len(eval_rows))
        general = general_rows is not None and len(general_rows) > 0
        return cls(
            batch_size,
            train_rows.longest,
            eval_batch,
            eval_rows.longest,
            batch_size * train_rows.most_scored,
            eval_batch * eval_rows.most_scored,
            min(general_batch, len(general_rows)) if general else 0,
            general_rows.longest if general else 0,
        )


def variant_estimate(
    layout,
    cfg: RunConfig,
    bits: int,
    trained: bool,
    device_type: str,
    shapes: EstimateShapes,
    adapter_attached: bool | None = None,
    dtype: str | None = None,
    allocator: str = "tcmalloc",
) -> int:
    """Estimated peak of one variant as run_compare measures it: from before the model loads to the end,
    through training (trained variants), evaluation in batches and generation. For a trained variant that is
    the larger of the training step (estimate(train=True)) and an evaluation batch with the adapter loaded;
    for the base variant, the evaluation batch (train=False), with the adapter's weights when one is attached
    (run_compare attaches it, switched off, when a trained variant shares the base's bit width)."""
    layout = layout_of(layout)
    common = dict(
        bits=bits,
        rank=cfg.lora.rank,
        targets=cfg.lora.target_modules,
        device_type=device_type,
        double_quant=cfg.quant.double_quant,
        dtype=dtype,
        adapt_experts=cfg.lora.adapt_experts,
        allocator=allocator,
    )
    tr = estimate(
        layout,
        batch_size=shapes.train_batch,
        seq_len=shapes.train_seq,
        train=True,
        gradient_checkpointing=cfg.train.gradient_checkpointing,
        scored_tokens=shapes.train_scored,
        # the init runs before the first step: the run's peak covers it too
        init=init_cost_for(layout, cfg, bits, device_type) if trained else None,
        **common,
    )
    ev = estimate(
        layout,
        batch_size=shapes.eval_batch,
        seq_len=shapes.eval_seq,
        train=False,
        scored_tokens=shapes.eval_scored,
        **common,
    )
    if shapes.general_batch:  # the forgetting pass scores every position of its blocks
        general = estimate(
            layout,
            batch_size=shapes.general_batch,
            seq_len=shapes.general_seq,
            train=False,
            scored_tokens=shapes.general_batch * max(shapes.general_seq - 1, 1),
            **common,
        )
        ev = max(ev, general, key=lambda e: e.total)
    with_adapter = ev.total + tr.components["adapter"]
    if not trained:
        return with_adapter if adapter_attached else ev.total
    return max(tr.total, with_adapter)
