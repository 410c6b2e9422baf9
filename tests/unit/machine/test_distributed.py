"""The processes a launcher started (machine.distributed): RANK, WORLD_SIZE and how many share a device."""

from __future__ import annotations

from workbench.machine.distributed import World


def test_a_world_says_how_many_processes_share_its_device(monkeypatch):
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")  # two machines of two processes
    world = World.from_env()
    assert world.local_world_size == 2 and world.sharing("cpu") == 2
    monkeypatch.setattr("torch.cuda.device_count", lambda: 2)
    assert world.sharing("cuda") == 1  # a GPU each
    monkeypatch.setattr("torch.cuda.device_count", lambda: 1)
    assert world.sharing("cuda") == 2  # both on the one GPU
    assert World().sharing("cpu") == 1 and World(0, 2, 0).sharing("cpu") == 1  # alone; a launcher that did not say
