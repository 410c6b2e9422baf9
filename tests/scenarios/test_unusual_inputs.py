"""Data files that are valid but unusual are read as their author meant them, not refused: what Excel,
Notepad and hand-edited files look like on Windows and Macs (byte-order marks, CRLF or CR line endings,
UTF-16), blank and whitespace-only lines, long cells, and text in any script."""

from __future__ import annotations

import codecs
import json

import pytest

from workbench import cli
from workbench.data import TextSource, load_data_task, load_examples

ROWS = [
    ("Résumé of the café's crème brûlée?", "Très bien — naïve façade"),
    ("東京の天気は？", "晴れです"),
    ("Emoji 👩‍💻 and flags 🇫🇷?", "🎉 yes"),
    ("Привет, как дела?", "Хорошо"),
    ("مرحبا", "أهلا"),
    ("Zero\u200bwidth and combining e\u0301", "ok"),
]


def _pairs(examples):
    return [(e.prompt, e.answer) for e in examples]


def _csv(rows, newline="\n", sep=","):
    lines = [sep.join(["prompt", "answer"])] + [sep.join(f'"{c}"' for c in row) for row in rows]
    return newline.join(lines) + newline


def _jsonl(rows, newline="\n"):
    return "".join(json.dumps({"prompt": p, "answer": a}, ensure_ascii=False) + newline for p, a in rows)


def _write(path, text, encoding="utf-8", bom=b""):
    path.write_bytes(bom + text.encode(encoding))
    return path


@pytest.mark.parametrize(
    "name, text, bom",
    [
        ("bom.csv", _csv(ROWS), codecs.BOM_UTF8),  # Excel's "CSV UTF-8"
        ("crlf.csv", _csv(ROWS, "\r\n"), b""),  # Windows
        ("bom-crlf.csv", _csv(ROWS, "\r\n"), codecs.BOM_UTF8),
        ("cr.csv", _csv(ROWS, "\r"), b""),  # Excel for Mac's "CSV (Macintosh)"
        ("semicolon-bom-crlf.csv", _csv(ROWS, "\r\n", ";"), codecs.BOM_UTF8),  # Excel in a comma-decimal locale
        ("crlf.tsv", _csv(ROWS, "\r\n", "\t"), b""),
        ("bom.jsonl", _jsonl(ROWS), codecs.BOM_UTF8),
        ("crlf.jsonl", _jsonl(ROWS, "\r\n"), b""),
        ("bom.json", json.dumps([{"prompt": p, "answer": a} for p, a in ROWS], ensure_ascii=False), codecs.BOM_UTF8),
        ("crlf.json", json.dumps([{"prompt": p, "answer": a} for p, a in ROWS], indent=2).replace("\n", "\r\n"), b""),
    ],
)
def test_byte_order_marks_and_line_endings_are_read_as_meant(tmp_path, name, text, bom):
    examples, skipped = load_examples(_write(tmp_path / name, text, bom=bom))
    assert _pairs(examples) == ROWS and skipped == 0


def test_blank_and_whitespace_only_lines_in_jsonl_are_skipped(tmp_path):
    lines = _jsonl(ROWS).splitlines()
    text = "\n" + lines[0] + "\n\n   \n\t\n" + "\n \r\n".join(lines[1:]) + "\n\n\n  \n"
    examples, _ = load_examples(_write(tmp_path / "gaps.jsonl", text))
    assert _pairs(examples) == ROWS
    # where a row came from still counts the blank lines, so messages point at the right line
    assert examples[1].where.endswith("line 6")


def test_a_jsonl_made_by_concatenating_files_with_byte_order_marks(tmp_path):
    # `cat a.jsonl b.jsonl`, where each was saved by an editor that writes a BOM
    text = "\ufeff" + _jsonl(ROWS[:3]) + "\ufeff" + _jsonl(ROWS[3:])
    examples, _ = load_examples(_write(tmp_path / "joined.jsonl", text))
    assert _pairs(examples) == ROWS


@pytest.mark.parametrize("encoding, bom", [("utf-16-le", codecs.BOM_UTF16_LE), ("utf-16-be", codecs.BOM_UTF16_BE)])
def test_utf16_with_a_byte_order_mark_is_read(tmp_path, encoding, bom):
    # Notepad's "Unicode" and Excel's "Unicode Text" (tab-separated) write this
    examples, _ = load_examples(_write(tmp_path / "u16.tsv", _csv(ROWS, "\r\n", "\t"), encoding, bom))
    assert _pairs(examples) == ROWS


def test_a_quoted_csv_cell_keeps_its_line_breaks_without_carriage_returns(tmp_path):
    text = 'prompt,answer\r\n"first line\r\nsecond line","a\r\nb"\r\nx,y\r\n'
    examples, _ = load_examples(_write(tmp_path / "multi.csv", text))
    assert _pairs(examples) == [("first line\nsecond line", "a\nb"), ("x", "y")]


def test_a_csv_cell_longer_than_the_csv_modules_default_limit(tmp_path):
    long = "word " * 40_000  # 200,000 characters: a document in a cell; csv refuses cells over 131,072 by default
    examples, _ = load_examples(_write(tmp_path / "long.csv", f'prompt,answer\n"{long}",yes\n'))
    assert examples[0].prompt == long.strip() and examples[0].answer == "yes"


@pytest.mark.parametrize("newline", ["\r\n", "\r"])
def test_plain_text_with_windows_or_old_mac_line_endings(tmp_path, newline):
    paras = ["Première strophe, ligne un.\nLigne deux — ça va.", "第二段。\n二行目。", "Third 🎭 paragraph.\nEnd."]
    text = "\n\n".join(paras).replace("\n", newline)
    source, _ = load_examples(_write(tmp_path / "poem.txt", text, bom=codecs.BOM_UTF8))
    assert isinstance(source, TextSource)
    assert "\r" not in source.text and "\ufeff" not in source.text
    assert source.text == "\n\n".join(paras)
    # held out at a paragraph break, which a "\r\n\r\n" would have hidden
    task = load_data_task(tmp_path / "poem.txt", eval_fraction=0.3)
    assert task.eval.text.strip() == paras[-1]


def test_chat_messages_whose_content_is_a_list_of_text_parts(tmp_path):
    # the OpenAI chat format lets content be a list of {"type": "text", "text": ...} parts
    row = {
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "Bonjour, "}, {"type": "text", "text": "ça va ?"}]},
            {"role": "assistant", "content": [{"type": "text", "text": "Oui 😊"}]},
        ]
    }
    examples, _ = load_examples(_write(tmp_path / "chat.jsonl", json.dumps(row, ensure_ascii=False) + "\n"))
    assert _pairs(examples) == [("Bonjour, ça va ?", "Oui 😊")]


def test_non_ascii_file_names_and_spaces(tmp_path):
    path = _write(tmp_path / "données d'entraînement 日本.jsonl", _jsonl(ROWS))
    task = load_data_task(path, eval_fraction=0.34)
    assert len(task.train) + len(task.eval) == len(ROWS)


def test_the_cli_previews_an_excel_csv_with_bom_and_crlf(tiny_model_dir, tmp_path, capsys):
    path = _write(tmp_path / "excel.csv", _csv(ROWS, "\r\n"), bom=codecs.BOM_UTF8)
    rc = cli.main(["preview", "--model", str(tiny_model_dir), "--data", str(path), "--eval-fraction", "0.34"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "train 4 examples, eval 2 examples" in out


def test_the_cli_reads_a_notepad_utf16_jsonl_with_blank_lines(tiny_model_dir, tmp_path, capsys):
    text = "\r\n" + _jsonl(ROWS, "\r\n\r\n")
    path = _write(tmp_path / "notepad.jsonl", text, "utf-16-le", codecs.BOM_UTF16_LE)
    rc = cli.main(["preview", "--model", str(tiny_model_dir), "--data", str(path), "--eval-fraction", "0.34"])
    assert rc == 0, capsys.readouterr().err
    assert "train 4 examples, eval 2 examples" in capsys.readouterr().out


def test_a_sweep_plan_reads_excels_unicode_text_and_plans_it(tiny_model_dir, tmp_path, capsys):
    # the plan reads the data before anything trains (a file it could not read would fail every point)
    path = _write(tmp_path / "excel.tsv", _csv(ROWS, "\r\n", "\t"), "utf-16-le", codecs.BOM_UTF16_LE)
    argv = ["sweep", "--plan", "--model", str(tiny_model_dir), "--data", str(path), "--ranks", "2", "--bits", "16"]
    rc = cli.main([*argv, "--target-sets", "q_proj", "--out", str(tmp_path / "sweep")])
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert out.startswith("1 points:") and "16bit-r2-q_proj" in out
