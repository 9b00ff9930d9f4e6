"""A Google Cloud Storage API on localhost for the tests: `gcp-storage-emulator` (pure Python).

Every client the program uses for gs:// is pointed at it through its own setting:
  gcsfs (fsspec; vicmae_jax.fs, Orbax's and TFDS's epath)   STORAGE_EMULATOR_HOST
  array_record (google-cloud-cpp; frame shards)            CLOUD_STORAGE_EMULATOR_ENDPOINT
  tensorstore (Orbax's array data)                         TENSORSTORE_GCS_HTTP_URL + a test token
The emulator is patched in one place (below): downloads carry the object generation header real GCS
sends, which tensorstore needs. TensorFlow's own GCS client has a fixed endpoint; the program does not use it for gs:// (its
TensorBoard files are written locally and copied through fsspec: logging_utils.MirroredWriter).
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

_SERVER = """
import sys, time
from gcp_storage_emulator.handlers import objects

# Real GCS names an object's generation in an `x-goog-generation` header on every download;
# tensorstore (Orbax's OCDBT checkpoints) reads it there and refuses conditional writes without it.
_download = objects.download

def download(request, response, storage, *args, **kwargs):
  try:
    obj = storage.get_file_obj(request.params["bucket_name"], request.params["object_id"])
    response["x-goog-generation"] = str(obj["generation"])
    response["x-goog-metageneration"] = str(obj.get("metageneration", 1))
  except Exception:
    pass
  return _download(request, response, storage, *args, **kwargs)

objects.download = download
from gcp_storage_emulator.server import create_server
server = create_server("127.0.0.1", int(sys.argv[1]), in_memory=True, default_bucket=sys.argv[2])
server.start()
print("ready", flush=True)
while True:
  time.sleep(3600)
"""


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


class Emulator:
  """A running emulator with one bucket; `env` holds the client settings."""

  def __init__(self, bucket: str = "vicmae-test"):
    self.bucket, self.port = bucket, _free_port()
    self.proc = subprocess.Popen([sys.executable, "-c", _SERVER, str(self.port), bucket],
                                 stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    if self.proc.stdout.readline().strip() != "ready":
      raise RuntimeError("the GCS emulator did not start")
    self._wait_for_port()
    url = f"http://127.0.0.1:{self.port}"
    self.env = {
        "STORAGE_EMULATOR_HOST": url,
        "CLOUD_STORAGE_EMULATOR_ENDPOINT": url,
        "TENSORSTORE_GCS_HTTP_URL": url,
        "GOOGLE_AUTH_TOKEN_FOR_TESTING": "emulator",
        # The emulator has no storage-control API, which gcsfs asks about bucket layouts (each
        # question would wait for a 60 s timeout).
        "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false",
        "EPATH_USE_TF": "false",
    }

  def _wait_for_port(self) -> None:
    deadline = time.time() + 30
    while time.time() < deadline:
      try:
        socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
        return
      except OSError:
        time.sleep(0.1)
    raise RuntimeError("the GCS emulator does not answer")

  def url(self, *parts: str) -> str:
    return "/".join([f"gs://{self.bucket}", *parts])

  def upload_tree(self, local_root: str, url: str) -> None:
    """Copies a local folder to `url` file by file."""
    from vicmae_jax import fs
    for folder, _, names in os.walk(local_root):
      for name in names:
        rel = os.path.relpath(os.path.join(folder, name), local_root).replace(os.sep, "/")
        fs.copy_file(os.path.join(folder, name), f"{url}/{rel}")

  def stop(self) -> None:
    self.proc.kill()
    self.proc.wait()
