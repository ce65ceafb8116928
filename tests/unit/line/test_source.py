"""line_version's source key: it changes exactly when what ingestion would read changes."""

from __future__ import annotations

import os
from pathlib import Path

import boto3

from mentoring.config import Params, load_params
from mentoring.line.source import source_version
from tests.servers import aws_client_kwargs

REPO = Path(__file__).resolve().parents[3]


def _params(**sets: object) -> Params:
    return load_params(REPO / "params.yaml", dict(sets))


def test_synthetic_is_keyed_by_its_params() -> None:
    found = source_version(_params())
    assert (found.source, found.key, found.rev) == ("synthetic", "synthetic", "")


def test_folder_key_follows_its_content(tmp_path: Path) -> None:
    images = tmp_path / "new" / "pool" / "images"
    images.mkdir(parents=True)
    (images / "a.png").write_bytes(b"one")
    params = _params(**{"line.source": "folder", "line.ingest_dir": str(tmp_path)})
    first = source_version(params)
    assert first.n_objects == 1 and first.key.startswith("folder:")
    assert source_version(params) == first  # nothing changed: the same key
    (images / "b.png").write_bytes(b"two")  # a new image arrives
    second = source_version(params)
    assert second.key != first.key and second.n_objects == 2
    (images / "b.png").write_bytes(b"two, re-taken")  # an image is replaced
    os.utime(images / "b.png", ns=(1, 1))
    assert source_version(params).key not in (first.key, second.key)


def test_s3_key_follows_its_objects(s3_endpoint: str) -> None:
    s3 = boto3.client("s3", endpoint_url=s3_endpoint, **aws_client_kwargs())
    s3.create_bucket(Bucket="line-version")
    s3.put_object(Bucket="line-version", Key="line/new/pool/images/a.png", Body=b"one")
    params = _params(
        **{
            "line.source": "s3",
            "line.s3.uri": "s3://line-version/line",
            "line.s3.endpoint_url": s3_endpoint,
        }
    )
    first = source_version(params)
    assert first.n_objects == 1 and first.key.startswith("s3:")
    s3.put_object(Bucket="line-version", Key="line/new/pool/images/a.png", Body=b"changed")
    assert source_version(params).key != first.key  # same key and size class, new ETag
