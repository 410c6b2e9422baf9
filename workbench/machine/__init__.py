"""The machine: the C allocator, measured memory, admission of runs on a shared machine, and the process group."""
