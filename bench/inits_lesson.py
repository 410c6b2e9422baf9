"""What 4 bits cost and what each adapter init wins back of it, measured (docs/guide/inits.md, notebook 07).

The runs: LoRA (16-bit base), plain QLoRA, and QLoRA started by each init (LoftQ, PiSSA, OLoRA, EVA) and trained
with LoRA+, each setting trained over several seeds and scored on the same eval examples. Read from the sweep's run
folders or from the exported per-example scores, it gives each setting's scores with their intervals and costs, the
verdicts (each QLoRA + init against plain QLoRA, plain QLoRA against LoRA: paired by seed on the same examples, the
runs and the examples both counted, workbench.analysis.verdicts.pooled), what gap the budget resolves, the share of
NF4's cost each init won back where the eval sees that cost, and the training curves beside plain QLoRA's.

    python bench/inits_lesson.py runs/inits-dates                     # the sweeps' run folders
    python bench/inits_lesson.py docs/data/inits-dates.json           # the published per-example scores
    python bench/inits_lesson.py runs/inits-dates --export docs/data/inits-dates.json --timing /tmp/wb/lesson \
        --figure docs/img/inits-dates-curves.png

--timing PREFIX reads PREFIX.start and PREFIX.end (epoch seconds, written by the script that ran the sweeps) into
the export's wall time; without it the wall time is estimated from the runs' finish times.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path

# run as a script, bench/ is on the path but the checkout is not: bench.sweep_effects is imported from it
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.sweep_effects import exported_scores, said  # noqa: E402
from workbench.analysis.crossed import SeedSpread, crossed, smallest_gap  # noqa: E402
from workbench.analysis.eval_plan import runs_sentence, seed_spread  # noqa: E402
from workbench.analysis.settings import Setting, setting_key  # noqa: E402
from workbench.analysis.verdicts import Pairing, pooled, score_tables  # noqa: E402
from workbench.core.config import INITS, VARIANTS  # noqa: E402
from workbench.core.events import MetricEvent  # noqa: E402
from workbench.core.files import save_figure, write_json  # noqa: E402
from workbench.core.stats import ALPHA  # noqa: E402
from workbench.records.results import VariantResult, interval_fields  # noqa: E402
from workbench.records.runs import Run  # noqa: E402

FORMAT = "inits-1"  # of the exported file
INIT_NAMES = {"loftq": "LoftQ", "pissa": "PiSSA", "olora": "OLoRA", "eva": "EVA"}
LORA, QLORA = "LoRA", "QLoRA"
MiB = 2**20


@dataclass
class Found:
    """One run: its setting's name, its seed, its one trained variant's result and per-example scores, its
    training curve and when it finished."""

    name: str
    seed: int
    result: VariantResult
    scores: dict
    curve: list[MetricEvent]
    finished: float  # epoch seconds
    key: str = ""  # what makes two runs repeats of one setting (analysis.settings.setting_key); "" from a file
    config: dict | None = None  # the run's config as it wrote it (from the run folders)


def setting_name(config: dict) -> str:
    """LoRA, QLoRA, QLoRA + PiSSA, QLoRA + LoRA+ 16: the variant, the init where not peft's default, LoRA+'s
    ratio where not 1 (a run writes only the settings that differ from the defaults)."""
    lora = config.get("lora") or {}
    name = VARIANTS[config["variants"][0]].short
    init = lora.get("init", "gaussian")
    if init != "gaussian":
        name += f" + {INIT_NAMES.get(init, init)}"
    ratio = lora.get("loraplus_ratio", 1.0)
    if ratio != 1:
        name += f" + LoRA+ {ratio:g}"
    return name


def from_folder(folder: Path) -> list[Found]:
    found = []
    for path in sorted(Path(folder).glob("*/results.json")):
        run = Run(path.parent)
        if run.status != "done":
            continue
        config = run.read()["config"]
        result = next(r for r in run.results() if r.trained)
        scores = run.scores().get(result.name)
        if not scores:
            continue
        curve = [m for m in run.metrics() if m.variant == result.name]
        key = setting_key(config, result.name)
        seed = (config.get("train") or {}).get("seed", 0)
        found.append(Found(setting_name(config), seed, result, scores, curve, path.stat().st_mtime, key, config))
    for name in {f.name for f in found}:  # a name must not pool runs that differ in more than the seed
        if len({f.key for f in found if f.name == name}) > 1:
            raise ValueError(f"the runs named {name} differ in more than the seed; keep one setting per folder")
    return found


def wall_time(found: list[Found], timing: str | None) -> dict:
    """The measurement's wall time: from the script's start and end files, else from the first run's finish
    less its training and scoring to the last run's finish (a lower bound: loading is left out)."""
    if timing:
        start, end = (float(Path(f"{timing}.{which}").read_text().strip()) for which in ("start", "end"))
        how = "the sweeps' script: its start and end"
    else:
        first = min(found, key=lambda f: f.finished)
        start = first.finished - (first.result.train_seconds or 0) - (first.result.eval_seconds or 0)
        end = max(f.finished for f in found)
        how = "the runs' finish times (the first run's loading left out)"
    iso = lambda t: datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%d %H:%M UTC")  # noqa: E731
    return {"started": iso(start), "ended": iso(end), "wall_minutes": round((end - start) / 60, 1), "from": how}


def machine() -> str:
    """The CPU this was measured on, as /proc/cpuinfo names it, its cores and whether it multiplies bf16."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"
    model = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")), "")
    bf16 = ", avx512_bf16" if "avx512_bf16" in info else ""
    return f"{model or platform.machine()}, {os.cpu_count()} cores{bf16}"


def export(found: list[Found], path: Path, about: str, measured: dict, spread: SeedSpread | None, held: int):
    """Every run's per-example scores in one file, as bench/sweep_effects.py exports a sweep's (right/wrong as a
    string of 0 and 1, losses to 5 decimals), with each run's result row, its training losses by step, the seeds'
    spread the plan reads and the measurement's wall time."""
    first = found[0].scores
    doc = {
        "format": FORMAT,
        "about": about,
        "measured": measured,
        "held_out_examples": held,
        "about_general_base_losses": (
            "each QLoRA run's are the 4-bit base's as loaded, and its forgetting is counted from them: a run whose "
            "init moved W into the adapter scored its residual with the adapter off (inits_lesson.against_the_base)"
        ),
        "seed_spread": None if spread is None else vars(spread),
        "eval_keys": first["eval"]["keys"],
        "eval_tokens": first["eval"]["tokens"],
        "general_keys": first["general"]["keys"],
        "general_tokens": first["general"]["tokens"],
        "runs": [],
    }
    for f in sorted(found, key=lambda f: (order(f.name), f.seed)):
        e, g = f.scores["eval"], f.scores["general"]
        at = [{k: i for i, k in enumerate(e["keys"])}[k] for k in doc["eval_keys"]]
        g_at = [{k: i for i, k in enumerate(g["keys"])}[k] for k in doc["general_keys"]]
        doc["runs"].append(
            {
                "setting": f.name,
                "seed": f.seed,
                "finished": round(f.finished),
                "result": {k: v for k, v in f.result.to_dict().items() if v is not None},
                "train_losses": [round(m.loss, 5) for m in sorted(f.curve, key=lambda m: m.step)],
                "correct": "".join("1" if e["correct"][i] else "0" for i in at),
                "losses": [round(e["losses"][i], 5) for i in at],
                "general_losses": [round(g["losses"][i], 5) for i in g_at],
                "general_base_losses": [round(g["base_losses"][i], 5) for i in g_at],
            }
        )
    write_json(path, doc)


@dataclass
class Lesson:
    """What the runs say: each setting's runs pooled, the verdicts, the seeds' spread, the wall time."""

    found: list[Found]
    settings: dict[str, Setting]
    spread: SeedSpread | None
    held: int
    measured: dict = field(default_factory=dict)

    @property
    def seeds(self) -> int:
        return min(g.n for g in self.settings.values())

    @property
    def n(self) -> int:
        return len(self.found[0].scores["eval"]["keys"])

    def runs_of(self, name: str) -> dict[int, Found]:
        return {f.seed: f for f in self.found if f.name == name}

    def pairing(self, a: str, b: str) -> Pairing:
        """a against b over the seeds both ran, the i-th seed of one paired with the same seed of the other."""
        ra, rb = self.runs_of(a), self.runs_of(b)
        seeds = sorted(set(ra) & set(rb))
        return pooled(a, [ra[s].scores for s in seeds], b, [rb[s].scores for s in seeds], unit="seed")

    def comparisons(self) -> list[tuple[str, Pairing]]:
        """What 4 bits cost (QLoRA against LoRA), then each QLoRA setting against plain QLoRA."""
        out = []
        if LORA in self.settings and QLORA in self.settings:
            out.append(("what 4 bits cost: QLoRA against LoRA", self.pairing(QLORA, LORA)))
        for name in self.settings:
            if name.startswith(QLORA + " "):
                out.append((f"{name} against plain QLoRA", self.pairing(name, QLORA)))
        return out

    def smallest(self, a: str, b: str, score: str = "accuracy") -> float | None:
        """The smallest gap of `score` these seeds and examples show reliably (80% power) for a against b, from
        the components the two settings measured (crossed.smallest_gap)."""
        ra, rb = self.runs_of(a), self.runs_of(b)
        seeds = sorted(set(ra) & set(rb))
        tables = score_tables([*(ra[s].scores for s in seeds), *(rb[s].scores for s in seeds)])
        if not tables or score not in tables or len(seeds) < 2:
            return None
        k = len(seeds)
        return smallest_gap(crossed(tables[score][:k], tables[score][k:]))


def order(name: str) -> tuple[int, str]:
    """LoRA, QLoRA, the inits in the config's order, then LoRA+."""
    first = [LORA, QLORA, *(f"{QLORA} + {n}" for n in INIT_NAMES.values())]
    return (first.index(name), "") if name in first else (len(first), name)


def against_the_base(found: list[Found]) -> list[Found]:
    """Forgetting against the base the run started from. A run whose init moved part of W into the adapter
    (PiSSA, OLoRA, LoftQ past one iteration) scores its "adapter off" on the residual W − BA, a broken model
    (general-text loss ~16 nats where the base has ~3.7), so its results.json's forgetting is that residual's, not
    the base's. Where a run's "adapter off" losses are not the base's, they are replaced by the base's as a run of
    the same variant that left W alone scored it (the same model in every such run: checked), and its forgetting
    and interval recomputed."""
    plain = {}
    for f in found:
        if not INITS[f.result.init or "gaussian"].changes_base and f.scores.get("general", {}).get("base_losses"):
            g = f.scores["general"]
            base = dict(zip(g["keys"], g["base_losses"]))
            if f.result.name in plain and any(abs(base[k] - v) > 1e-3 for k, v in plain[f.result.name].items()):
                raise ValueError(f"the {f.result.name} runs that left W alone scored different bases")
            plain.setdefault(f.result.name, base)
    out = []
    for f in found:
        base, g = plain.get(f.result.name), f.scores.get("general") or {}
        own = dict(zip(g.get("keys") or [], g.get("base_losses") or []))
        # LoftQ with one iteration fits the adapter to the 4-bit base as loaded: its "adapter off" is the base
        if base is None or not own or all(abs(base[k] - v) <= 1e-3 for k, v in own.items()):
            out.append(f)
            continue
        g = {**g}
        g["base_losses"] = [base[k] for k in g["keys"]]
        weights = sum(g["tokens"])
        forgetting = sum((on - off) * w for on, off, w in zip(g["losses"], g["base_losses"], g["tokens"])) / weights
        fields = interval_fields(None, g)
        result = replace(f.result, forgetting=forgetting, **fields)
        out.append(replace(f, result=result, scores={**f.scores, "general": g}))
    return out


def lesson(found: list[Found], spread: SeedSpread | None, held: int, measured: dict | None = None) -> Lesson:
    found = against_the_base(found)
    groups: dict[str, Setting] = {}
    for f in sorted(found, key=lambda f: (order(f.name), f.seed)):
        g = groups.setdefault(f.name, Setting(f.key or f.name))
        g.results.append(f.result)
        g.seeds.append(f.seed)
        g.runs.append(f"{f.name}, seed {f.seed}")
    return Lesson(found, groups, spread, held, measured or {})


def from_file(path: Path) -> Lesson:
    doc = json.loads(Path(path).read_text(encoding="utf-8"))
    if doc.get("format") != FORMAT:
        raise ValueError(f"{path}: not the inits lesson's exported scores (format {FORMAT})")
    found = []
    for r in doc["runs"]:
        scores = exported_scores(doc, r)
        result = VariantResult.from_dict(r["result"])
        steps = len(r["train_losses"])
        curve = [
            MetricEvent(result.name, s + 1, steps, v, 0.0, 0.0, 0, 0, 0.0) for s, v in enumerate(r["train_losses"])
        ]
        found.append(Found(r["setting"], r["seed"], result, scores, curve, float(r["finished"])))
    s = doc.get("seed_spread")
    spread = None if s is None else SeedSpread(s["sd"], s["runs"], s["source"], s.get("discordant"))
    return lesson(found, spread, doc["held_out_examples"], doc.get("measured"))


def from_runs(folder: Path, timing: str | None = None) -> Lesson:
    """The lesson from the run folders: the seeds' spread from this folder's runs (eval_plan.seed_spread, what a
    sweep's plan reads), the task's held-out examples from the task."""
    from workbench.data import load_task

    found = from_folder(folder)
    if not found:
        raise ValueError(f"no finished runs with per-example scores in {folder}")
    config = found[0].config
    held = len(load_task(config["task"]).eval)
    measured = {**wall_time(found, timing), "machine": machine()}
    return lesson(found, seed_spread(config, Path(folder)), held, measured)


def load(source: Path, timing: str | None = None) -> Lesson:
    return from_file(source) if Path(source).is_file() else from_runs(source, timing)


# --------------------------------------------------------------------------- what it says


def interval_text(g: Setting, score: str, scale: float, digits: int) -> str:
    mean, ci = g.mean(score), g.interval(score)
    if mean is None:
        return ""
    said_ci = f" ({ci.low * scale:.{digits}f} to {ci.high * scale:.{digits}f})" if ci else ""
    return f"{mean * scale:.{digits}f}{said_ci}"


def table(les: Lesson) -> str:
    """One row per setting: mean accuracy, eval loss and forgetting with their 95% intervals over the seeds and
    the examples (analysis.settings), what the init took and the 4-bit weight error it left, and the costs
    (peak memory and training time: each the median over the seeds)."""
    lines = [
        "| setting | seeds | accuracy % (95% interval) | eval loss (95%) | forgetting (95%) | init s | "
        "4-bit weight error: as loaded → at step 0 | peak MiB | train s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    loaded = [f.result.init_error_before for f in les.found if f.result.init_error_before is not None]
    for name, g in les.settings.items():
        init_s = [r.init_seconds for r in g.results if r.init_seconds is not None]
        before = [r.init_error_before for r in g.results if r.init_error_before is not None]
        after = [r.init_error_after for r in g.results if r.init_error_after is not None]
        error = f"{100 * statistics.fmean(before):.2f}% → {100 * statistics.fmean(after):.2f}%" if after else ""
        if not after and g.first.bits == 4 and loaded:  # a start that leaves W alone keeps the error as loaded
            error = f"{100 * statistics.fmean(loaded):.2f}% (left as loaded)"
        costs = g.mean_result()
        lines.append(
            f"| {name} | {g.n} | {interval_text(g, 'accuracy', 100, 1)} | {interval_text(g, 'eval_loss', 1, 4)} | "
            f"{interval_text(g, 'forgetting', 1, 3)} | {f'{statistics.fmean(init_s):.1f}' if init_s else ''} | "
            f"{error} | {costs.peak_memory_bytes / MiB:,.0f} | {costs.train_seconds:.0f} |"
        )
    return "\n".join(lines)


def verdict_table(les: Lesson) -> str:
    """Each comparison's gap on each score, how often chance alone makes it, and whether it is real."""
    lines = ["| comparison | accuracy | eval loss | forgetting (general-text loss) |", "|---|---|---|---|"]
    for title, p in les.comparisons():
        if p.unpaired:
            lines.append(f"| {title} | {p.unpaired} | | |")
            continue
        cells = [said(v) if (v := p.get(s)) else "" for s in ("accuracy", "eval_loss", "forgetting")]
        lines.append(f"| {title} | {' | '.join(cells)} |")
    return "\n".join(lines)


def sentences(les: Lesson) -> list[str]:
    """Each verdict in its one sentence (the runs' spread and the examples both counted)."""
    return [f"{title}: {s}" for title, p in les.comparisons() for s in p.sentences()]


def resolves(les: Lesson) -> str:
    """What this budget can tell apart: the plan's figure (eval_plan.runs_sentence, from the seeds' spread these
    runs measured) and the smallest accuracy gap the QLoRA-against-LoRA comparison measured it could show."""
    plan = runs_sentence(les.seeds, les.n, les.held, les.spread)
    measured = les.smallest(QLORA, LORA) if LORA in les.settings and QLORA in les.settings else None
    out = f"The plan for {les.seeds} seeds of each setting on {les.n} examples: {plan or 'no seed spread known'}."
    if measured is not None:
        out += (
            f" Measured on these runs (QLoRA against LoRA, the runs' and the examples' spread as they came out): gaps "
            f"under about {100 * measured:.1f} accuracy points would not show reliably (80% power)."
        )
    return out


def won_back(les: Lesson) -> list[str]:
    """How much of NF4's cost each init won back, (init − QLoRA) / (LoRA − QLoRA), on each score where the
    verdicts see a cost at all; the range is the init's 95% interval against QLoRA over the cost's point value
    (the cost's own uncertainty would widen it further). Where the eval sees no cost, it says so."""
    if LORA not in les.settings or QLORA not in les.settings:
        return ["LoRA or plain QLoRA was not run, so NF4's cost is not measured here."]
    from scipy.stats import t

    cost = les.pairing(QLORA, LORA)
    out = []
    for score, words in (("accuracy", "accuracy"), ("eval_loss", "eval loss"), ("forgetting", "forgetting")):
        v = cost.get(score)
        if v is None:
            continue
        if not v.real:
            out.append(
                f"{words}: this eval cannot see what 4 bits cost (QLoRA − LoRA {said(v)}), so how much of it an "
                "init wins back cannot be measured here; each init's own gap against plain QLoRA is in the verdicts."
            )
            continue
        parts = []
        for name in les.settings:
            if not name.startswith(QLORA + " "):
                continue
            ra, rq = les.runs_of(name), les.runs_of(QLORA)
            seeds = sorted(set(ra) & set(rq))
            tables = score_tables([*(ra[s].scores for s in seeds), *(rq[s].scores for s in seeds)])
            c = crossed(tables[score][: len(seeds)], tables[score][len(seeds) :])
            half = t.ppf(1 - ALPHA / 2, c.df) * c.se
            share, low, high = (x / -v.gap for x in (c.gap, c.gap - half, c.gap + half))
            low, high = sorted((low, high))
            real = "" if c.p_value < ALPHA else "; its gap to QLoRA could be chance"
            parts.append(f"{name} {100 * share:+.0f}% ({100 * low:+.0f}% to {100 * high:+.0f}%{real})")
        out.append(f"{words}: 4 bits cost {said(v)}; of that, won back: " + "; ".join(parts) + ".")
    return out


def curves(les: Lesson) -> dict[str, list[list[MetricEvent]]]:
    """Each setting's seeds' training curves, for plots.init_curves_figure."""
    return {name: [f.curve for f in sorted(les.runs_of(name).values(), key=lambda f: f.seed)] for name in les.settings}


def report(les: Lesson) -> str:
    m = les.measured
    head = f"{len(les.found)} runs, {len(les.settings)} settings, {les.seeds}+ seeds each, {les.n} eval examples"
    if m:
        head += f"; {m.get('wall_minutes')} min wall ({m.get('started')} to {m.get('ended')}, {m.get('machine')})"
    parts = [head, table(les), verdict_table(les), "\n".join(f"- {s}" for s in sentences(les))]
    parts += [resolves(les), "\n".join(f"- {s}" for s in won_back(les))]
    return "\n\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source", nargs="?", default="runs/inits-dates", type=Path)
    parser.add_argument("--export", type=Path, help="write the runs' per-example scores to this file")
    parser.add_argument("--timing", help="PREFIX: read the measurement's wall time from PREFIX.start and PREFIX.end")
    parser.add_argument("--figure", type=Path, help="save the training curves beside plain QLoRA's to this file")
    a = parser.parse_args(argv)
    try:
        les = load(a.source, a.timing)
    except (OSError, ValueError) as e:
        print(f"{a.source}: {e}", file=sys.stderr)
        return 2
    if a.export:
        about = f"the inits lesson on dates, {len(les.found)} runs (bench/inits_lesson.py --export)"
        export(les.found, a.export, about, les.measured, les.spread, les.held)
        print(f"wrote {a.export}\n")
    if a.figure:
        from workbench.analysis.plots import init_curves_figure

        save_figure(init_curves_figure(curves(les)), a.figure)
        print(f"wrote {a.figure}\n")
    print(report(les))
    return 0


if __name__ == "__main__":
    sys.exit(main())
