"""Shared fixtures: small real media files written once per test session (per xdist worker)."""
import os

import pytest

from vicmae_jax.data import synthetic

# name -> write_video kwargs; 64x48 px, 2-3 s, so the whole suite stays fast.
CLIPS = {
    'h264.mp4': dict(codec='h264', num_frames=75, fps=25),  # libx264 defaults: B-frames, long GOP
    'h264_gop10.mp4': dict(codec='h264', num_frames=90, fps=30, gop=10),
    'mpeg4_b.mp4': dict(codec='mpeg4', num_frames=60, fps=30, gop=12, bframes=2),
    'vp9.webm': dict(codec='vp9', num_frames=60, fps=30),
    'mpeg4.avi': dict(codec='mpeg4', num_frames=50, fps=25, gop=10),
    'vfr.mp4': dict(codec='h264', num_frames=80, frame_times=synthetic.vfr_times(80, seed=3)),
}


@pytest.fixture(scope='session')
def clips(tmp_path_factory):
  """{name: (path, frame times in seconds)} of real encoded clips whose pixels carry the index."""
  root = tmp_path_factory.mktemp('clips')
  out = {}
  for name, kwargs in CLIPS.items():
    path = str(root / name)
    out[name] = (path, synthetic.write_video(path, **kwargs))
  return out


@pytest.fixture(scope='session')
def video_folder(tmp_path_factory):
  """A class-folder video dataset of 8 tiny H.264 clips."""
  root = tmp_path_factory.mktemp('videos')
  for i in range(8):
    folder = root / f'class_{i % 2}'
    folder.mkdir(exist_ok=True)
    synthetic.write_video(str(folder / f'v{i}.mp4'), num_frames=30, fps=15, seed=i)
  return str(root)


@pytest.fixture(scope='session')
def image_folder(tmp_path_factory):
  """An ImageNet-layout folder of 12 small JPEGs in 3 classes."""
  root = tmp_path_factory.mktemp('images')
  for i in range(12):
    folder = root / f'n0{i % 3}'
    folder.mkdir(exist_ok=True)
    (folder / f'img{i}.JPEG').write_bytes(synthetic.image_bytes('rgb_jpeg', size=(72, 56), seed=i))
  return str(root)


def write(path, data: bytes) -> str:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, 'wb') as f:
    f.write(data)
  return path
