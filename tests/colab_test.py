"""The Colab notebooks run top to bottom (shell and magic lines skipped)."""

import json
import os

import pytest

from conftest import REPO

NOTEBOOKS = sorted((REPO / "colab").glob("*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
@pytest.mark.slow
def test_notebook_runs(path, monkeypatch, tmp_path):
  # The training notebook reads these: the tiny config for a few steps.
  monkeypatch.setenv("CLDIS_COLAB_CONFIG", "configs/test.py")
  monkeypatch.setenv("CLDIS_COLAB_STEPS", "4")
  monkeypatch.setenv("CLDIS_COLAB_WORKDIR", str(tmp_path / "workdir"))
  cells = json.loads(path.read_text())["cells"]
  source = "\n".join(
      line for cell in cells if cell["cell_type"] == "code"
      for line in "".join(cell["source"]).splitlines() if not line.lstrip().startswith(("!", "%")))
  monkeypatch.chdir(REPO / "colab")
  exec(compile(source, str(path), "exec"), {"__name__": "__notebook__"})  # pylint: disable=exec-used
  assert os.getcwd() == str(REPO)
