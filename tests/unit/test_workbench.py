"""The package itself (workbench/__init__.py): its version, and the libraries' noise it filters out of the logs
while everything else those loggers say still reaches the user."""

from __future__ import annotations

import logging

import workbench


def test_the_version_is_the_packages():
    from importlib.metadata import version

    assert workbench.__version__ == version("workbench")


def test_the_libraries_noise_is_dropped_and_everything_else_they_log_is_kept(caplog):
    cpu_ops = logging.getLogger("bitsandbytes.backends.cpu.ops")
    int8 = logging.getLogger("bitsandbytes.autograd._functions")
    with caplog.at_level(logging.INFO):
        cpu_ops.warning("Failed to load CPU gemm_4bit_forward from kernels-community: not trusted")
        int8.warning("MatMul8bitLt: inputs will be cast from torch.float32 to float16 during quantization")
        cpu_ops.warning("a real problem with the 4-bit kernel")
        int8.info("something else bitsandbytes says")
    assert [r.getMessage() for r in caplog.records] == [
        "a real problem with the 4-bit kernel",
        "something else bitsandbytes says",
    ]


def test_only_those_two_loggers_are_filtered(caplog):
    with caplog.at_level(logging.INFO):
        logging.getLogger("workbench").info("kernels-community is only a name here")
    assert [r.getMessage() for r in caplog.records] == ["kernels-community is only a name here"]
