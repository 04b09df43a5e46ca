"""The Label Studio oracle against a real server (``labelstudio_server``): tasks out, annotations back."""

from __future__ import annotations

import json
import socket

import pytest

from al_lightning.errors import ConfigurationError
from al_lightning.oracles import labelstudio as ls
from al_lightning.oracles.base import LabelsError
from al_lightning.oracles.labelstudio import LabelStudioOracle, labelstudio_export_rows

pytestmark = pytest.mark.slow
label_studio_sdk = pytest.importorskip("label_studio_sdk")


def tasks_of(client, title):
    """The project's tasks (as dicts) by item path, and the project's id."""
    (project,) = [p for p in client.projects.list(title=title) if p.title == title]
    return by_path(client, project.id), project.id


def by_path(client, project_id):
    return {t["data"]["path"]: t for t in (task.dict() for task in client.tasks.list(project=project_id))}


def annotate(client, task, choice, from_name="label", to_name="image", annotator=None):
    """What the labeling UI sends when an annotator (a user id; default: the token's user) picks ``choice`` and submits."""
    result = [{"from_name": from_name, "to_name": to_name, "type": "choices", "value": {"choices": [choice]}}]
    by = {} if annotator is None else {"completed_by": annotator}
    client.annotations.create(id=task["id"], result=result, was_cancelled=False, lead_time=1.5, **by)


def test_a_round_goes_out_as_tasks_and_comes_back_as_labels(labelstudio_server, client, labeled_image_query, monkeypatch):
    url, token = labelstudio_server
    monkeypatch.setattr(ls, "_PAGE_SIZE", 2)  # read the tasks over several pages
    oracle = LabelStudioOracle(url, "al round trip", api_key=token)
    query = labeled_image_query(round=1, items=("a.png", "b.png", "c.png"), predicted=[0, 1, 1], scores=[0.05, 0.3, 0.6])

    oracle.request(query)
    tasks, project_id = tasks_of(client, "al round trip")
    assert sorted(tasks) == ["a.png", "b.png", "c.png"]
    config = client.projects.get(id=project_id).label_config
    assert '<Choice value="cat"/>' in config and '<Choice value="bird"/>' in config
    a = tasks["a.png"]
    assert {k: a["data"][k] for k in ("index", "path", "round", "rank")} == {"index": 10, "path": "a.png", "round": 1, "rank": 1}
    assert a["data"]["score"] == pytest.approx(0.05)
    assert a["data"]["image"].startswith("data:image/png;base64,")
    (prediction,) = a["predictions"]
    assert prediction["model_version"] == "al_lightning round 1"
    assert prediction["score"] == pytest.approx(0.05)
    assert prediction["result"][0]["value"] == {"choices": ["cat"]}
    assert tasks["b.png"]["predictions"][0]["result"][0]["value"] == {"choices": ["dog"]}

    # A replayed round asks again: nothing new, even from a fresh oracle (a new process).
    oracle.request(query)
    LabelStudioOracle(url, "al round trip", api_key=token).request(query)
    assert len(tasks_of(client, "al round trip")[0]) == 3

    assert oracle.collect(query) is None
    assert f"0 of 3 tasks labeled in Label Studio project 'al round trip' (id {project_id}) at {url}" in oracle.waiting_message(query)

    annotate(client, tasks["a.png"], "dog")
    annotate(client, tasks["b.png"], "dog")
    client.annotations.create(id=tasks["c.png"]["id"], result=[], was_cancelled=True)  # skipped
    assert oracle.collect(query) is None
    message = oracle.waiting_message(query)
    assert "2 of 3 tasks labeled" in message and "1 skipped" in message

    # A poll reads ids, items and annotations: the inlined images stay on the server.
    assert all("data" not in task and task["meta"]["path"] for task in oracle._round_tasks(oracle._project, 1))

    annotate(client, tasks["c.png"], "bird")
    annotate(client, tasks["a.png"], "cat")  # a second thought of the same annotator: their latest annotation counts
    labels = oracle.collect(query)
    assert labels.tolist() == [0, 1, 2]  # a.png: cat, b.png: dog, c.png: bird

    # The next round joins the same project; its tasks are counted apart from round 1's.
    round_2 = labeled_image_query(round=2, items=("d.png", "e.png"))
    oracle.request(round_2)
    assert len(tasks_of(client, "al round trip")[0]) == 5
    assert oracle.collect(round_2) is None
    assert "0 of 2 tasks labeled" in oracle.waiting_message(round_2)
    assert oracle.collect(query).tolist() == [0, 1, 2]


def test_an_export_downloaded_from_the_server_gives_the_same_labels(labelstudio_server, client, labeled_image_query, tmp_path):
    url, token = labelstudio_server
    query = labeled_image_query(round=1, items=("a.png", "b.png"))
    LabelStudioOracle(url, "al export", api_key=token).request(query)
    tasks, project_id = tasks_of(client, "al export")
    annotate(client, tasks["a.png"], "bird")
    annotate(client, tasks["b.png"], "cat")
    export = tmp_path / "labels" / "round_1.json"
    export.parent.mkdir()
    export.write_bytes(client.projects.exports.as_binary(project_id, export_type="JSON"))
    rows = labelstudio_export_rows(export, round=1)
    assert sorted((r.item, r.label) for r in rows) == [("a.png", "bird"), ("b.png", "cat")]
    assert {r.line for r in rows} == {f"task {tasks['a.png']['id']}", f"task {tasks['b.png']['id']}"}


def test_a_wrong_class_or_a_deleted_task_is_refused_naming_the_task(labelstudio_server, client, labeled_image_query):
    url, token = labelstudio_server
    oracle = LabelStudioOracle(url, "al wrong answers", api_key=token)
    query = labeled_image_query(round=1, items=("a.png", "b.png", "c.png"))
    oracle.request(query)
    tasks, _ = tasks_of(client, "al wrong answers")
    annotate(client, tasks["a.png"], "cat")
    annotate(client, tasks["b.png"], "fish")  # not one of the query's classes (an edited labeling config)
    client.tasks.delete(id=str(tasks["c.png"]["id"]))
    with pytest.raises(LabelsError) as caught:
        oracle.collect(query)
    assert caught.value.problems == [
        f"task {tasks['b.png']['id']}: unknown class 'fish' for 'b.png'; classes: cat, dog, bird",
        "no row for 1 queried item(s): c.png",
    ]
    assert "fix the annotations in Label Studio and run the same command again" in str(caught.value)


def test_an_existing_project_by_id_is_used_with_its_own_tag_names(labelstudio_server, client, labeled_image_query):
    url, token = labelstudio_server
    config = (
        '<View><Header value="Which animal?"/><Image name="img" value="$picture"/>'
        '<Choices name="animal" toName="img"><Choice value="Cat" alias="cat"/><Choice value="dog"/>'
        '<Choice value="bird"/><Choice value="horse"/></Choices></View>'
    )
    project = client.projects.create(title="made by hand", label_config=config)
    oracle = LabelStudioOracle(url, str(project.id), api_key=token)
    query = labeled_image_query(round=1, items=("a.png", "b.png"), predicted=[0, 2])
    oracle.request(query)
    tasks = by_path(client, project.id)
    assert tasks["a.png"]["data"]["picture"].startswith("data:image/png;base64,")
    assert tasks["b.png"]["predictions"][0]["result"][0]["from_name"] == "animal"
    annotate(client, tasks["a.png"], "dog", from_name="animal", to_name="img")
    annotate(client, tasks["b.png"], "cat", from_name="animal", to_name="img")  # the alias is what is stored
    assert oracle.collect(query).tolist() == [1, 0]


def test_a_project_without_the_classes_or_a_missing_id_is_refused(labelstudio_server, client, labeled_image_query):
    url, token = labelstudio_server
    config = '<View><Image name="image" value="$image"/><Choices name="label" toName="image"><Choice value="cat"/></Choices></View>'
    project = client.projects.create(title="too few classes", label_config=config)
    with pytest.raises(ConfigurationError, match=r"has no choice for 2 of the 3 classes: dog, bird"):
        LabelStudioOracle(url, "too few classes", api_key=token).request(labeled_image_query())
    assert list(client.tasks.list(project=project.id)) == []
    with pytest.raises(ConfigurationError, match=f"no project with id 99999 in Label Studio at {url}"):
        LabelStudioOracle(url, "99999", api_key=token).request(labeled_image_query())


def test_a_refused_token_or_an_unreachable_server_is_one_line_naming_the_url(labelstudio_server, labeled_image_query):
    url, _ = labelstudio_server
    with pytest.raises(ConfigurationError) as caught:
        LabelStudioOracle(url, "al never", api_key="not-a-token")
    message = str(caught.value)
    assert "\n" not in message and url in message and "LABEL_STUDIO_API_KEY" in message and "refused" in message

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{s.getsockname()[1]}"
    with pytest.raises(ConfigurationError) as caught:
        LabelStudioOracle(closed, "al never", api_key="any")
    message = str(caught.value)
    assert "\n" not in message and message.startswith(f"cannot reach Label Studio at {closed}")


def test_tasks_written_for_a_manual_import_are_accepted_by_the_server(labelstudio_server, client, labeled_image_query, tmp_path):
    """The file oracle's queries/round_K.labelstudio.json, imported by hand, is what the live oracle imports."""
    url, token = labelstudio_server
    query = labeled_image_query(round=3, items=("a.png",))
    project = client.projects.create(title="imported by hand", label_config=ls.labelstudio_label_config(query.class_names))
    task_file = tmp_path / "round_3.labelstudio.json"
    task_file.write_text(json.dumps(ls.labelstudio_tasks(query)))
    client.projects.import_tasks(id=project.id, request=json.loads(task_file.read_text()))
    (task,) = by_path(client, project.id).values()
    annotate(client, task, "dog")
    oracle = LabelStudioOracle(url, "imported by hand", api_key=token)
    oracle.request(query)  # finds the round's task there: nothing imported twice
    assert len(list(client.tasks.list(project=project.id))) == 1
    assert oracle.collect(query).tolist() == [1]
