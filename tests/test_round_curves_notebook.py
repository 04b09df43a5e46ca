"""notebooks/round_curves.ipynb, executed end to end on hand-written runs, draws every figure inline."""

from __future__ import annotations

from pathlib import Path

import nbclient
import nbformat
import pytest

from tests.test_report import write_run

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "round_curves.ipynb"


@pytest.fixture(scope="module")
def executed(tmp_path_factory) -> list:
    """The notebook's code cells after running it in a folder whose ``lightning_logs`` holds two strategies × two seeds."""
    workdir = tmp_path_factory.mktemp("round_curves")
    version = 0
    for strategy, start in (("random", 0.5), ("base", 0.55)):
        for seed in (0, 1):
            top1 = {20: start + seed / 50, 40: start + 0.1 + seed / 50, 60: start + 0.15 + seed / 50}
            write_run(workdir / "lightning_logs" / f"version_{version}", strategy, seed, top1,
                      top5={n: a + 0.2 for n, a in top1.items()})
            version += 1
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(workdir)}})
    client.execute()  # raises CellExecutionError, with the traceback, if any cell fails
    return [cell for cell in notebook.cells if cell.cell_type == "code"]


def test_every_code_cell_ran_without_error(executed):
    for cell in executed:
        assert cell.execution_count is not None, cell.source
        assert not [o for o in cell.outputs if o.output_type == "error"], cell.source


def test_every_plotting_cell_draws_a_figure(executed):
    plotting = [cell for cell in executed if "figure" in cell.metadata.get("tags", [])]
    assert len(plotting) == 4  # top-1, imbalance, entropy, sorted class histogram
    for cell in plotting:
        images = [o for o in cell.outputs if o.output_type == "display_data" and "image/png" in o.get("data", {})]
        assert images, cell.source
        assert all(len(o.data["image/png"]) > 5_000 for o in images)  # base64 of a drawn figure, not a blank one


def test_the_runs_are_read_from_their_configs_and_compared_with_random(executed):
    printed = ["".join(o.text for o in cell.outputs if o.output_type == "stream" and o.name == "stdout") for cell in executed]
    assert "all runs: 4 runs" in printed[0]
    assert "random: seeds [0, 1], label counts [20, 40, 60]" in printed[0]
    assert "base: seeds [0, 1], label counts [20, 40, 60]" in printed[0]
    # random's final mean: (0.65 + 0.67) / 2 = 0.66; base's means 0.56, 0.66, 0.71: reached at 40 labels
    assert "random reaches 0.660 top-1 at 60 labels" in printed[-1]
    assert "base: 40 labels (67%)" in printed[-1]
