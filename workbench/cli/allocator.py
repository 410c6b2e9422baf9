"""`python -m workbench.cli.allocator`: the LD_PRELOAD a new process should start with (the fast allocator when
one is installed, else what it has now; see workbench.machine.allocator). `make lab` and `make app` use it."""

from workbench.machine.allocator import preload_env

if __name__ == "__main__":
    print(preload_env().get("LD_PRELOAD", ""))
