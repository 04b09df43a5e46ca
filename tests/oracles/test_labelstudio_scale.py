"""The Label Studio oracle at scale, against a real server: images by reference, several annotators, partial rounds."""

from __future__ import annotations

import csv
import functools
import threading
import urllib.request
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from al_lightning.errors import ConfigurationError
from al_lightning.oracles.labelstudio import LabelStudioOracle
from tests.oracles.conftest import LOCAL_FILES_ROOT
from tests.oracles.test_labelstudio import annotate, tasks_of

pytestmark = pytest.mark.slow
label_studio_sdk = pytest.importorskip("label_studio_sdk")


@pytest.fixture
def annotators(client):
    """Three annotator accounts on the server (user ids), made once per server."""
    existing = {u.email: u.id for u in client.users.list()}
    ids = []
    for name in ("ann1", "ann2", "ann3"):
        email = f"{name}@example.com"
        ids.append(existing.get(email) or client.users.create(username=name, email=email, password="pw-" + name * 3).id)
    return ids


@pytest.fixture
def served(labeled_image_query):
    """(url, query): the query's image folder served over HTTP by a plain web server, as a team's own."""
    query = labeled_image_query(round=1, items=("a b.png", "sub/c.png"))
    root = Path(query.image_files[0]).parent
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", query
    server.shutdown()
    server.server_close()


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


def fetch(url, token):
    request = urllib.request.Request(url, headers={"Authorization": f"Token {token}"})
    with urllib.request.urlopen(request, timeout=30) as answer:
        return answer.read()


def test_local_files_storage_is_connected_and_a_round_goes_by_reference(
    labelstudio_server, client, labeled_image_query, monkeypatch, tmp_path
):
    url, token = labelstudio_server
    monkeypatch.setenv("LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT", LOCAL_FILES_ROOT)  # as the server was started
    query = labeled_image_query(round=1, items=("a b.png", "sub/c.png"), predicted=[1, 2])
    oracle = LabelStudioOracle(url, "al local files", api_key=token, images="local_files", label_dir=tmp_path / "team")
    oracle.request(query)

    tasks, project_id = tasks_of(client, "al local files")
    (storage,) = client.import_storage.local.list(project=project_id)  # connected through the SDK
    pool_root = Path(query.image_files[0]).parent
    assert Path(storage.path) == pool_root and storage.use_blob_urls
    reference = tasks["a b.png"]["data"]["image"]
    assert reference == f"/data/local-files/?d={pool_root.relative_to(LOCAL_FILES_ROOT)}/a%20b.png"
    assert fetch(url + reference, token) == Path(query.image_files[0]).read_bytes()  # what the browser is shown
    assert tasks["sub/c.png"]["predictions"][0]["result"][0]["value"] == {"choices": ["bird"]}

    annotate(client, tasks["a b.png"], "dog")
    annotate(client, tasks["sub/c.png"], "cat")
    assert oracle.collect(query).tolist() == [1, 0]
    # A second round reuses the storage.
    oracle.request(labeled_image_query(round=2, items=("d.png",)))
    assert len(client.import_storage.local.list(project=project_id)) == 1


def test_references_that_do_not_resolve_or_storage_elsewhere_are_refused_before_any_task(
    labelstudio_server, client, labeled_image_query, monkeypatch, tmp_path
):
    url, token = labelstudio_server
    query = labeled_image_query(round=1, items=("a.png",))

    monkeypatch.setenv("LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT", LOCAL_FILES_ROOT)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    project = client.projects.create(title="al storage elsewhere", label_config=_config())
    client.import_storage.local.create(project=project.id, path=str(elsewhere), use_blob_urls=True)
    with pytest.raises(ConfigurationError) as caught:
        LabelStudioOracle(url, "al storage elsewhere", api_key=token, images="local_files").request(query)
    message = str(caught.value)
    assert "\n" not in message and f"has local-files storage at {elsewhere}, not at the pool's images" in message

    # A cloud URI that no storage of the project resolves: the server's own resolver is asked.
    with pytest.raises(ConfigurationError) as caught:
        LabelStudioOracle(url, "al no bucket", api_key=token, images="s3://team-bucket/train/{path}").request(query)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("the image of 'a.png' does not resolve: GET ") and "/resolve/?fileuri=" in message
    assert "HTTP 404" in message and "connect a cloud storage for that bucket" in message

    # The pool outside the server's document root.
    monkeypatch.setenv("LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT", str(elsewhere))
    with pytest.raises(ConfigurationError, match=r"are not under LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT="):
        LabelStudioOracle(url, "al outside root", api_key=token, images="local_files").request(query)
    for title in ("al storage elsewhere", "al no bucket", "al outside root"):
        (found,) = [p for p in client.projects.list(title=title) if p.title == title]
        assert list(client.tasks.list(project=found.id)) == []


def test_a_url_template_of_the_teams_web_server_is_checked_and_used(labelstudio_server, client, served):
    url, token = labelstudio_server
    images_url, query = served
    with pytest.raises(ConfigurationError) as caught:
        LabelStudioOracle(url, "al served", api_key=token, images=images_url + "/wrong/{path}").request(query)
    assert str(caught.value).startswith(f"the image of 'a b.png' does not resolve: GET {images_url}/wrong/a%20b.png gave HTTP 404")
    (project,) = [p for p in client.projects.list(title="al served") if p.title == "al served"]
    assert list(client.tasks.list(project=project.id)) == []

    LabelStudioOracle(url, "al served", api_key=token, images=images_url + "/{path}").request(query)
    tasks, _ = tasks_of(client, "al served")
    assert tasks["sub/c.png"]["data"]["image"] == f"{images_url}/sub/c.png"


def test_three_annotators_per_image_decide_by_majority_and_disagreements_stay_pending(
    labelstudio_server, client, labeled_image_query, annotators, tmp_path
):
    url, token = labelstudio_server
    query = labeled_image_query(round=1, items=("a.png", "b.png", "c.png"))
    oracle = LabelStudioOracle(url, "al overlap", api_key=token, annotators=3, label_dir=tmp_path / "team")
    oracle.request(query)
    tasks, project_id = tasks_of(client, "al overlap")
    settings = client.projects.get(id=project_id)
    assert (settings.maximum_annotations, settings.overlap_cohort_percentage) == (3, 100)  # Label Studio's overlap
    one, two, three = annotators
    for who, answer in ((one, "cat"), (two, "cat"), (three, "dog")):
        annotate(client, tasks["a.png"], answer, annotator=who)
    for who, answer in ((one, "cat"), (two, "dog"), (three, "bird")):
        annotate(client, tasks["b.png"], answer, annotator=who)
    for who in (one, two):
        annotate(client, tasks["c.png"], "bird", annotator=who)

    assert oracle.collect(query) is None
    message = oracle.waiting_message(query)
    b = tasks["b.png"]["id"]
    assert "1 of 3 tasks labeled" in message and "each needs 3 annotators; agreement: majority" in message
    assert f"1 disagree: task {b} (cat / dog / bird)" in message
    with open(tmp_path / "team" / "answers" / "round_1.csv") as f:
        record = {row["path"]: row for row in csv.DictReader(f)}
    assert (record["a.png"]["status"], record["a.png"]["label"], record["a.png"]["agreement"]) == ("labeled", "cat", "0.667")
    assert record["a.png"]["answers"] == f"{one}:cat; {two}:cat; {three}:dog"
    assert (record["b.png"]["status"], record["b.png"]["label"]) == ("disagreement", "")
    assert (record["c.png"]["status"], record["c.png"]["answers"]) == ("waiting", f"{one}:bird; {two}:bird")

    annotate(client, tasks["c.png"], "bird", annotator=three)
    annotate(client, tasks["b.png"], "dog", annotator=one)  # a second look: the annotator's latest answer counts
    assert oracle.collect(query).tolist() == [0, 1, 2]
    # Unanimity asks more: a.png (2 of 3) and b.png (2 of 3) are disputed under it.
    strict = LabelStudioOracle(url, "al overlap", api_key=token, agreement="unanimous")
    assert strict.collect(query) is None
    assert "2 disagree" in strict.waiting_message(query)


def test_a_partial_round_goes_on_with_what_is_labeled(labelstudio_server, client, labeled_image_query):
    url, token = labelstudio_server
    query = labeled_image_query(round=1, items=("a.png", "b.png", "c.png", "d.png"))
    oracle = LabelStudioOracle(url, "al partial", api_key=token, min_answered=0.5)
    oracle.request(query)
    tasks, _ = tasks_of(client, "al partial")
    annotate(client, tasks["c.png"], "dog")
    assert oracle.collect(query) is None
    assert "the run goes on once 2 are labeled (--al.oracle_args.min_answered=0.5)" in oracle.waiting_message(query)
    annotate(client, tasks["a.png"], "bird")
    assert oracle.collect(query).tolist() == [2, -1, 1, -1]  # b.png and d.png go back to the pool


def _config() -> str:
    from al_lightning.oracles.labelstudio import labelstudio_label_config

    return labelstudio_label_config(["cat", "dog", "bird"])
