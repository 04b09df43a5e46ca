"""``bald`` and ``power_margin`` through the real CLI: one query of the tiny digits run, its files and labels."""

from __future__ import annotations

import pytest

from tests.conftest import TINY_RUN, log_dirs, read_csv

pytestmark = pytest.mark.slow


@pytest.mark.parametrize(
    "strategy",
    [["--al.strategy=bald", "--al.strategy_args={samples: 4}"], ["--al.strategy=power_margin"]],
    ids=["bald", "power_margin"],
)
def test_one_round_queries_the_budget(cli, tmp_path, strategy):
    result = cli(["fit", *TINY_RUN, "--al.rounds=1", "--al.max_epochs=1", *strategy], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    (run,) = log_dirs(tmp_path)
    pool = read_csv(run / "pool.csv")
    initial = {r["index"] for r in pool if r["round"] == "0"}
    queried = read_csv(run / "queries" / "round_1.csv")
    assert [r["rank"] for r in queried] == [str(k) for k in range(1, 21)]
    assert len({r["index"] for r in queried}) == 20 and not {r["index"] for r in queried} & initial
    assert {r["index"] for r in pool if r["round"] == "1"} == {r["index"] for r in queried}
    scores = [float(r["score"]) for r in queried]
    assert scores == sorted(scores)  # lower asked first: −MI, or −(β·log(1 − margin) + Gumbel)
    assert [r["num_labeled"] for r in read_csv(run / "rounds.csv")] == ["20", "40"]
