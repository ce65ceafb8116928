"""Images are read by a task's path only inside the task set's store: local (traversal, absolute
paths, symlinks out, other file types refused) or S3 (moto on loopback)."""

from __future__ import annotations

import os
from pathlib import Path

import boto3
import pytest

from mentoring.annotate.images import ImageNotFound, ImageSource
from tests.servers import aws_client_kwargs

PNG = b"\x89PNG\r\n\x1a\n" + b"\0" * 16


@pytest.fixture
def store(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    (root / "line/new/pool/images").mkdir(parents=True)
    (root / "line/new/pool/images/img-a.png").write_bytes(PNG)
    (root / "line/new/pool/images/notes.txt").write_text("not an image")
    (tmp_path / "secret.png").write_bytes(b"secret")
    os.symlink(tmp_path / "secret.png", root / "line/new/pool/images/link-out.png")
    os.symlink(root / "line/new/pool/images/img-a.png", root / "line/link-in.png")
    os.symlink(tmp_path, root / "line/up")
    return root


def test_a_task_path_inside_the_store_is_read(store: Path) -> None:
    source = ImageSource(store)
    assert source.read("line/new/pool/images/img-a.png") == (PNG, "image/png")
    assert source.read("line/link-in.png")[0] == PNG  # a symlink that stays inside


@pytest.mark.parametrize(
    "path",
    [
        "../secret.png",
        "line/../../secret.png",
        "line/new/pool/images/link-out.png",  # symlink to a file outside
        "line/up/secret.png",  # symlinked folder outside
        "line\\..\\..\\secret.png",
        "line/new/pool/images/notes.txt",  # not an image type
        "line/new/pool/images/missing.png",
        "line/new/pool/images",
        "",
    ],
)
def test_paths_leaving_the_store_are_refused(store: Path, path: str) -> None:
    with pytest.raises(ImageNotFound):
        ImageSource(store).read(path)


def test_an_absolute_path_is_refused(store: Path, tmp_path: Path) -> None:
    with pytest.raises(ImageNotFound, match="not a path inside"):
        ImageSource(store).read(str(tmp_path / "secret.png"))
    with pytest.raises(ImageNotFound):
        ImageSource(store).read(str(store / "line/new/pool/images/img-a.png"))


def test_images_in_s3(s3_endpoint: str) -> None:
    s3 = boto3.client("s3", endpoint_url=s3_endpoint, **aws_client_kwargs())
    s3.create_bucket(Bucket="annotate-images")
    s3.put_object(Bucket="annotate-images", Key="plant/line/img-s.png", Body=PNG)
    s3.put_object(Bucket="annotate-images", Key="secret.png", Body=b"secret")
    source = ImageSource("s3://annotate-images/plant", endpoint_url=s3_endpoint)
    assert source.read("line/img-s.png") == (PNG, "image/png")
    # a task path that is an s3 URI of its own
    assert source.read("s3://annotate-images/plant/line/img-s.png")[0] == PNG
    for bad in ("../secret.png", "line/../../secret.png", "/secret.png", "line/nope.png"):
        with pytest.raises(ImageNotFound):
            source.read(bad)
