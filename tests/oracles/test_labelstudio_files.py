"""Label Studio's task and export files, without a server: what goes out, what comes back."""

from __future__ import annotations

import base64
import json
import xml.etree.ElementTree as ET

import pytest
from PIL import Image

from al_lightning.errors import ConfigurationError
from al_lightning.oracles.base import LabelRow, LabelsError, match_labels
from al_lightning.oracles.labelstudio import (
    NO_CHOICE,
    ItemAnswers,
    answers_csv,
    decide_label,
    labelstudio_export_rows,
    labelstudio_label_config,
    labelstudio_task_row,
    labelstudio_tasks,
)


def annotation(choice, id=1, updated_at="2026-01-01T10:00:00Z", cancelled=False):
    """One annotation as Label Studio exports it."""
    result = [] if choice is None else [
        {"id": "r1", "from_name": "label", "to_name": "image", "type": "choices", "origin": "manual", "value": {"choices": [choice]}}
    ]  # fmt: skip
    return {
        "id": id, "completed_by": 1, "result": result, "was_cancelled": cancelled, "ground_truth": False,
        "created_at": updated_at, "updated_at": updated_at, "lead_time": 2.5, "task": 1, "project": 1,
    }  # fmt: skip


def test_tasks_carry_the_image_the_item_and_a_scored_prediction_in_selection_order(labeled_image_query):
    query = labeled_image_query(items=("a.png", "sub/b.png", "c.png"), predicted=[1, 0, 2], scores=[0.1, 0.2, 0.7])
    tasks = labelstudio_tasks(query)
    assert [t["data"]["path"] for t in tasks] == ["a.png", "sub/b.png", "c.png"]
    assert [t["data"]["rank"] for t in tasks] == [1, 2, 3]
    assert [t["data"]["index"] for t in tasks] == [10, 11, 12]
    assert {t["data"]["round"] for t in tasks} == {1}
    assert [t["data"]["score"] for t in tasks] == pytest.approx([0.1, 0.2, 0.7])
    assert tasks[1]["meta"] == {"index": 11, "path": "sub/b.png", "round": 1}  # what a poll reads instead of data
    prediction = tasks[0]["predictions"][0]
    assert prediction["model_version"] == "al_lightning round 1"
    query.run = "lightning_logs/version_3"
    assert labelstudio_tasks(query)[0]["predictions"][0]["model_version"] == "lightning_logs/version_3 round 1"
    assert prediction["score"] == pytest.approx(0.1)
    assert prediction["result"] == [{"from_name": "label", "to_name": "image", "type": "choices", "value": {"choices": ["dog"]}}]
    assert [t["predictions"][0]["result"][0]["value"]["choices"] for t in tasks] == [["dog"], ["cat"], ["bird"]]
    # The image travels inline: the PNG file's own bytes.
    header, payload = tasks[1]["data"]["image"].split(",", 1)
    assert header == "data:image/png;base64"
    assert base64.b64decode(payload) == open(query.image_files[1], "rb").read()
    json.dumps(tasks)  # plain JSON, as written to queries/round_K.labelstudio.json


def test_without_strategy_scores_the_score_is_the_models_confidence(labeled_image_query):
    query = labeled_image_query(scores=None)
    assert [t["predictions"][0]["score"] for t in labelstudio_tasks(query)] == pytest.approx([0.9, 0.7, 0.5])


def test_items_without_an_image_file_or_with_an_image_url_template(labeled_image_query):
    query = labeled_image_query()
    query.image_files = [query.image_files[0], None]  # the last item has none at all
    assert [t["data"]["image"][:15] for t in labelstudio_tasks(query)] == ["data:image/png;", "", ""]
    urls = [t["data"]["image"] for t in labelstudio_tasks(query, image_url="s3://bucket/train/{path}?i={index}")]
    assert urls == ["s3://bucket/train/a.png?i=10", "s3://bucket/train/b.png?i=11", "s3://bucket/train/c.png?i=12"]
    # In a web address the item id is percent-encoded (a browser asks for it so); a storage key is kept.
    query = labeled_image_query(items=("dir/a b#1.png",))
    assert labelstudio_tasks(query, image_url="https://img.example/{path}")[0]["data"]["image"] == "https://img.example/dir/a%20b%231.png"
    assert labelstudio_tasks(query, image_url="gs://b/{path}")[0]["data"]["image"] == "gs://b/dir/a b#1.png"


def test_an_unreadable_image_gets_no_prediction(labeled_image_query):
    query = labeled_image_query(predicted=[0, -1, 2])  # -1: the query skipped its unreadable image
    assert [len(t["predictions"]) for t in labelstudio_tasks(query)] == [1, 0, 1]


@pytest.mark.parametrize(
    "answers, required, policy, expected",
    [
        (["cat"], 1, "majority", ("cat", "labeled")),
        (["cat"], 2, "majority", (None, "waiting")),
        ([], 1, "majority", (None, "waiting")),
        (["cat", "cat", "dog"], 3, "majority", ("cat", "labeled")),
        (["cat", "dog"], 2, "majority", (None, "disagreement")),  # a tie is no majority
        (["cat", "dog", "owl"], 3, "majority", (None, "disagreement")),
        (["cat", "cat", "dog"], 3, "unanimous", (None, "disagreement")),
        (["dog", "dog", "dog"], 3, "unanimous", ("dog", "labeled")),
        (["dog", "dog", "cat", "cat", "cat"], 3, "majority", ("cat", "labeled")),  # more answers than asked for count too
    ],
)
def test_several_annotators_answers_make_one_label_by_the_policy(answers, required, policy, expected):
    assert decide_label(answers, required, policy) == expected


def test_the_answers_record_lists_every_task_with_its_agreement():
    items = [
        ItemAnswers(task=9, index=12, path="b.png", answers=(("3", "cat"), ("4", "dog")), label=None, status="disagreement"),
        ItemAnswers(task=8, index=10, path="a.png", answers=(("3", "cat"), ("4", "cat"), ("5", "dog")), label="cat", status="labeled"),
        ItemAnswers(task=7, index=11, path="c.png", answers=(), label=None, status="waiting"),
    ]
    assert answers_csv(items).splitlines() == [
        "index,path,task,status,label,agreement,answers",
        "11,c.png,7,waiting,,,",
        "10,a.png,8,labeled,cat,0.667,3:cat; 4:cat; 5:dog",
        "12,b.png,9,disagreement,,0.5,3:cat; 4:dog",
    ]


@pytest.mark.parametrize(
    "options, message",
    [
        ({"min_answered": 0.0}, "--al.oracle_args.min_answered=0.0 is outside (0, 1]"),
        ({"min_answered": 2}, "--al.oracle_args.min_answered=2 is outside (0, 1]"),
        ({"images": "s3://bucket/train"}, "--al.oracle_args.images='s3://bucket/train' is not inline, local_files, or a template"),
        ({"annotators": 0}, "--al.oracle_args.annotators=0: a task needs at least 1 annotator"),
        ({"agreement": "latest"}, "--al.oracle_args.agreement='latest' is not one of majority, unanimous"),
    ],
)
def test_bad_options_of_the_oracle_are_one_line_before_the_server_is_asked(options, message):
    pytest.importorskip("label_studio_sdk")
    from al_lightning.oracles.labelstudio import LabelStudioOracle

    with pytest.raises(ConfigurationError) as caught:  # nothing listens there: the options are checked first
        LabelStudioOracle("http://127.0.0.1:9", "p", api_key="x", **options)
    assert "\n" not in str(caught.value) and message in str(caught.value)


def test_an_image_browsers_cannot_show_is_inlined_as_png_and_a_missing_one_is_named(labeled_image_query, tmp_path):
    query = labeled_image_query(items=("a.png",))
    query.image_files = [str(tmp_path / "scan.tiff")]
    Image.new("L", (4, 4), 128).save(query.image_files[0])
    assert labelstudio_tasks(query)[0]["data"]["image"].startswith("data:image/png;base64,")
    query.image_files = [str(tmp_path / "gone.png")]
    with pytest.raises(ConfigurationError, match="cannot read the image of 'a.png'"):
        labelstudio_tasks(query)


def test_the_label_config_offers_each_class_once_even_with_awkward_names():
    names = ["cat", 'say "hi"', "R&D <lab>"]
    root = ET.fromstring(labelstudio_label_config(names))
    assert root.find("Image").attrib == {"name": "image", "value": "$image"}
    choices = root.find("Choices")
    assert (choices.get("name"), choices.get("toName"), choices.get("choice")) == ("label", "image", "single")
    assert [c.get("value") for c in choices.iter("Choice")] == names
    many = ET.fromstring(labelstudio_label_config([f"class {i}" for i in range(100)]))
    assert many.find("Choices").get("layout") == "select"


def test_a_task_row_takes_the_latest_finished_annotation():
    task = {"id": 7, "data": {"path": "a.png", "index": 10}, "annotations": [
        annotation("cat", id=1, updated_at="2026-01-01T10:00:00Z"),
        annotation("dog", id=2, updated_at="2026-01-02T10:00:00Z"),
        annotation(None, id=3, updated_at="2026-01-03T10:00:00Z", cancelled=True),  # a later skip does not count
    ]}  # fmt: skip
    assert labelstudio_task_row(task) == LabelRow(line="task 7", item="a.png", label="dog")
    assert labelstudio_task_row({"id": 8, "data": {"index": 12}, "annotations": []}) is None
    skipped = {"id": 9, "data": {"index": 12}, "annotations": [annotation(None, cancelled=True)]}
    assert labelstudio_task_row(skipped) is None
    empty = {"id": 9, "data": {"index": 12}, "annotations": [annotation(None)]}
    assert labelstudio_task_row(empty) == LabelRow(line="task 9", item="12", label=NO_CHOICE)
    other_tag = {"id": 9, "data": {"index": 12}, "annotations": [annotation("cat")]}
    assert labelstudio_task_row(other_tag, from_name="animal").label == NO_CHOICE


def test_an_export_gives_this_rounds_rows_and_match_labels_checks_them(labeled_image_query, tmp_path):
    query = labeled_image_query(round=2, items=("a.png", "b.png", "c.png"))
    tasks = labelstudio_tasks(query)
    exported = [{"id": 40 + i, **task, "predictions": [i]} for i, task in enumerate(tasks)]  # exports list prediction ids
    exported[0]["annotations"] = [annotation("dog")]
    exported[1]["annotations"] = [annotation("bird", updated_at="2026-01-01T09:00:00Z"), annotation("cat", id=5)]
    exported[2]["annotations"] = [annotation("bird")]
    earlier_round = {"id": 3, "data": {"path": "old.png", "index": 1, "round": 1}, "annotations": [annotation("cat")]}
    path = tmp_path / "round_2.json"
    path.write_text(json.dumps([earlier_round, *exported]))

    rows = labelstudio_export_rows(path, round=2)
    assert rows == [LabelRow("task 40", "a.png", "dog"), LabelRow("task 41", "b.png", "cat"), LabelRow("task 42", "c.png", "bird")]
    labels = match_labels(query, rows, source=str(path), fix="fix it")
    assert labels.tolist() == [1, 0, 2]  # dog, cat, bird

    # Without the round, the earlier round's task is refused by name.
    with pytest.raises(LabelsError, match="task 3: 'old.png' was not queried in round 2"):
        match_labels(query, labelstudio_export_rows(path), source=str(path), fix="fix it")


def test_an_export_with_a_task_left_unannotated_or_a_wrong_class_names_them(labeled_image_query, tmp_path):
    query = labeled_image_query(items=("a.png", "b.png", "c.png"))
    exported = [{"id": 40 + i, **task} for i, task in enumerate(labelstudio_tasks(query))]
    exported[0]["annotations"] = [annotation("dog")]
    exported[1]["annotations"] = [annotation("fish")]
    exported[2]["annotations"] = []
    path = tmp_path / "export.json"
    path.write_text(json.dumps(exported))
    with pytest.raises(LabelsError) as caught:
        match_labels(query, labelstudio_export_rows(path), source=str(path), fix="fix it")
    assert caught.value.problems == [
        "task 41: unknown class 'fish' for 'b.png'; classes: cat, dog, bird",
        "no row for 1 queried item(s): c.png",
    ]


@pytest.mark.parametrize(
    "text, message",
    [
        ("not json", "cannot read it as a Label Studio JSON export"),
        ('{"data": {}}', "not a Label Studio JSON export"),
        ('[{"image": "x.png", "label": "cat"}]', "JSON-MIN"),  # the other export format
    ],
)
def test_what_is_not_a_label_studio_json_export_is_refused(tmp_path, text, message):
    path = tmp_path / "round_1.json"
    path.write_text(text)
    with pytest.raises(ConfigurationError, match=message):
        labelstudio_export_rows(path)


def test_the_module_imports_without_the_sdk_and_the_oracle_says_how_to_install_it(monkeypatch):
    import sys

    from al_lightning.oracles.labelstudio import LabelStudioOracle

    monkeypatch.setitem(sys.modules, "label_studio_sdk", None)  # import fails as if not installed
    with pytest.raises(ConfigurationError, match=r"pip install 'al_lightning\[labelstudio\]'"):
        LabelStudioOracle("http://localhost:8080", "p", api_key="x")


def test_the_oracle_names_the_variable_when_no_token_is_given(monkeypatch):
    pytest.importorskip("label_studio_sdk")
    from al_lightning.oracles.labelstudio import LabelStudioOracle

    monkeypatch.delenv("LABEL_STUDIO_API_KEY", raising=False)
    with pytest.raises(ConfigurationError, match="LABEL_STUDIO_API_KEY") as caught:
        LabelStudioOracle("http://localhost:8080", "p")
    assert "\n" not in str(caught.value)
