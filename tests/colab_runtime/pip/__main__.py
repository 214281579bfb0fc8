"""`python -m pip ARGS`: appends {argv, constraints} to $COLAB_STANDIN_PIP_RECORD (JSON lines), exit 0."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

argv = sys.argv[1:]
constraints = {argv[i + 1]: Path(argv[i + 1]).read_text(encoding="utf-8")
               for i, a in enumerate(argv[:-1]) if a in ("-c", "--constraint")}
with open(os.environ["COLAB_STANDIN_PIP_RECORD"], "a", encoding="utf-8") as fh:
    fh.write(json.dumps({"argv": argv, "constraints": constraints}) + "\n")
