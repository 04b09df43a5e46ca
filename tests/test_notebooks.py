"""The quickstart notebook, executed end to end by a Jupyter kernel, prints what it claims."""

from __future__ import annotations

import ast
import csv
import re
from pathlib import Path

import nbclient
import nbformat
import pytest

from al_lightning.strategies import available

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "quickstart.ipynb"

#: rounds.csv of the newest run the notebook should find, as ``train.py fit`` writes it.
NEWEST_ROUNDS = [
    {"round": 0, "num_labeled": 20, "test_acc_top1": 0.41234, "test_acc_top5": 0.8, "imbalance_ratio": 4.0,
     "class_entropy": 2.1234, "query_seconds": 0.1},
    {"round": 1, "num_labeled": 120, "test_acc_top1": 0.85, "test_acc_top5": 0.99, "imbalance_ratio": 1.5,
     "class_entropy": 2.29, "query_seconds": 0.2},
]


def write_rounds(folder: Path, rows: list[dict]) -> None:
    folder.mkdir(parents=True)
    with open(folder / "rounds.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


@pytest.fixture(scope="module")
def executed(tmp_path_factory) -> list[str]:
    """Each code cell's printed output, after running the notebook in a folder holding runs.

    ``version_10`` is the newest run with records (numerically after ``version_2``);
    ``version_11`` has not written any yet.
    """
    workdir = tmp_path_factory.mktemp("notebook")
    older = [{**NEWEST_ROUNDS[0], "test_acc_top1": 0.1}]
    write_rounds(workdir / "lightning_logs" / "version_0", older)
    write_rounds(workdir / "lightning_logs" / "version_2", older)
    write_rounds(workdir / "lightning_logs" / "version_10", NEWEST_ROUNDS)
    (workdir / "lightning_logs" / "version_11").mkdir()

    notebook = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(workdir)}})
    client.execute()  # raises CellExecutionError, with the traceback, if any cell fails
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    for cell in code:
        assert cell.execution_count is not None
        assert not [o for o in cell.outputs if o.output_type == "error"]
    return ["".join(o.text for o in cell.outputs if o.output_type == "stream" and o.name == "stdout") for cell in code]


def test_the_notebook_lists_the_registered_strategies(executed):
    assert ast.literal_eval(executed[0].strip()) == available()


def test_the_synthetic_pool_is_long_tailed_and_the_head_beats_chance(executed):
    match = re.fullmatch(r"pool class sizes: (\[[\d, ]+\])  head accuracy: ([\d.]+)\n", executed[1])
    assert match, executed[1]
    sizes = ast.literal_eval(match.group(1))
    assert len(sizes) == 10 and sizes[0] == 4000 and sizes[-1] == 400  # class 9 holds 10× fewer
    assert sizes == sorted(sizes, reverse=True)
    assert 0.3 < float(match.group(2)) <= 1.0  # chance is 0.1 on ten classes


def test_each_strategy_takes_the_budget_and_base_spreads_labels_most_evenly(executed):
    lines = executed[2].splitlines()
    imbalance = {}
    for line in lines:
        match = re.fullmatch(r"\s*(\w+): labels per class (\[[\d, ]+\])  \(imbalance ([\d.]+)\)", line)
        assert match, line
        name, counts = match.group(1), ast.literal_eval(match.group(2))
        assert len(counts) == 10 and sum(counts) == 200, (name, counts)  # budget = 200 distinct points
        imbalance[name] = float(match.group(3))
        assert imbalance[name] == pytest.approx(max(counts) / max(1, min(counts)), abs=0.05)
    assert list(imbalance) == ["random", "margin", "mase", "base"]
    # The notebook's text: BASE is the most even, random the least.
    assert imbalance["base"] == min(imbalance.values())
    assert imbalance["random"] == max(imbalance.values())


def test_the_records_section_prints_the_newest_runs_rounds(executed):
    expected = "".join(
        f"round {r['round']}: {r['num_labeled']:>5} labels  top-1 {r['test_acc_top1']:.3f}  "
        f"imbalance {r['imbalance_ratio']:.2f}  entropy {r['class_entropy']:.3f}\n"
        for r in NEWEST_ROUNDS
    )
    assert executed[3] == expected
    assert expected.startswith("round 0:    20 labels  top-1 0.412  imbalance 4.00  entropy 2.123\n")
