"""What each setting of a sweep does, pooled over the others and the seeds (docs/guide/sweep.md): for rank,
targets, bits and the 4-bit type, every pair of runs that differ in that setting alone (same seed, same
everything else) is compared on the same eval examples, all such pairs pooled with the examples as the unit
(workbench.verdicts.pooled: McNemar on accuracy, sign-flip permutation tests on eval loss and forgetting).

    python bench/sweep_effects.py runs/sweep-dates-seeds
"""

from __future__ import annotations

import sys
from pathlib import Path

from workbench.runs import Run
from workbench.verdicts import pooled

# (name, the key a run's setting is read by, the value compared against, the value compared)
FACTORS = [
    ("rank 2 → 16", "rank", 2, 16),
    ("q_proj,v_proj → all-linear", "targets", "q_proj+v_proj", "all-linear"),
    ("16 bits → 4 bits (NF4)", "base", "16", "nf4"),
    ("NF4 → FP4", "base", "nf4", "fp4"),
]


def setting(run: Run) -> dict:
    c = run.read()["config"]
    targets = c["lora"]["target_modules"]
    bits = 4 if c["variants"][0] == "qlora" else 8 if c["variants"][0] == "lora8" else 16
    return {
        "rank": c["lora"]["rank"],
        "targets": targets if isinstance(targets, str) else "+".join(targets),
        "base": c["quant"]["quant_type"] if bits == 4 else str(bits),
        "seed": c["train"]["seed"],
    }


def main(argv: list[str] | None = None) -> int:
    folder = Path((argv or sys.argv[1:] or ["runs/sweep-dates-seeds"])[0])
    runs = [Run(p.parent) for p in sorted(folder.glob("*/results.json"))]
    found = [(setting(r), next(iter(r.scores().values()), None)) for r in runs if r.finished]
    print(f"{len(found)} runs in {folder}\n")
    for title, key, before, after in FACTORS:
        index = {tuple(sorted((k, v) for k, v in s.items() if k != key)): sc for s, sc in found if s[key] == before}
        a_runs, b_runs = [], []
        for s, sc in found:
            if s[key] != after:
                continue
            twin = index.get(tuple(sorted((k, v) for k, v in s.items() if k != key)))
            if twin is not None and sc is not None:
                a_runs.append(sc)
                b_runs.append(twin)
        print(f"## {title}: {len(a_runs)} pairs of runs")
        if not a_runs:
            continue
        pairing = pooled(str(after), a_runs, str(before), b_runs)
        for sentence in pairing.sentences():
            # pooled() counts its repeats as seeds; here each is a pair of runs (a setting and a seed)
            print(f"- {sentence.replace(f'over {len(a_runs)} seeds', f'over {len(a_runs)} pairs of runs')}")
        # the sentences round p; a table that puts 4.6% and 5.4% on either side of the line needs more digits
        print("- p: " + ", ".join(f"{v.score} {v.p_value:.4f}" for v in pairing.verdicts))
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
