"""A round of 10,000 images through Label Studio, inline and by reference (issue 22, item 6).

    python benchmarks/labelstudio_scale.py                      # 10,000 images, a server of its own
    python benchmarks/labelstudio_scale.py --images 500         # a quick look
    python benchmarks/labelstudio_scale.py --url http://localhost:8080 --token TOKEN --root DIR

For each way of sending images (``inline``: base64 in the task; ``local_files``: Label Studio's
local-files storage, connected by the oracle), one round of N queried images goes through the
oracle as a run would use it:

* ``push``: :meth:`LabelStudioOracle.request` (the first image's check, the tasks' encoding and
  import, in 32 MB requests), and the server database's growth (its SQLite file);
* ``poll``: :meth:`LabelStudioOracle.collect` with nothing annotated (what every rerun of a
  waiting run asks), and the bytes it downloads, against the bytes of the same round's tasks
  listed with their data (how polls read before this issue);
* ``collect``: once every task is annotated (the Data Manager's "predictions to annotations"
  action, server-side), :meth:`LabelStudioOracle.collect` returning the N labels.

Then the file oracle's validation of an N-row labels file (``FileOracle.collect``).

The images: N JPEGs of 500 x 375 (a colour gradient with pixel noise, ~100 KB each, as the
issue's measurement of 1,000 photos), written once under ``--root`` (default: a temporary
folder, removed at the end). Without ``--url`` the script starts ``label-studio`` (from
``LABEL_STUDIO_BIN``, ``.labelstudio-venv`` or PATH) with its data in a temporary folder and
local-files serving for ``--root``; with ``--url`` that server must serve ``--root`` as local files.
Results: ``benchmarks/results/labelstudio_scale.md`` (``--out``).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from al_lightning.oracles import FileOracle, Query  # noqa: E402
from al_lightning.oracles.labelstudio import LabelStudioOracle  # noqa: E402
from tests.labelstudio_server import LabelStudioServer, server_executable  # noqa: E402

CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def write_images(root: Path, n: int) -> list[str]:
    """``n`` 500x375 JPEGs (~100 KB) under ``root/pool``, as item ids ``cXXX/img_XXXXX.jpg``; existing ones are kept."""
    y, x = np.mgrid[0:375, 0:500]
    base = np.stack([x * 255 / 500, y * 255 / 375, (x + y) * 127 / 875], -1)
    rng = np.random.default_rng(0)
    items = []
    for i in range(n):
        item = f"c{i % 100:03d}/img_{i:05d}.jpg"
        file = root / "pool" / item
        if not file.exists():
            file.parent.mkdir(parents=True, exist_ok=True)
            noisy = np.clip(np.roll(base, i, axis=1) + rng.normal(0, 24, base.shape), 0, 255).astype(np.uint8)
            Image.fromarray(noisy).save(file, "JPEG", quality=90)
        items.append(item)
    return items


def make_query(root: Path, items: list[str]) -> Query:
    n = len(items)
    predicted = torch.arange(n) % len(CLASSES)
    return Query(
        round=1,
        indices=torch.arange(n),
        item_ids=items,
        predicted=predicted,
        confidence=torch.full((n,), 0.5),
        scores=torch.linspace(0, 1, n, dtype=torch.float64),
        class_names=CLASSES,
        strategy="margin",
        image_files=[str(root / "pool" / item) for item in items],
        run="benchmark",
    )


def database_bytes(path: Path | None) -> int | None:
    """The SQLite database with its write-ahead log, where the script knows where it is."""
    if path is None:
        return None
    return sum(p.stat().st_size for p in path.parent.glob(path.name + "*"))


def listing(url: str, token: str, project: int, include: str | None) -> tuple[int, float]:
    """(bytes, seconds) of the round's task listing, 100 tasks a page, with the poll's fields or (``None``) everything."""
    import httpx

    params = {"project": project, "page_size": 100, "fields": "all"}
    if include:
        params.update(include=include, expand="annotations")
    total, page, started = 0, 1, time.perf_counter()
    with httpx.Client(headers={"Authorization": f"Token {token}"}, timeout=600) as client:
        while True:
            answer = client.get(f"{url}/api/tasks/", params={**params, "page": page})
            total += len(answer.content)
            if page * 100 >= answer.json()["total"]:
                return total, time.perf_counter() - started
            page += 1


def annotate_all(url: str, token: str, project: int) -> float:
    """Every task annotated with its prediction (the Data Manager's action), seconds."""
    import httpx

    started = time.perf_counter()
    answer = httpx.post(
        f"{url}/api/dm/actions", params={"id": "predictions_to_annotations", "project": project},
        json={"selectedItems": {"all": True, "excluded": []}}, headers={"Authorization": f"Token {token}"}, timeout=3600,
    )  # fmt: skip
    answer.raise_for_status()
    return time.perf_counter() - started


def one_mode(mode: str, url: str, token: str, query: Query, database: Path | None, label_dir: Path) -> dict:
    oracle = LabelStudioOracle(url, f"bench {mode} {secrets.token_hex(3)}", api_key=token, images=mode, label_dir=label_dir, timeout=3600)
    before = database_bytes(database)
    started = time.perf_counter()
    oracle.request(query)
    push = time.perf_counter() - started
    grown = None if before is None else database_bytes(database) - before
    project = oracle._project.id
    started = time.perf_counter()
    assert oracle.collect(query) is None
    poll = time.perf_counter() - started
    poll_bytes, _ = listing(url, token, project, "id,meta,annotations")
    with_data_bytes, with_data_seconds = listing(url, token, project, None)
    annotate = annotate_all(url, token, project)
    started = time.perf_counter()
    labels = oracle.collect(query)
    collect = time.perf_counter() - started
    assert labels is not None and torch.equal(labels, query.predicted), "collected labels differ from the annotations"
    row = {
        "mode": mode, "images": len(query), "push_s": push, "db_growth_mb": None if grown is None else grown / 1e6,
        "poll_s": poll, "poll_mb": poll_bytes / 1e6, "with_data_s": with_data_seconds, "with_data_mb": with_data_bytes / 1e6,
        "annotate_all_s": annotate, "collect_s": collect,
    }  # fmt: skip
    print(json.dumps(row), flush=True)
    return row


def file_oracle_row(root: Path, query: Query) -> dict:
    label_dir = root / "file_oracle"
    oracle = FileOracle(label_dir)
    oracle.request(query)
    lines = ["path,label", *(f"{item},{CLASSES[int(c)]}" for item, c in zip(query.item_ids, query.predicted))]
    (label_dir / "labels" / "round_1.csv").write_text("\n".join(lines) + "\n")
    started = time.perf_counter()
    labels = oracle.collect(query)
    seconds = time.perf_counter() - started
    assert torch.equal(labels, query.predicted)
    row = {"mode": "file oracle", "images": len(query), "collect_s": seconds}
    print(json.dumps(row), flush=True)
    return row


def markdown(rows: list[dict], args: argparse.Namespace) -> str:
    def number(value, digits=1):
        return "" if value is None else f"{value:,.{digits}f}"

    lines = [
        f"# A round of {args.images:,} images through Label Studio",
        "",
        f"`python benchmarks/labelstudio_scale.py --images {args.images}`; JPEGs of 500x375, "
        f"{args.image_mb:.1f} MB in all. Seconds are wall-clock.",
        "",
        "| images sent | push s | DB growth MB | poll s | poll MB | listing with data s | listing with data MB | annotate all s | collect s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows[:-1]:
        lines.append(
            f"| {row['mode']} | {number(row['push_s'])} | {number(row['db_growth_mb'])} | {number(row['poll_s'], 2)} | "
            f"{number(row['poll_mb'], 2)} | {number(row['with_data_s'])} | {number(row['with_data_mb'])} | "
            f"{number(row['annotate_all_s'])} | {number(row['collect_s'], 2)} |"
        )
    lines += ["", f"File oracle: validating a {args.images:,}-row labels file took {rows[-1]['collect_s']:.3f} s.", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--modes", default="inline,local_files")
    parser.add_argument("--url", help="a running server (else one is started)")
    parser.add_argument("--token", help="its API token")
    parser.add_argument("--root", type=Path, help="where the images are written (the server's local-files document root)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/labelstudio_scale.md"))
    args = parser.parse_args()
    root = (args.root or Path(tempfile.mkdtemp(prefix="labelstudio-images-"))).absolute()
    items = write_images(root, args.images)
    args.image_mb = sum((root / "pool" / item).stat().st_size for item in items) / 1e6
    query = make_query(root, items)
    server = None
    if not args.url:
        executable = server_executable()
        if executable is None:
            sys.exit("no label-studio found: set LABEL_STUDIO_BIN, or pass --url and --token of a running server")
        server = LabelStudioServer(executable, root)
        server.wait_until_healthy(600)
    url, token = (args.url, args.token) if args.url else (server.url, server.token)
    os.environ["LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT"] = str(root)
    try:
        rows = [one_mode(mode, url, token, query, server and server.database(), root / "team") for mode in args.modes.split(",")]
        rows.append(file_oracle_row(root, query))
    finally:
        if server is not None:
            server.stop()
        if args.root is None:
            shutil.rmtree(root, ignore_errors=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(markdown(rows, args))
    print(args.out.read_text())


if __name__ == "__main__":
    main()
