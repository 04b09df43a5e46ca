"""A whole run labeled in Label Studio: the CLI pushes a round by reference, annotators answer part of it,
the same command goes on with what is labeled."""

from __future__ import annotations

import pytest

from tests.conftest import TINY_RUN, log_dirs, read_csv
from tests.oracles.conftest import LOCAL_FILES_ROOT
from tests.standins import PHOTO_RUN, write_colour_photos, write_seed_labels

pytestmark = pytest.mark.slow
label_studio_sdk = pytest.importorskip("label_studio_sdk")


def test_the_cli_sends_a_round_to_label_studio_and_continues_with_the_annotations(cli, labelstudio_server, tmp_path):
    url, token = labelstudio_server
    truth = write_colour_photos(tmp_path)
    write_seed_labels(tmp_path, truth)
    command = [
        "fit", *TINY_RUN, *PHOTO_RUN, "--al.oracle=labelstudio", f"--al.oracle_args.url={url}",
        "--al.oracle_args.project=photos by colour", "--al.label_dir=team",
        "--al.oracle_args.images=local_files", "--al.oracle_args.min_answered=0.6",
    ]  # fmt: skip
    env = {"LABEL_STUDIO_API_KEY": token, "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT": LOCAL_FILES_ROOT}

    first = cli(command, cwd=tmp_path, env=env)
    assert first.returncode == 0, first.stderr[-3000:]
    client = label_studio_sdk.LabelStudio(base_url=url, api_key=token)
    (project,) = [p for p in client.projects.list(title="photos by colour") if p.title == "photos by colour"]
    tasks = [task.dict() for task in client.tasks.list(project=project.id)]
    (run,) = log_dirs(tmp_path)
    queried = read_csv(run / "queries" / "round_1.csv")  # the run's own record of the query
    assert {t["predictions"][0]["model_version"] for t in tasks} == {f"{run.relative_to(tmp_path)} round 1"}
    assert sorted(t["data"]["path"] for t in tasks) == sorted(r["path"] for r in queried)
    assert all(t["data"]["image"].startswith("/data/local-files/?d=") for t in tasks)  # by reference

    # Nothing annotated yet: the same command waits, and says how far the annotators are.
    waiting = cli(command, cwd=tmp_path, env=env)
    assert waiting.returncode == 0 and "0 of 6" in waiting.stderr, waiting.stderr[-3000:]
    assert "the run goes on once 4 are labeled" in waiting.stderr

    answered = sorted(tasks, key=lambda t: t["data"]["path"])[:4]  # 4 of 6: enough for min_answered=0.6
    for task in answered:  # what the labeling UI sends when an annotator picks the photo's colour
        result = [{"from_name": "label", "to_name": "image", "type": "choices", "value": {"choices": [truth[task["data"]["path"]]]}}]
        client.annotations.create(id=task["id"], result=result, was_cancelled=False, lead_time=2.0)
    last = cli(command, cwd=tmp_path, env=env)
    assert last.returncode == 0, last.stderr[-3000:]

    assert log_dirs(tmp_path) == [run]
    pool = read_csv(run / "pool.csv")
    assert sorted(r["path"] for r in pool if r["round"] == "1") == [t["data"]["path"] for t in answered]
    assert all(r["label"] == truth[r["path"]] for r in pool)
    # The 2 unanswered photos went back to the unlabeled pool; the records say 4 of 6 were answered.
    rounds = read_csv(run / "rounds.csv")
    assert [(r["round"], r["num_asked"]) for r in rounds] == [("0", ""), ("1", "6")] and rounds[1]["num_queried"] == "4"
    answers = read_csv(tmp_path / "team" / "answers" / "round_1.csv")
    assert sorted(r["status"] for r in answers) == ["labeled"] * 4 + ["waiting"] * 2
