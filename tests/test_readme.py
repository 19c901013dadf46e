"""The README's set-up commands are what CI runs."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_ci_runs_the_readme_test_command():
    blocks = re.findall(r"```bash\n(.*?)\n```", (ROOT / "README.md").read_text(), flags=re.S)
    main_job, test_command = blocks[0], blocks[1]
    assert main_job.endswith("dec2vec demo") and "torch==2.13.0" in main_job
    assert test_command in (ROOT / ".ci" / "run").read_text().splitlines()
