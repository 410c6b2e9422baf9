"""The app appears without the heavy libraries: in a fresh process, Workbench() builds its first tab only, and
peft, bitsandbytes and transformers' model code load when a tab or a job needs them (the app is ready in about a
second once the layout cache is warm)."""

from __future__ import annotations


def test_the_app_appears_without_the_heavy_libraries(tmp_path):
    """Workbench() builds its first tab only: peft, bitsandbytes and transformers' model code load when a tab
    or a job needs them (the app is ready in about a second once the layout cache is warm)."""
    import json
    import os
    import subprocess
    import sys

    script = (
        "import json, sys\nfrom workbench.ui import Workbench\nWorkbench(runs_dir=sys.argv[1])\n"
        "print(json.dumps(sorted(m for m in ('peft', 'bitsandbytes', 'transformers.models.llama.modeling_llama')"
        " if m in sys.modules)))"
    )
    env = {**os.environ, "WORKBENCH_HOME": str(tmp_path / "home")}
    for _ in range(2):  # the first fills the layout cache
        out = subprocess.run(
            [sys.executable, "-c", script, str(tmp_path / "runs")], capture_output=True, text=True, env=env, check=True
        )
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []
