"""workbench: explore LoRA and QLoRA fine-tuning of language models, in JupyterLab or headless."""

import logging as _logging
import warnings as _warnings

__version__ = "0.1.0"


class _DropNoise(_logging.Filter):
    # - bitsandbytes offers, at import on CPUs with avx512_bf16, to fetch a kernel from the hub;
    #   this project never downloads at run time and the built-in CPU path works.
    # - LLM.int8 on CPU logs a cast notice on every matmul (hundreds of lines per generate).
    NOISE = ("kernels-community", "MatMul8bitLt: inputs will be cast from")

    def filter(self, record: _logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(n in message for n in self.NOISE)


for _name in ("bitsandbytes.backends.cpu.ops", "bitsandbytes.autograd._functions"):
    _logging.getLogger(_name).addFilter(_DropNoise())
# older bitsandbytes says the int8 cast notice through warnings rather than logging
_warnings.filterwarnings("ignore", message=r".*MatMul8bitLt: inputs will be cast from.*")
# peft asks transformers a deprecated question on every wrap; nothing for a user to do about it.
_warnings.filterwarnings("ignore", message=r".*is_gradient_checkpointing.*deprecated.*", category=FutureWarning)
