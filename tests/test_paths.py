"""paths: what a user types, resolved once at the edge."""
import os

from vicmae_jax import paths


def test_resolve(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  assert paths.resolve("runs/a") == str(tmp_path / "runs" / "a")
  assert paths.resolve("~/x") == os.path.join(os.path.expanduser("~"), "x")
  assert paths.resolve("gs://bucket/run") == "gs://bucket/run"
  assert paths.resolve("") == "" and paths.resolve(None) == ""
  assert paths.resolve_list("a,b/*.ar") == f"{tmp_path}/a,{tmp_path}/b/*.ar"


def test_resolve_source_touches_files_only(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  k = paths.resolve_source(dict(kind="kinetics_csv", path="k/train.csv", root="k/videos"))
  assert (k["path"], k["root"]) == (f"{tmp_path}/k/train.csv", f"{tmp_path}/k/videos")
  t = paths.resolve_source(dict(kind="tfds", path="imagenet2012", train="train", data_dir="tfds"))
  assert (t["path"], t["train"], t["data_dir"]) == ("imagenet2012", "train", f"{tmp_path}/tfds")
  f = paths.resolve_source(dict(kind="frames", path="s/a-*.ar,s/b-*.ar"))
  assert f["path"] == f"{tmp_path}/s/a-*.ar,{tmp_path}/s/b-*.ar"
  e = paths.resolve_source(dict(kind="image_folder", train="in/train", val="in/val"))
  assert e["val"] == f"{tmp_path}/in/val"
