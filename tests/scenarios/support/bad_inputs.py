"""Bad input a new user could give the CLI, as data: each case is a command line (and the files it needs), the
field or file its message must name, and why it is there. tests/scenarios/test_bad_inputs.py runs every case and checks
that it exits with status 2 and one line naming that field or file, with no traceback and no weights loaded;
tools/bad_inputs_table.py runs them too and prints the table in docs/reliability.md.

A case runs in a fresh folder that holds, besides its own files, COMMON_FILES (a good JSONL, a text, a plain
file, an empty folder) and `tiny`, a link to the tiny test model: file names in a command are relative to it,
so the messages read as a user would see them.
"""

from __future__ import annotations

import contextlib
import io
import os
import shlex
import sys
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from unittest import mock

DIR = object()  # a file's content that means "make a folder here"
GOOD_ROWS = [(f"What is {a} plus {b}?", str(a + b)) for a, b in [(1, 2), (2, 2), (3, 4), (5, 1), (6, 3), (7, 7)]]
COMMON_FILES = {
    "good.jsonl": "".join(f'{{"prompt": "{p}", "answer": "{a}"}}\n' for p, a in GOOD_ROWS),
    "text.txt": "A first paragraph of plain text, long enough to cut.\n\nA second one, held out for evaluation.\n",
    "afile": "not a folder\n",
    "emptydir": DIR,
}
LATIN1_CSV = "prompt,answer\ncafé,crème\n".encode("latin-1")
NUL_BINARY = bytes(range(256)) * 4
HIGH_BYTES = bytes(range(128, 256)) * 4  # no NUL, and no valid UTF-8 either
XLSX = b"PK\x03\x04\x14\x00\x06\x00" + bytes(64)  # a spreadsheet (a zip archive) renamed to .csv
RUN = "--out run"  # compare writes nowhere near the checkout, and only if a case is not refused


@dataclass
class Case:
    id: str
    argv: str  # split as a shell would
    names: str  # what the one error line must contain: the field, option or file at fault
    what: str  # the input, in words, for the table
    files: dict = field(default_factory=dict)  # name -> str, bytes or DIR, written before it runs
    needs: str | None = None  # "no-cuda", "not-root", "linux": skipped where it cannot be tried
    known: str | None = None  # a gap that needs a fix outside the CLI/config/data layers (xfail in the test)
    chmod: dict = field(default_factory=dict)  # name -> mode, set after the files are written

    @property
    def args(self) -> list[str]:
        return shlex.split(self.argv)


def _c(id, argv, names, what, **kw) -> Case:
    return Case(id, argv, names, what, **kw)


T = "--model tiny"  # the tiny test model: for checks that read a model's config (targets, rank, layout)
D = "--data good.jsonl"

CASES: list[Case] = [
    # --- every numeric option at its bounds, zero, negative, NaN, infinity and a non-number
    _c("rank-zero", f"compare --rank 0 {RUN}", "rank", "LoRA rank 0"),
    _c("rank-negative", f"compare --rank -4 {RUN}", "rank", "LoRA rank −4"),
    _c("rank-word", f"compare --rank eight {RUN}", "--rank", "LoRA rank not a number"),
    _c("rank-fraction", f"compare --rank 1.5 {RUN}", "--rank", "LoRA rank 1.5"),
    _c("rank-above-hidden", f"compare {T} {D} --rank 65 {RUN}", "rank", "rank one above the hidden size (64)"),
    _c("rank-huge", f"compare {T} {D} --rank {10**30} {RUN}", "rank", "rank 10³⁰"),
    _c("alpha-zero", f"compare --alpha 0 {RUN}", "alpha", "alpha 0"),
    _c("alpha-negative", f"compare --alpha -16 {RUN}", "alpha", "alpha −16"),
    _c("alpha-nan", f"compare --alpha nan {RUN}", "alpha", "alpha NaN"),
    _c("alpha-inf", f"compare --alpha inf {RUN}", "alpha", "alpha infinity"),
    _c("dropout-one", f"compare --dropout 1 {RUN}", "dropout", "dropout 1 (drops everything)"),
    _c("dropout-negative", f"compare --dropout -0.1 {RUN}", "dropout", "dropout −0.1"),
    _c("dropout-minus-inf", f"compare --dropout -inf {RUN}", "dropout must be", "dropout −infinity"),
    _c("dropout-nan", f"compare --dropout nan {RUN}", "dropout", "dropout NaN"),
    _c("steps-zero", f"compare --steps 0 {RUN}", "steps", "0 steps"),
    _c("steps-negative", f"compare --steps -1 {RUN}", "steps", "−1 steps"),
    _c("steps-fraction", f"compare --steps 2.5 {RUN}", "--steps", "2.5 steps"),
    _c("batch-zero", f"compare --batch-size 0 {RUN}", "batch_size", "batch size 0"),
    _c("batch-huge", f"compare {T} {D} --batch-size {10**30} {RUN}", "batch", "batch size 10³⁰ (the memory check)"),
    _c("seq-len-below-8", f"compare --seq-len 4 {RUN}", "seq_len", "sequence length 4"),
    _c("seq-len-nan", f"compare --seq-len nan {RUN}", "--seq-len", "sequence length NaN"),
    _c("lr-zero", f"compare --lr 0 {RUN}", "lr", "learning rate 0"),
    _c("lr-negative", f"compare --lr -1e-3 {RUN}", "lr must be", "learning rate −1e-3"),
    _c("lr-nan", f"compare --lr nan {RUN}", "lr", "learning rate NaN"),
    _c("lr-inf", f"compare --lr inf {RUN}", "lr", "learning rate infinity"),
    _c("lr-above-one", f"compare --lr 2 {RUN}", "lr", "learning rate 2"),
    _c("lr-word", f"compare --lr fast {RUN}", "--lr", "learning rate not a number"),
    _c("grad-accum-zero", f"compare --grad-accum 0 {RUN}", "grad_accum", "gradient accumulation 0"),
    _c("warmup-negative", f"compare --warmup-steps -1 {RUN}", "warmup_steps", "−1 warmup steps"),
    _c("seed-negative", f"compare --seed -1 {RUN}", "seed", "seed −1"),
    _c("seed-huge", f"compare --seed {2**64} {RUN}", "seed", "seed 2⁶⁴ (torch cannot take it)"),
    _c("eval-examples-negative", f"compare --eval-examples -1 {RUN}", "eval_examples", "−1 eval examples"),
    _c(
        "eval-examples-above-task",
        f"compare --task dates --eval-examples 601 {RUN}",
        "eval_examples",
        "601 eval examples of 600",
    ),
    _c("seeds-zero", f"compare --seeds 0 {RUN}", "seeds", "0 seeds"),
    _c("seeds-negative", f"compare --seeds -2 {RUN}", "seeds", "−2 seeds"),
    _c("seeds-fraction", f"compare --seeds 2.5 {RUN}", "--seeds", "2.5 seeds"),
    _c("seeds-huge", f"compare --seeds 1000 {RUN}", "seeds", "1,000 seeds (a typo)"),
    _c("seeds-with-resume", "compare --resume run --seeds 2", "seeds", "--seeds with --resume"),
    _c("seeds-past-largest-seed", f"compare --seed {2**32 - 1} --seeds 2 {RUN}", "seed", "seeds past 2³²−1"),
    _c("sweep-seeds-zero", "sweep --plan --seeds 0", "seeds", "a sweep of 0 seeds"),
    _c("search-zero", "sweep --plan --search 0", "search", "a search of 0 trials"),
    _c("search-lr-backwards", "sweep --plan --search 4 --lr-range 1e-3,1e-5", "lr", "a learning-rate range backwards"),
    _c("search-dropout-one", "sweep --plan --search 4 --dropout-range 0,1", "dropout", "a search up to dropout 1"),
    _c("search-range-word", "sweep --plan --search 4 --alpha-range 4,x", "--alpha-range", "an alpha range 4,x"),
    _c("search-option-on-a-grid", "sweep --plan --lr-range 1e-4,1e-3", "--lr-range", "a search's range on a grid"),
    _c("search-max-memory-negative", "sweep --plan --search 4 --max-memory -1", "max memory", "a negative budget"),
    _c("sweep-workers-zero", "sweep --plan --workers 0", "--workers", "0 workers"),
    _c(
        "sweep-storage-refused",
        "sweep --plan --storage postgresql://me:secret@127.0.0.1:1/sweeps",
        "storage",
        "a database nobody serves",
    ),
    _c(
        "sweep-storage-no-driver",
        "sweep --plan --storage mysql://me@127.0.0.1/sweeps",
        "storage",
        "MySQL without a driver",
    ),
    _c("eval-fraction-zero", f"compare {D} --eval-fraction 0 {RUN}", "eval_fraction", "eval fraction 0"),
    _c("eval-fraction-one", f"compare {D} --eval-fraction 1 {RUN}", "eval_fraction", "eval fraction 1"),
    _c("eval-fraction-nan", f"compare {D} --eval-fraction nan {RUN}", "eval_fraction", "eval fraction NaN"),
    _c(
        "eval-fraction-leaves-none",
        f"compare {D} --eval-fraction 0.95 {RUN}",
        "eval_fraction",
        "eval fraction 0.95 of 6 examples (none left to train on)",
    ),
    _c("sweep-ranks-zero", "sweep --plan --ranks 0,8", "ranks", "sweep ranks 0,8"),
    _c("sweep-ranks-word", "sweep --plan --ranks 2,x", "--ranks", "sweep ranks 2,x"),
    _c("sweep-ranks-above-hidden", f"sweep --plan {T} --ranks 128", "rank", "sweep rank above the hidden size"),
    _c("sweep-bits-3", "sweep --plan --bits 16,3", "bits", "sweep bits 16,3"),
    _c("sweep-bits-none", "sweep --plan --bits ,", "bits", "sweep bits empty"),
    _c("sweep-lr-nan", "sweep --plan --lr nan", "lr", "sweep learning rate NaN"),
    _c("estimate-bits-5", "estimate --bits 5", "bits", "estimate at 5 bits"),
    _c("estimate-seq-len-negative", "estimate --seq-len -5", "seq_len", "estimate sequence length −5"),
    _c("estimate-rank-above-hidden", f"estimate {T} --rank 65", "rank", "estimate rank above the hidden size"),
    _c("preview-examples-negative", f"preview {T} {D} -n -1", "examples", "preview −1 examples"),
    # --- unknown names
    _c("task-unknown", f"compare --task nope {RUN}", "task", "an unknown task"),
    _c("preset-unknown", f"compare --preset nope {RUN}", "preset", "an unknown preset"),
    _c("targets-unknown", f"compare {T} {D} --targets q_proj,zzz {RUN}", "targets", "a target module the model lacks"),
    _c("targets-empty", f"compare --targets , {RUN}", "targets", "no target modules"),
    _c("estimate-targets-unknown", f"estimate {T} --targets zzz", "targets", "estimate for a module the model lacks"),
    _c("sweep-targets-unknown", f"sweep --plan {T} --target-sets zzz", "targets", "sweep over a module it lacks"),
    _c("quant-type-unknown", f"compare --quant-type int4 {RUN}", "--quant-type", "4-bit type int4"),
    _c("sweep-quant-type-unknown", "sweep --plan --quant-types nf4,int4", "quant_types", "sweep 4-bit type int4"),
    _c("double-quant-maybe", "sweep --plan --double-quant maybe", "--double-quant", "double quantization maybe"),
    _c("variant-unknown", f"compare --variants base,qlora16 {RUN}", "variants", "an unknown variant"),
    _c("variant-twice", f"compare --variants lora,lora {RUN}", "variants", "a variant twice"),
    _c("variants-none", f"compare --variants , {RUN}", "variants", "no variants"),
    _c("device-unknown", f"compare --device tpu {RUN}", "--device", "device tpu"),
    _c("device-cuda-absent", f"compare --device cuda {RUN}", "device", "cuda without a GPU", needs="no-cuda"),
    _c("dtype-unknown", f"compare --dtype float64 {RUN}", "--dtype", "dtype float64"),
    _c("columns-syntax", f"compare {D} --columns question {RUN}", "columns", "a column map without ="),
    _c("columns-field-unknown", f"compare {D} --columns label=answer {RUN}", "columns", "a column map to no field"),
    _c("columns-absent", f"compare {D} --columns prompt=question {RUN}", "question", "a column the file lacks"),
    _c("model-missing", f"compare --model ./nothere {D} {RUN}", "model", "a model folder that does not exist"),
    _c("model-no-config", f"compare --model emptydir {D} {RUN}", "config.json", "a model folder without config.json"),
    _c("model-is-a-file", f"compare --model afile {D} {RUN}", "model", "a file given as the model"),
    _c("model-empty", f"compare --model= {D} {RUN}", "model", "an empty model name"),
    _c("sweep-model-no-config", "sweep --plan --model emptydir", "model", "sweep a folder without config.json"),
    _c("estimate-model-no-config", "estimate --model emptydir", "model", "estimate a folder without config.json"),
    _c(
        "model-config-not-json",
        f"compare --model badmodel {D} {RUN}",
        "config.json",
        "a model folder whose config.json is not JSON",
        files={"badmodel": DIR, "badmodel/config.json": "{ not json"},
    ),
    _c(
        "model-no-tokenizer",
        f"compare --model notok {D} {RUN}",
        "notok",
        "a model folder without a tokenizer",
        files={"notok": DIR, "notok/config.json": '{"model_type": "llama"}'},
    ),
    # --- combinations out of range
    _c("eval-data-alone", f"compare --eval-data good.jsonl {RUN}", "eval_data", "an eval file without data"),
    _c("task-and-data", f"compare --task sentiment {D} {RUN}", "--data", "a task and a data file at once"),
    _c(
        "eval-data-other-kind",
        f"compare {D} --eval-data text.txt {RUN}",
        "text.txt",
        "instruction data evaluated on plain text",
    ),
    _c(
        "too-few-examples",
        f"compare --data three.jsonl {RUN}",
        "three",
        "3 examples (none to hold out)",
        files={"three.jsonl": "".join(COMMON_FILES["good.jsonl"].splitlines(True)[:3])},
    ),
    _c(
        "skip-bad-rows-all-bad",
        f"compare --data blanks.jsonl --skip-bad-rows {RUN}",
        "blanks.jsonl",
        "--skip-bad-rows with every row unusable",
        files={"blanks.jsonl": '{"prompt": "a", "answer": ""}\n{"prompt": "", "answer": "b"}\n'},
    ),
    _c("resume-not-a-run", "compare --resume emptydir", "resume", "--resume of a folder that holds no run"),
    # --- output folders that cannot be made or written
    _c("out-under-a-file", "compare --out afile/run", "out", "--out under a file"),
    _c("out-is-a-file", "compare --out afile", "out", "--out that is a file"),
    _c("out-not-writable", "compare --out /proc/1/run", "out", "--out in a folder nobody may write", needs="linux"),
    _c("out-empty", "compare --out ''", "--out", "an empty --out"),
    _c("sweep-out-under-a-file", "sweep --plan --out afile/sweep", "out", "sweep --out under a file"),
    _c("sweep-out-not-writable", "sweep --plan --out /proc/1/s", "out", "sweep --out not writable", needs="linux"),
    _c("out-in-proc", "compare --out /proc/forbidden", "out", "--out where the kernel refuses mkdir", needs="linux"),
    _c(
        "out-no-permission",
        "compare --out locked/run",
        "out",
        "--out in a folder without write permission",
        files={"locked": DIR},
        chmod={"locked": 0o555},
        needs="not-root",
    ),
    _c("sweep-out-in-proc", "sweep --plan --out /proc/forbidden", "out", "sweep --out under /proc", needs="linux"),
    _c(
        "train-out-in-proc",
        "train exp.yaml --out /proc/forbidden",
        "out",
        "train --out under /proc",
        files={"exp.yaml": "variants: [lora]\n"},
        needs="linux",
    ),
    _c(
        "train-out-under-a-file",
        "train exp.yaml --out afile/run",
        "out",
        "train --out under a file",
        files={"exp.yaml": "variants: [lora]\n"},
    ),
    _c(
        "train-default-out-under-a-file",
        "train afile.d/exp.yaml",
        "out",
        "train's run folder (beside the config) in the way",
        files={
            "afile.d": DIR,
            "afile.d/exp": "a file where the run folder goes\n",
            "afile.d/exp.yaml": "variants: [lora]\n",
        },
    ),
    _c("export-out-in-proc", "export emptydir --out /proc/forbidden", "out", "export --out under /proc", needs="linux"),
    _c("export-out-under-a-file", "export emptydir --out afile/adapter", "out", "export --out under a file"),
    _c("app-runs-in-proc", "app --runs /proc/forbidden", "--runs", "the app's --runs under /proc", needs="linux"),
    _c("notebooks-dir-in-proc", "notebooks /proc/forbidden", "dir", "notebooks into /proc", needs="linux"),
    _c("notebooks-dir-under-a-file", "notebooks afile/nbs", "dir", "notebooks into a folder under a file"),
    _c("app-runs-under-a-file", "app --runs afile/runs", "--runs", "the app's --runs under a file"),
    _c("app-ip-a-name", "app --ip classroom", "--ip", "the app's --ip not an address"),
    _c("app-token-short", "app --ip 0.0.0.0 --token letmein", "--token", "a token a room could guess (7 characters)"),
    # --- each data format broken each way it can break
    _c("data-missing", f"compare --data nothere.jsonl {RUN}", "nothere.jsonl", "a data file that does not exist"),
    _c("data-folder", f"compare --data emptydir {RUN}", "emptydir is a folder", "a folder given as --data"),
    _c(
        "data-folder-named-jsonl",
        f"compare --data rows.jsonl {RUN}",
        "rows.jsonl",
        "a folder named like a data file",
        files={"rows.jsonl": DIR},
    ),
    _c(
        "data-extension",
        f"compare --data rows.xlsx {RUN}",
        "rows.xlsx",
        "a spreadsheet (.xlsx)",
        files={"rows.xlsx": XLSX},
    ),
    _c(
        "data-unreadable",
        f"compare --data locked.jsonl {RUN}",
        "locked.jsonl",
        "a data file without read permission",
        files={"locked.jsonl": COMMON_FILES["good.jsonl"]},
        chmod={"locked.jsonl": 0},
        needs="not-root",
    ),
    _c("jsonl-empty", f"compare --data e.jsonl {RUN}", "e.jsonl", "an empty JSONL", files={"e.jsonl": ""}),
    _c("jsonl-blank", f"compare --data w.jsonl {RUN}", "w.jsonl", "a JSONL of blank lines", files={"w.jsonl": "\n \n"}),
    _c("jsonl-binary", f"compare --data b.jsonl {RUN}", "b.jsonl", "binary bytes", files={"b.jsonl": NUL_BINARY}),
    _c(
        "jsonl-high-bytes",
        f"compare --data h.jsonl {RUN}",
        "h.jsonl",
        "bytes that are not UTF-8",
        files={"h.jsonl": HIGH_BYTES},
    ),
    _c(
        "jsonl-utf16-no-bom",
        f"compare --data u.jsonl {RUN}",
        "u.jsonl",
        "UTF-16 without a byte-order mark",
        files={"u.jsonl": COMMON_FILES["good.jsonl"].encode("utf-16-le")},
    ),
    _c(
        "jsonl-latin1",
        f"compare --data l.jsonl {RUN}",
        "l.jsonl",
        "Latin-1 text",
        files={"l.jsonl": '{"prompt": "café", "answer": "crème"}\n'.encode("latin-1")},
    ),
    _c(
        "jsonl-bad-line",
        f"compare --data x.jsonl {RUN}",
        "x.jsonl line 2",
        "a line that is not JSON",
        files={"x.jsonl": '{"prompt": "a", "answer": "b"}\n{"prompt": "a", answer: b}\n'},
    ),
    _c(
        "jsonl-numbers",
        f"compare --data n.jsonl {RUN}",
        "n.jsonl line 1",
        "lines that are numbers",
        files={"n.jsonl": "1\n2\n"},
    ),
    _c(
        "jsonl-lists",
        f"compare --data l.jsonl {RUN}",
        "l.jsonl line 1",
        "lines that are lists",
        files={"l.jsonl": '["a", "b"]\n'},
    ),
    _c(
        "jsonl-columns-missing",
        f"compare --data q.jsonl {RUN}",
        "q.jsonl",
        "rows without prompt/answer columns",
        files={"q.jsonl": '{"q": "a", "label": "b"}\n' * 5},
    ),
    _c(
        "jsonl-empty-answer",
        f"compare --data ea.jsonl {RUN}",
        "ea.jsonl line 2",
        "a row with an empty answer",
        files={"ea.jsonl": '{"prompt": "a", "answer": "b"}\n{"prompt": "c", "answer": " "}\n'},
    ),
    _c(
        "jsonl-answer-list",
        f"compare --data al.jsonl {RUN}",
        "al.jsonl line 1",
        "an answer that is a list, not text",
        files={"al.jsonl": '{"prompt": "a", "answer": ["b", "c"]}\n' * 5},
    ),
    _c(
        "jsonl-messages-shape",
        f"compare --data m.jsonl {RUN}",
        "m.jsonl line 1",
        "chat messages that do not end with an answer",
        files={"m.jsonl": '{"messages": [{"role": "user", "content": "hi"}]}\n' * 5},
    ),
    _c("json-number", f"compare --data n.json {RUN}", "n.json", "a JSON number", files={"n.json": "42"}),
    _c(
        "json-numbers",
        f"compare --data n.json {RUN}",
        "n.json",
        "a JSON list of numbers",
        files={"n.json": "[1, 2, 3]"},
    ),
    _c("json-empty-list", f"compare --data e.json {RUN}", "e.json", "an empty JSON list", files={"e.json": "[]"}),
    _c(
        "json-invalid", f"compare --data i.json {RUN}", "i.json", "JSON cut short", files={"i.json": '[{"prompt": "a",'}
    ),
    _c(
        "json-is-jsonl",
        f"compare --data j.json {RUN}",
        "j.json",
        "JSONL saved as .json",
        files={"j.json": COMMON_FILES["good.jsonl"]},
    ),
    _c(
        "json-nested-deep",
        f"compare --data d.json {RUN}",
        "d.json",
        "50,000 nested brackets",
        files={"d.json": "[" * 50_000},
    ),
    _c("csv-empty", f"compare --data e.csv {RUN}", "e.csv", "an empty CSV", files={"e.csv": ""}),
    _c(
        "csv-header-only",
        f"compare --data h.csv {RUN}",
        "h.csv",
        "a CSV with a header only",
        files={"h.csv": "prompt,answer\n"},
    ),
    _c("csv-latin1", f"compare --data l.csv {RUN}", "l.csv", "a Latin-1 CSV", files={"l.csv": LATIN1_CSV}),
    _c("csv-xlsx", f"compare --data s.csv {RUN}", "s.csv", "a spreadsheet renamed to .csv", files={"s.csv": XLSX}),
    _c(
        "csv-extra-cells",
        f"compare --data x.csv {RUN}",
        "x.csv line 2",
        "a row with more cells than the header",
        files={"x.csv": "prompt,answer\na,b,c\n"},
    ),
    _c(
        "csv-columns-missing",
        f"compare --data c.csv {RUN}",
        "c.csv",
        "a CSV without prompt/answer columns",
        files={"c.csv": "question,label\na,b\nc,d\ne,f\ng,h\n"},
    ),
    _c("txt-empty", f"compare --data e.txt {RUN}", "e.txt", "an empty .txt", files={"e.txt": "  \n"}),
    _c("txt-binary", f"compare --data b.txt {RUN}", "b.txt", "a binary .txt", files={"b.txt": NUL_BINARY}),
    _c(
        "txt-latin1",
        f"compare --data l.txt {RUN}",
        "l.txt",
        "a Latin-1 .txt",
        files={"l.txt": "Ça, c'est été.\n".encode("latin-1")},
    ),
    _c("txt-too-short", f"compare --data s.txt {RUN}", "s.txt", "a text too short to hold out", files={"s.txt": "x"}),
    _c("eval-data-missing", f"compare {D} --eval-data nothere.jsonl {RUN}", "nothere.jsonl", "a missing --eval-data"),
    _c(
        "eval-data-empty",
        f"compare {D} --eval-data e.jsonl {RUN}",
        "e.jsonl",
        "an empty --eval-data",
        files={"e.jsonl": ""},
    ),
    _c("eval-data-folder", f"compare {D} --eval-data emptydir {RUN}", "emptydir", "a folder as --eval-data"),
    _c("sweep-data-empty", "sweep --plan --data e.jsonl", "e.jsonl", "sweep on an empty file", files={"e.jsonl": ""}),
    _c(
        "preview-data-binary",
        f"preview {T} --data b.csv",
        "b.csv",
        "preview a binary file",
        files={"b.csv": NUL_BINARY},
    ),
    # --- the adapter's start (init, LoRA+): refused before anything loads, naming the setting
    _c("init-unknown", f"compare --init lofty {RUN}", "--init", "an init that does not exist"),
    _c("init-loftq-16bit", f"compare --init loftq {RUN}", "init", "loftq with 16-bit LoRA among the variants"),
    _c("init-pissa-8bit", f"compare --init pissa --variants lora8 {RUN}", "init", "pissa on an 8-bit base"),
    _c("init-with-dora", f"compare --init olora --dora {RUN}", "use_dora", "an init with DoRA"),
    _c(
        "init-eva-few-tokens",
        f"compare {T} {D} --init eva --rank 32 --batch-size 1 --variants lora {RUN}",
        "init",
        "EVA with fewer tokens per batch than the rank",
    ),
    _c("loraplus-nan", f"compare --loraplus-ratio nan {RUN}", "loraplus_ratio", "LoRA+ ratio NaN"),
    _c("loraplus-zero", f"compare --loraplus-ratio 0 {RUN}", "loraplus_ratio", "LoRA+ ratio 0"),
    _c("loraplus-negative", f"compare --loraplus-ratio -4 {RUN}", "loraplus_ratio", "LoRA+ ratio −4"),
    _c("loftq-iter-zero", f"compare --loftq-iter 0 {RUN}", "loftq_iter", "0 LoftQ iterations"),
    _c("sweep-init-no-bits", f"sweep --inits loftq --bits 16 --plan {RUN}", "inits", "loftq swept at 16 bits only"),
    _c("sweep-init-unknown", f"sweep --inits gaussian,lofty --plan {RUN}", "inits", "an unknown init in a sweep"),
    _c("sweep-loraplus-inf", f"sweep --loraplus-ratios 1,inf --plan {RUN}", "loraplus_ratios", "LoRA+ ratio inf"),
]


@dataclass
class Outcome:
    code: int | None  # None: it raised instead of exiting
    err: str
    out: str
    loaded: bool  # whether load_model was called

    @property
    def lines(self) -> list[str]:
        return [line for line in self.err.splitlines() if line.strip()]

    @property
    def errors(self) -> list[str]:
        """stderr's lines less the [workbench] lines a command prints about its own work as it goes."""
        return [line for line in self.lines if not line.startswith("[workbench] ")]


def unmet(case: Case) -> str | None:
    """Why a case cannot be tried on this machine, or None."""
    if case.needs == "no-cuda":
        import torch

        return "a CUDA GPU is present" if torch.cuda.is_available() else None
    if case.needs == "not-root":
        return "root may read and write every file" if hasattr(os, "geteuid") and os.geteuid() == 0 else None
    if case.needs == "linux":
        return None if sys.platform.startswith("linux") else "needs Linux's /proc"
    return None


def prepare(case: Case, where: Path, tiny: Path) -> None:
    """Write the case's files (and the common ones) into `where`, with `tiny` linked in."""
    where.mkdir(parents=True, exist_ok=True)
    (where / "tiny").symlink_to(tiny, target_is_directory=True)
    for name, content in {**COMMON_FILES, **case.files}.items():
        path = where / name
        if content is DIR:
            path.mkdir(parents=True, exist_ok=True)
        elif isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")
    for name, mode in case.chmod.items():
        (where / name).chmod(mode)


def run(case: Case, where: Path, tiny: Path) -> Outcome:
    """Run the case's command in-process in `where` (prepared here), with loading weights made an error."""
    from workbench.cli import main

    prepare(case, where, tiny)
    calls = []

    def no_weights(*args, **kwargs):
        calls.append(args)
        raise AssertionError("weights were loaded for a bad input")

    err, out = io.StringIO(), io.StringIO()
    before = Path.cwd()
    os.chdir(where)
    try:
        with mock.patch("workbench.engine.models.load_model", no_weights):
            with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
                try:
                    code = main(case.args)
                except SystemExit as exc:  # argparse exits from inside parse_args
                    code = exc.code
                except Exception:  # noqa: BLE001 - a traceback is what the test looks for
                    code = None
                    err.write(traceback.format_exc())
    finally:
        os.chdir(before)
    return Outcome(code, err.getvalue(), out.getvalue(), bool(calls))
