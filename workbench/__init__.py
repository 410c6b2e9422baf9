"""workbench: explore LoRA and QLoRA fine-tuning of language models, in JupyterLab or headless."""

import logging as _logging
import warnings as _warnings

__version__ = "0.1.0"


class _DropNoise(_logging.Filter):
    # bitsandbytes offers, at import on CPUs with avx512_bf16, to fetch a kernel from the hub; this
    # project never downloads at run time and its built-in CPU path works, so the offer is noise.
    def filter(self, record: _logging.LogRecord) -> bool:
        return "kernels-community" not in record.getMessage()


_logging.getLogger("bitsandbytes.backends.cpu.ops").addFilter(_DropNoise())
# peft asks transformers a deprecated question on every wrap; nothing for a user to do about it.
_warnings.filterwarnings("ignore", message=r".*is_gradient_checkpointing.*deprecated.*", category=FutureWarning)
