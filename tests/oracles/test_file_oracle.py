"""The file oracle and the checks every answer goes through, on small hand-written cases."""

from __future__ import annotations

import csv
import json
import pickle

import pytest
import torch

from al_lightning.errors import ConfigurationError
from al_lightning.oracles import (
    FileOracle,
    LabelRow,
    LabelsError,
    Query,
    SimulatedOracle,
    match_labels,
    read_labels_csv,
)

CLASSES = ["cat", "dog", "owl"]


def make_query(round: int = 1) -> Query:
    return Query(
        round=round,
        indices=torch.tensor([7, 3, 12]),
        item_ids=["a/x.png", "b.png", "a/c/y.png"],
        predicted=torch.tensor([1, 0, 2]),
        confidence=torch.tensor([0.5, 0.75, 0.4]),
        scores=torch.tensor([0.125, 0.25, 0.5], dtype=torch.float64),
        class_names=CLASSES,
        strategy="margin",
        image_files=[None, None, None],
    )


def rows(*pairs: tuple[str, str]) -> list[LabelRow]:
    return [LabelRow(f"line {i}", item, label) for i, (item, label) in enumerate(pairs, start=2)]


def test_labels_by_path_or_index_and_by_class_name_or_id_come_back_in_selection_order():
    labels = match_labels(make_query(), rows(("a/c/y.png", "dog"), ("7", "2"), ("b.png", "cat")), "f.csv", "fix it")
    assert labels.tolist() == [2, 0, 1]  # 7 -> owl (id 2), 3 = b.png -> cat, 12 = a/c/y.png -> dog


def test_every_problem_is_reported_with_its_line_and_nothing_is_returned():
    answers = rows(
        ("a/x.png", "dog"),
        ("nope.png", "cat"),  # line 3: not an item of the query
        ("a/x.png", "owl"),  # line 4: second row for a/x.png
        ("b.png", "horse"),  # line 5: unknown class
        ("5", "cat"),  # line 6: an index that was not queried
    )  # a/c/y.png has no row
    with pytest.raises(LabelsError) as caught:
        match_labels(make_query(), answers, "labels/round_1.csv", "fix labels/round_1.csv")
    problems = caught.value.problems
    assert len(problems) == 5
    assert problems[0].startswith("line 3: 'nope.png' was not queried in round 1")
    assert problems[1].startswith("line 4: a second row for 'a/x.png' (first on line 2)")
    assert problems[2].startswith("line 5: unknown class 'horse'")
    assert problems[3].startswith("line 6: '5' was not queried")
    assert problems[4] == "no row for 1 queried item(s): a/c/y.png"
    assert "labels/round_1.csv" in str(caught.value) and "fix labels/round_1.csv" in str(caught.value)


def test_a_labels_error_survives_pickling_between_ranks():
    error = LabelsError("f.csv", ["line 2: x"], "fix f.csv")
    again = pickle.loads(pickle.dumps(error))
    assert str(again) == str(error) and again.problems == ["line 2: x"]


def test_labels_csv_takes_a_filled_in_query_file_and_a_byte_order_mark(tmp_path):
    path = tmp_path / "round_1.csv"
    path.write_text("\ufeffindex,path,rank,Label\n7,a/x.png,1,dog\n\n3,b.png,2, cat \n", encoding="utf-8")
    assert read_labels_csv(path) == [LabelRow("line 2", "a/x.png", "dog"), LabelRow("line 4", "b.png", " cat ")]


@pytest.mark.parametrize(
    "text, message",
    [
        ("file,class\nx.png,cat\n", "line 1 must be a header with a 'label' column"),
        ("", "an empty file"),
        ("path,label\na/x.png,\n", "line 2: no label for 'a/x.png'"),
    ],
)
def test_labels_csv_refuses_a_bad_header_or_an_empty_label(tmp_path, text, message):
    path = tmp_path / "round_1.csv"
    path.write_text(text)
    with pytest.raises(ConfigurationError, match=message):
        read_labels_csv(path)


def test_the_file_oracle_writes_the_query_waits_and_then_reads_the_labels(tmp_path):
    oracle, query = FileOracle(tmp_path / "team"), make_query()
    oracle.request(query)
    with open(tmp_path / "team" / "queries" / "round_1.csv") as f:
        written = list(csv.DictReader(f))
    assert [(r["index"], r["path"], r["rank"], r["predicted"], r["confidence"], r["score"]) for r in written] == [
        ("7", "a/x.png", "1", "dog", "0.5", "0.125"),
        ("3", "b.png", "2", "cat", "0.75", "0.25"),
        ("12", "a/c/y.png", "3", "owl", "0.4", "0.5"),
    ]
    tasks = json.loads((tmp_path / "team" / "queries" / "round_1.labelstudio.json").read_text())
    assert len(tasks) == 3
    assert oracle.collect(query) is None
    assert "labels/round_1.csv" in oracle.waiting_message(query)
    (tmp_path / "team" / "labels" / "round_1.csv").write_text("path,label\nb.png,owl\na/x.png,cat\na/c/y.png,cat\n")
    assert oracle.collect(query).tolist() == [0, 2, 0]


def test_the_file_oracle_refuses_two_labels_files_for_one_round(tmp_path):
    oracle, query = FileOracle(tmp_path), make_query()
    oracle.request(query)
    (tmp_path / "labels" / "round_1.csv").write_text("path,label\n")
    (tmp_path / "labels" / "round_1.json").write_text("[]")
    with pytest.raises(ConfigurationError, match="both .* exist"):
        oracle.collect(query)


def test_the_simulated_oracle_answers_with_the_dataset_labels_and_refuses_data_without_every_label():
    query = make_query()
    query.indices = torch.tensor([7, 2, 12])
    assert SimulatedOracle(torch.tensor([0, 1, 2, 1, 0, 1, 2, 1, 0, 0, 0, 0, 2])).collect(query).tolist() == [1, 2, 2]
    with pytest.raises(ConfigurationError, match="but 1 of its 13 training items have none.*--al.oracle=file"):
        SimulatedOracle(torch.tensor([0, 1, 2, -1, 0, 1, 2, 1, 0, 0, 0, 0, 2]))


def test_a_partial_round_of_the_file_oracle_labels_what_is_answered_and_leaves_the_rest(tmp_path):
    query = make_query()
    oracle = FileOracle(tmp_path, min_answered=0.6)  # 0.6 of 3 queries: 2 answers needed
    oracle.request(query)
    assert "At least 2 must be labeled (--al.oracle_args.min_answered=0.6)" in oracle.waiting_message(query)
    labels_file = tmp_path / "labels" / "round_1.csv"
    labels_file.write_text("path,label\nb.png,owl\na/x.png,\n")  # an empty cell: not answered
    with pytest.raises(LabelsError) as caught:
        oracle.collect(query)
    assert caught.value.problems == ["labels for 1 of the 3 queried items; --al.oracle_args.min_answered=0.6 needs 2"]
    labels_file.write_text("path,label\nb.png,owl\na/c/y.png,cat\n")
    assert oracle.collect(query).tolist() == [-1, 2, 0]  # a/x.png unanswered: -1, back to the pool
    # A whole round is still the default: a missing row is refused.
    with pytest.raises(LabelsError, match=r"no row for 1 queried item\(s\): a/x.png"):
        FileOracle(tmp_path).collect(query)


@pytest.mark.parametrize("fraction", [0, -0.5, 1.5])
def test_a_partial_round_fraction_outside_zero_to_one_is_one_line(tmp_path, fraction):
    with pytest.raises(ConfigurationError) as caught:
        FileOracle(tmp_path, min_answered=fraction)
    message = str(caught.value)
    assert "\n" not in message and f"--al.oracle_args.min_answered={fraction} is outside (0, 1]" in message
