"""Tasks and datasets: read the formats people have, split, tokenise with the chat template,
collate, score, and preview what the model will see.

Two kinds of data:
- instruction data (prompt -> answer): Alpaca's instruction/input/output, prompt/response (or
  completion or answer), or chat `messages`; from JSONL, JSON, CSV, a pandas DataFrame, a
  `datasets.Dataset` or a list of dicts. Loss on the answer tokens only.
- plain text (.txt, or a `text` column) for continued pre-training or style tuning: cut into
  blocks of seq_len tokens, loss on every token, scored by held-out perplexity.

One subject per module: formats (reading files and objects into examples), tasks (splits, the
shipped tasks, a run's task), tokens (tokenising, batches, the preview), scoring. This package
re-exports their public names, so `from workbench.data import load_data_task` keeps working.
"""

from workbench.core.paths import data_dir
from workbench.data.formats import (
    ANSWER_KEYS,
    PROMPT_KEYS,
    SCHEMAS,
    Example,
    TextSource,
    examples_from_rows,
    load_examples,
    parse_columns,
    read_jsonl,
    read_records,
)
from workbench.data.scoring import SHORT_ANSWER_WORDS, choose_scoring, exact_match, normalize
from workbench.data.tasks import (
    Task,
    builtin_tasks,
    general_text,
    get_task,
    load_data_task,
    load_file_task,
    load_task,
    task_for,
)
from workbench.data.tokens import (
    IGNORE_INDEX,
    Encoded,
    Preview,
    answer_suffix,
    collate,
    encode,
    encode_example,
    encode_split,
    length_report,
    preview,
    prompt_answer_ids,
    prompt_text,
    text_blocks,
)

__all__ = [
    "ANSWER_KEYS",
    "IGNORE_INDEX",
    "PROMPT_KEYS",
    "SCHEMAS",
    "SHORT_ANSWER_WORDS",
    "Encoded",
    "Example",
    "Preview",
    "Task",
    "TextSource",
    "answer_suffix",
    "builtin_tasks",
    "choose_scoring",
    "collate",
    "data_dir",
    "encode",
    "encode_example",
    "encode_split",
    "examples_from_rows",
    "exact_match",
    "general_text",
    "get_task",
    "length_report",
    "load_data_task",
    "load_examples",
    "load_file_task",
    "load_task",
    "normalize",
    "parse_columns",
    "preview",
    "prompt_answer_ids",
    "prompt_text",
    "read_jsonl",
    "read_records",
    "task_for",
    "text_blocks",
]
