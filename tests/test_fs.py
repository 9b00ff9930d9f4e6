"""vicmae_jax.fs on a local folder and on a localhost GCS emulator: one behaviour for both."""
import os

import pytest

from vicmae_jax import fs


def _tree(root: str) -> None:
  for rel in ("a/x.mp4", "a/y.mp4", "b/z.jpg", "top.txt"):
    path = fs.join(root, rel)
    if not fs.is_url(root):
      os.makedirs(os.path.dirname(path), exist_ok=True)
    with fs.open(path, "wb") as f:
      f.write(rel.encode() * 10)


@pytest.fixture(params=["local", "gs"])
def root(request, tmp_path):
  if request.param == "local":
    return str(tmp_path / "data")
  emulator = request.getfixturevalue("gcs")
  return emulator.url("fs_test", request.node.name.replace("[", "_").replace("]", ""))


def test_the_same_answers_locally_and_in_a_bucket(root):
  _tree(root)
  assert fs.isdir(root) and fs.isdir(fs.join(root, "a")) and not fs.isdir(fs.join(root, "top.txt"))
  assert fs.isfile(fs.join(root, "a", "x.mp4")) and not fs.isfile(fs.join(root, "a"))
  assert not fs.exists(fs.join(root, "nope.mp4"))
  assert fs.size(fs.join(root, "top.txt")) == 70
  assert fs.read_text(fs.join(root, "b", "z.jpg")) == "b/z.jpg" * 10
  assert [os.path.basename(p) for p in fs.glob(fs.join(root, "a", "*.mp4"))] == ["x.mp4", "y.mp4"]
  assert [p[len(root):] for p in fs.glob(fs.join(root, "*", "*.jpg"))] == ["/b/z.jpg"]
  assert fs.glob(fs.join(root, "zzz", "*.mp4")) == []
  walked = {fs.relpath(folder, root): sorted(names) for folder, _, names in fs.walk(root)}
  assert walked == {".": ["top.txt"], "a": ["x.mp4", "y.mp4"], "b": ["z.jpg"]}
  assert all(folder.startswith(root) for folder, _, _ in fs.walk(root))
  wanted = [fs.join(root, "a", "x.mp4"), fs.join(root, "a", "gone.mp4"), fs.join(root, "b", "z.jpg"),
            fs.join(root, "c", "nofolder.jpg")]
  assert fs.existing(wanted) == {wanted[0], wanted[2]}
  with fs.open(fs.join(root, "top.txt"), "rb") as f:  # seekable: what PyAV needs
    f.seek(7)
    assert f.read(7) == b"top.txt"
  fs.copy_file(fs.join(root, "top.txt"), fs.join(root, "copy.txt"))
  fs.replace(fs.join(root, "copy.txt"), fs.join(root, "moved.txt"))
  assert fs.exists(fs.join(root, "moved.txt")) and not fs.exists(fs.join(root, "copy.txt"))


def test_lexical_path_rules_for_urls():
  assert fs.normpath("gs://b/x/../y/./z") == "gs://b/y/z"
  assert fs.is_within("gs://b/data/x.mp4", "gs://b/data")
  assert not fs.is_within("gs://b/data/../other/x.mp4", "gs://b/data")
  assert not fs.is_within("gs://b/database/x.mp4", "gs://b/data")
  assert not fs.is_within("/data/x.mp4", "gs://b/data")
  assert fs.join("gs://b/data", "a", "x.mp4") == "gs://b/data/a/x.mp4"
  assert fs.dirname("gs://b/data/x.mp4") == "gs://b/data" and fs.isabs("gs://b/x")
  assert fs.relpath("gs://b/data/a/x.mp4", "gs://b/data") == "a/x.mp4"


def test_files_written_by_other_clients_are_seen_at_once(gcs):
  """No stale folder listings: another host (here: a separate client) adds a file after this
  process listed the folder, and `exists`, `glob` and `listdir` see it."""
  import fsspec
  root = gcs.url("fs_other_writer")
  fs.write_text(f"{root}/a.txt", "a")
  assert fs.listdir(root) == ["a.txt"] and not fs.exists(f"{root}/b.txt")
  other = fsspec.filesystem("gs", skip_instance_cache=True)
  with other.open(f"{root}/b.txt", "wb") as f:
    f.write(b"b")
  assert fs.exists(f"{root}/b.txt") and sorted(fs.listdir(root)) == ["a.txt", "b.txt"]
  assert len(fs.glob(f"{root}/*.txt")) == 2
