"""Draw the chart of where QLoRA's saving comes from across model sizes (docs/img/qlora-saving-by-model-size.png):
the estimator's peak by component for every shipped config, with the measured peaks of the runs under a folder.

    .venv/bin/python bench/size_chart.py docs/img/qlora-saving-by-model-size.png [runs folder]
"""

from __future__ import annotations

import sys
from pathlib import Path

from workbench.analysis.by_size import save_chart

if __name__ == "__main__":
    print(save_chart(Path(sys.argv[1]), Path(sys.argv[2] if len(sys.argv) > 2 else "runs")))
