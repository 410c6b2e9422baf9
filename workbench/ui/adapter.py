"""Adapter & quantization: LoRA rank/alpha/dropout, how the adapter starts (init) and LoRA+, target modules,
bits, and what they cost.

Everything shown here is computed before any weight loads: trainable parameters from the model's
layer shapes (workbench.engine.layout, meta device), memory from workbench.engine.estimator.

Long because: every adapter setting is one control here, set from and written into the config in one change
(so an init and the variants it works with are judged together), beside the estimate they move.
"""

from __future__ import annotations

import ipywidgets as widgets

from workbench.analysis import by_size, plots
from workbench.core.config import INIT_TABLE, INITS, VARIANTS, LoraSettings
from workbench.engine import models
from workbench.engine.estimator import MemoryEstimate, estimate, init_cost_for
from workbench.engine.generate import EVAL_BATCH_SIZE
from workbench.engine.layout import lora_scaling
from workbench.engine.resolve import MODEL_ALIASES
from workbench.machine import allocator, memory
from workbench.ui.common import Quiet, error_html, helped, image, message, png, quant_controls
from workbench.ui.state import AppState, model_layout

RANKS = [1, 2, 4, 8, 16, 32, 64, 128, 256]
FIT_COLOURS = {memory.FITS: "#1b5e20", memory.TIGHT: "#8a6d00", memory.WONT_FIT: "#b00020"}


def fit_badges(estimates: dict[str, int], available: int | None) -> str:
    """One badge per variant: its estimated peak and whether it fits in what the device has free."""
    badges = []
    for name, total in estimates.items():
        verdict = memory.fit(total, available)
        colour = FIT_COLOURS[verdict]
        badges.append(
            f"<span class='wb-fit wb-fit-{verdict.replace(' ', '-')}' style='border:1px solid {colour};"
            f"color:{colour};border-radius:8px;padding:1px 6px;margin-right:6px'>{name} "
            f"{total / memory.MiB:,.0f} MiB · {verdict}</span>"
        )
    free = "free memory unknown here" if available is None else f"{available / memory.MiB:,.0f} MiB free now"
    return f"<div class='wb-fits'>{''.join(badges)}<span style='color:#555'>({free})</span></div>"


class AdapterPanel(widgets.VBox):
    """LoRA and quantization settings with a live parameter count and memory estimate."""

    def __init__(self, state: AppState | None = None):
        self.state = state or AppState()
        cfg = self.state.config
        ranks = sorted(set(RANKS) | {cfg.lora.rank})
        self.rank = helped(
            widgets.SelectionSlider(options=ranks, value=cfg.lora.rank, description="Rank r", continuous_update=False),
            LoraSettings,
            "rank",
        )
        self.alpha = helped(widgets.FloatText(value=cfg.lora.alpha, description="Alpha"), LoraSettings, "alpha")
        self.dropout = helped(
            widgets.FloatSlider(
                value=cfg.lora.dropout, min=0.0, max=0.9, step=0.05, description="Dropout", continuous_update=False
            ),
            LoraSettings,
            "dropout",
        )
        self.rslora = helped(
            widgets.Checkbox(value=cfg.lora.use_rslora, description="rsLoRA scaling"), LoraSettings, "use_rslora"
        )
        self.dora = helped(widgets.Checkbox(value=cfg.lora.use_dora, description="DoRA"), LoraSettings, "use_dora")
        # how the adapter starts: the dropdown's tooltip is the field's help, the line under it the chosen init's
        self.init = helped(
            widgets.Dropdown(options=[i.name for i in INIT_TABLE], value=cfg.lora.init, description="Init"),
            LoraSettings,
            "init",
        )
        self.init.add_class("wb-init")
        self.init_help = widgets.HTML()
        self.loftq_iter = helped(
            widgets.BoundedIntText(value=cfg.lora.loftq_iter, min=1, max=20, description="LoftQ iterations"),
            LoraSettings,
            "loftq_iter",
        )
        self.pissa_niter = helped(
            widgets.BoundedIntText(value=cfg.lora.pissa_niter, min=0, max=50, description="PiSSA SVD iterations"),
            LoraSettings,
            "pissa_niter",
        )
        self.loraplus = helped(
            widgets.FloatText(value=cfg.lora.loraplus_ratio, description="LoRA+ ratio"), LoraSettings, "loraplus_ratio"
        )
        self.all_linear = helped(
            widgets.Checkbox(value=cfg.lora.target_modules == "all-linear", description="all-linear"),
            LoraSettings,
            "target_modules",
        )
        # shown for a mixture of experts only (_build_targets): whether its stacked expert weights get an adapter
        self.experts = helped(
            widgets.Checkbox(value=cfg.lora.adapt_experts, description="adapt the experts", indent=False),
            LoraSettings,
            "adapt_experts",
        )
        self.targets: dict[str, widgets.Checkbox] = {}
        self.targets_box = widgets.HBox(layout=widgets.Layout(flex_flow="row wrap"))
        self.variants = {
            v.name: widgets.Checkbox(value=v.name in cfg.variants, description=v.label, tooltip=v.help, indent=False)
            for v in VARIANTS.values()
        }
        self.quant_type, self.double_quant = quant_controls(cfg.quant)
        self.error = widgets.HTML()
        self.params_info = widgets.HTML()
        self.chart = image()
        self.by_size = SavingBySize(self.state)
        super().__init__(
            [
                widgets.HTML("<b>LoRA</b>"),
                self.rank,
                self.alpha,
                self.dropout,
                widgets.HBox([self.rslora, self.dora]),
                self.init,
                self.init_help,
                self.loftq_iter,
                self.pissa_niter,
                self.loraplus,
                widgets.HTML("<b>Target modules</b> (the model's own linear layers)"),
                self.all_linear,
                self.targets_box,
                self.experts,
                widgets.HTML("<b>Base precision</b>: which variants to train and compare"),
                widgets.HBox(list(self.variants.values())),
                self.quant_type,
                self.double_quant,
                self.error,
                self.params_info,
                self.chart,
                self.by_size,
            ]
        )
        self.add_class("wb-adapter")
        self._quiet = Quiet()
        self._label_variants()
        self._build_targets()
        for w in (
            self.rank,
            self.alpha,
            self.dropout,
            self.rslora,
            self.dora,
            self.init,
            self.loftq_iter,
            self.pissa_niter,
            self.loraplus,
            self.all_linear,
            self.experts,
            self.quant_type,
            self.double_quant,
            *self.variants.values(),
        ):
            w.observe(self._on_change, "value")
        self.state.subscribe(self._on_state)
        self._show_init()
        self.refresh()

    def _show_init(self) -> None:
        """The chosen init's line, and the iteration counts of the inits that have them (only theirs shown)."""
        init = self.init.value
        self.init_help.value = message("info", f"{init}: {INITS[init].help}")
        self.loftq_iter.layout.display = None if init == "loftq" else "none"
        self.pissa_niter.layout.display = None if init == "pissa" else "none"

    # ------------------------------------------------------------------ targets from the model

    def _build_targets(self) -> None:
        cfg = self.state.config
        try:
            layout = model_layout(cfg.model.name)
            names, moe = layout.target_names, layout.is_moe
        except ValueError as exc:
            self.error.value = error_html(exc)
            names, moe = [], False
        self.experts.layout.display = None if moe else "none"
        chosen = set(names) if cfg.lora.target_modules == "all-linear" else set(cfg.lora.target_modules)
        with self._quiet():
            self.targets = {}
            for n in names:
                box = widgets.Checkbox(
                    value=n in chosen,
                    description=n,
                    indent=False,
                    disabled=self.all_linear.value,
                    layout=widgets.Layout(width="130px"),
                )
                box.observe(self._on_change, "value")
                self.targets[n] = box
            self.targets_box.children = list(self.targets.values())

    def _label_variants(self) -> None:
        dtype = self.state.base_dtype()  # "16-bit LoRA" is "32-bit LoRA" where the base is float32
        for name, box in self.variants.items():
            box.description = VARIANTS[name].label_for(dtype)

    def _on_state(self, what: str) -> None:
        if what != "config":
            return
        self._label_variants()
        names = list(self.targets)
        try:
            if model_layout(self.state.config.model.name).target_names != names:
                self._build_targets()
        except ValueError:
            return
        self.refresh()

    # ------------------------------------------------------------------ settings

    def _on_change(self, change) -> None:
        if self._quiet:
            return
        for box in self.targets.values():
            box.disabled = self.all_linear.value
        targets = "all-linear" if self.all_linear.value else [n for n, b in self.targets.items() if b.value]
        d = self.state.config.to_dict()
        lora = dict(
            rank=self.rank.value,
            alpha=self.alpha.value,
            dropout=self.dropout.value,
            target_modules=targets,
            use_rslora=self.rslora.value,
            use_dora=self.dora.value,
            init=self.init.value,
            loftq_iter=self.loftq_iter.value,
            pissa_niter=self.pissa_niter.value,
            loraplus_ratio=self.loraplus.value,
            adapt_experts=self.experts.value,
        )
        try:
            # one change, checked whole: an init and the variants it works with are judged together
            self.state.update(
                lora={**d["lora"], **lora},
                quant={**d["quant"], "quant_type": self.quant_type.value, "double_quant": self.double_quant.value},
                variants=[v for v, b in self.variants.items() if b.value],
            )
        except ValueError as exc:
            self.sync()  # the controls go back to the settings in force; the message says why
            self.error.value = error_html(exc)
            return
        self.error.value = ""
        self._show_init()
        self.refresh()

    def sync(self) -> None:
        """Set every control from the current settings (after a refused change)."""
        cfg = self.state.config
        with self._quiet():
            self.rank.value = cfg.lora.rank
            self.alpha.value = cfg.lora.alpha
            self.dropout.value = cfg.lora.dropout
            self.rslora.value = cfg.lora.use_rslora
            self.dora.value = cfg.lora.use_dora
            self.init.value = cfg.lora.init
            self.loftq_iter.value = cfg.lora.loftq_iter
            self.pissa_niter.value = cfg.lora.pissa_niter
            self.loraplus.value = cfg.lora.loraplus_ratio
            self.experts.value = cfg.lora.adapt_experts
            self.all_linear.value = cfg.lora.target_modules == "all-linear"
            for name, box in self.targets.items():
                box.value = cfg.lora.target_modules == "all-linear" or name in cfg.lora.target_modules
                box.disabled = self.all_linear.value
            for v, box in self.variants.items():
                box.value = v in cfg.variants
            self.quant_type.value = cfg.quant.quant_type
            self.double_quant.value = cfg.quant.double_quant
        self._show_init()

    def _device(self, bits: int = 16) -> tuple[str, str | None]:
        cfg = self.state.config
        try:
            choice = models.pick_device(cfg.model.device, cfg.model.dtype, bits)
            return choice.type, choice.dtype_name
        except ValueError:
            return "cpu", None

    def estimates(self) -> dict[str, MemoryEstimate]:
        """The estimator's breakdown for each chosen variant, at the Train tab's batch size and length; the
        base variant is only evaluated, in batches of EVAL_BATCH_SIZE (as run_compare runs it)."""
        cfg = self.state.config
        layout = model_layout(cfg.model.name)
        out = {}
        for v in cfg.variants:
            trained = VARIANTS[v].trained
            device_type, dtype = self._device(VARIANTS[v].bits)
            out[v] = estimate(
                layout,
                bits=VARIANTS[v].bits,
                rank=cfg.lora.rank,
                targets=cfg.lora.target_modules,
                batch_size=cfg.train.batch_size if trained else EVAL_BATCH_SIZE,
                seq_len=cfg.train.seq_len,
                gradient_checkpointing=cfg.train.gradient_checkpointing,
                device_type=device_type,
                double_quant=cfg.quant.double_quant,
                train=trained,
                dtype=dtype,
                adapt_experts=cfg.lora.adapt_experts,
                allocator=allocator.current(),  # this kernel trains: the estimate is for its allocator
                init=init_cost_for(layout, cfg, VARIANTS[v].bits, device_type) if trained else None,
            )
        return out

    def _init_line(self) -> str:
        """What the init costs before the first step, at the first trained variant's bits ("" for gaussian)."""
        cfg = self.state.config
        trained = [VARIANTS[v].bits for v in cfg.variants if VARIANTS[v].trained]
        if not trained:
            return ""
        cost = init_cost_for(model_layout(cfg.model.name), cfg, trained[-1], self._device(trained[-1])[0])
        return message("info", cost.line()) if cost else ""

    def refresh(self) -> None:
        cfg = self.state.config
        try:
            layout = model_layout(cfg.model.name)
        except ValueError as exc:
            self.params_info.value = error_html(exc)
            return
        lora = cfg.lora
        trainable = layout.adapter_params(lora.rank, lora.target_modules, lora.adapt_experts)
        share = trainable / layout.total_params
        scale = lora_scaling(lora.alpha, lora.rank, lora.use_rslora)
        n_layers = len(layout.selected(lora.target_modules))
        experts = layout.selected_experts(lora.adapt_experts)
        expert_params = sum(e.adapter_params(lora.rank) for e in experts)
        note = layout.expert_dropout_note(lora.dropout, lora.adapt_experts)
        self.params_info.value = (
            f"<div class='wb-params'><b>Trainable parameters: {trainable:,}</b> ({share:.3%} of "
            f"{layout.total_params:,}) in {n_layers} layers"
            + (f" and {len(experts)} expert weights ({expert_params:,} of them)" if experts else "")
            + f" · update scale {'alpha/√r' if lora.use_rslora else 'alpha/r'} = {scale:.3g}"
            + (" · DoRA adds one magnitude per output row" if lora.use_dora else "")
            + "</div>"
            + self._init_line()
            + (message("info", note[0].upper() + note[1:] + ".") if note else "")
        )
        try:
            est = self.estimates()
        except ValueError as exc:
            self.chart.value = b""
            self.params_info.value += error_html(exc)
            return
        title = (
            f"Estimated peak memory (batch {cfg.train.batch_size} × {cfg.train.seq_len} tokens"
            + (", checkpointing" if cfg.train.gradient_checkpointing else "")
            + (f"; base: evaluation, batch {EVAL_BATCH_SIZE}" if "base" in est else "")
            + ")"
        )
        self.chart.value = png(plots.estimate_figure(est, title))
        available = memory.available_bytes(self._device()[0])
        self.params_info.value += fit_badges({v: e.total for v, e in est.items()}, available) + message(
            "info",
            "Estimated before loading any weights; the Train tab draws it beside the measured memory. A "
            "variant that will not fit is refused when you press Start.",
        )


# =========================================================================== QLoRA's saving, across model sizes

BATCHES = [1, 2, 4, 8, 16, 32]
SEQ_LENS = [128, 256, 512, 1024, 2048, 4096]


class SavingBySize(widgets.Accordion):
    """Where QLoRA's saving comes from: the estimated peak by component for LoRA and QLoRA on every shipped
    model config (135M to 70B), with this machine's measured runs at 135M. Drawn when first opened: the
    tab should not pay for 13 estimates and a wide chart until someone looks."""

    def __init__(self, state: AppState | None = None):
        self.state = state or AppState()
        self.batch = widgets.SelectionSlider(
            options=BATCHES, value=8, description="Batch", continuous_update=False, tooltip="Sequences per step"
        )
        self.seq_len = widgets.SelectionSlider(
            options=SEQ_LENS, value=512, description="Tokens", continuous_update=False, tooltip="Tokens per sequence"
        )
        self.rank = widgets.SelectionSlider(
            options=RANKS, value=16, description="Rank r", continuous_update=False, tooltip="LoRA rank, every layer"
        )
        self.checkpointing = widgets.Checkbox(
            value=True, description="gradient checkpointing", tooltip="Keep each block's input, recompute the rest"
        )
        self.device = widgets.ToggleButtons(
            options=[("GPU (bf16)", "cuda"), ("CPU (float32)", "cpu")],
            value="cuda",
            tooltip="The big configs are GPU models; on the CPU the 16-bit base is float32",
        )
        self.summary = widgets.HTML()
        self.chart = image(max_width="1100px")
        box = widgets.VBox(
            [
                widgets.HTML(
                    "QLoRA stores the weights in 4 bits and nothing else: the adapter, its gradients and AdamW "
                    "state stay float32, and after k-bit preparation so do the activations. Its saving is the "
                    "weights' share of the peak. Estimated from each shipped config (no weights loaded); bars "
                    "are a share of the model's LoRA peak, GiB under each model."
                ),
                widgets.HBox([self.batch, self.seq_len, self.rank]),
                widgets.HBox([self.checkpointing, self.device]),
                self.summary,
                self.chart,
            ]
        )
        super().__init__(children=[box], selected_index=None)
        self.set_title(0, f"QLoRA's saving across model sizes ({len(MODEL_ALIASES)} shipped configs, 135M to 70B)")
        self.add_class("wb-saving-by-size")
        self.table = None
        self.measured: list[dict] = []
        for w in (self.batch, self.seq_len, self.rank, self.checkpointing, self.device):
            w.observe(lambda _: self.draw(), "value")
        self.observe(lambda _: self.draw(), "selected_index")
        self.state.subscribe(lambda what: what in ("run", "runs") and self.draw())

    def settings(self) -> str:
        return by_size.describe(
            self.device.value, self.batch.value, self.seq_len.value, self.rank.value, self.checkpointing.value
        )

    def draw(self) -> None:
        if self.selected_index is None:
            return  # closed: drawn when opened
        try:
            table = by_size.by_model(
                rank=self.rank.value,
                batch_size=self.batch.value,
                seq_len=self.seq_len.value,
                gradient_checkpointing=self.checkpointing.value,
                device_type=self.device.value,
            )
            found = by_size.measured(self.state.runs_dir)
        except ValueError as exc:
            self.summary.value, self.chart.value = error_html(exc), b""
            return
        self.table, self.measured = table, found
        crossovers = {v: by_size.crossover(table, v) for v in by_size.VARIANT_NAMES}
        self.chart.value = png(plots.qlora_saving_figure(table, crossovers, found, self.settings()))
        q = table[table.variant == "qlora"].set_index("model")["vs_lora"]
        ends = [m for m in ("smollm2-135m", "smollm2-1.7b", "llama-2-13b", "llama-3.1-70b") if m in q.index]
        takes = ", ".join(
            f"{'QLoRA' if v == 'qlora' else 'LoRA'} " + (f"from {m} up" if m else "at no size")
            for v, m in crossovers.items()
        )
        here = [m for m in found if m["variant"] == "qlora" and m["vs_lora"] is not None][:1]
        self.summary.value = message(
            "info",
            "QLoRA's peak as a share of LoRA's: "
            + ", ".join(f"{q[m]:.0%} at {m}" for m in ends)
            + f" ({self.settings()}). The weights outweigh activations and the loss: {takes}."
            + (
                f" Measured here ({here[0]['device']}, batch {here[0]['batch_size']}×{here[0]['seq_len']}): "
                f"QLoRA {here[0]['vs_lora']:.0%} of LoRA on the 135M model."
                if here
                else " No LoRA+QLoRA run of the embedded model under the runs folder yet to mark as measured."
            ),
        )
