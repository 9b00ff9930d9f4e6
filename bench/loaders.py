"""Frame-pair loaders side by side, same run: ours (online PyAV, pre-extracted ArrayRecord) vs the
peers' ways (decord as VideoMAE, torchcodec, PyAV whole-window decode as MAE-ST/PySlowFast).

Three real clips are made once in `--workdir` (synthetic.write_video: a panning texture with
noise, so the bitrate is realistic; every frame carries its index in its pixels):
  h264_320p   568x320, 10 s at 30 fps, H.264 with libx264's defaults (keyint 250 + B-frames)
  h264_1080p  1920x1080, 5 s at 30 fps, H.264, the same encoder settings
  vp9_320p    568x320, 10 s at 30 fps, VP9 (libvpx-vp9 from PyAV's wheel, realtime settings)
Every loader gets the same 64 `distant` frame pairs per clip (pretraining's sampler, drawn once
with fixed seeds) and opens the clip for every pair, as a data worker does per example; it
returns two uint8 RGB HxWx3 numpy arrays. Peers take frame indices, ours take the times they
map from (index = floor((t - start) * fps): the clips have a constant rate). Each loader runs
single-threaded where it has a knob (FFmpeg threads = 1, torch and OpenCV threads = 1). Rates
are pairs per CPU-second of this process (any thread a library starts is counted), so they do
not depend on machine load. `aug` adds our training augmentation (augment.two_views to 224x224,
the trainer's video settings) to each loader's output, the same work for every loader.

Loaders:
  ours_online       video.load_pairs (what VideoSource.load calls), max_side=None: full size
  ours_preextracted FrameRecordSource.load on extract_frames' shards (--workers 1, defaults:
                    16 frames per video, short side 256, JPEG q90): read a record, snap the
                    two times to stored frames, decode two JPEGs (PIL, images.decode_image)
  decord            VideoReader(path, ctx=cpu(0), num_threads=1).get_batch([i, j]) (VideoMAE)
  torchcodec        VideoDecoder(path, num_ffmpeg_threads=1, seek_mode='approximate',
                    dimension_order='NHWC').get_frames_at([i, j]); torchcodec_exact: the
                    default seek_mode='exact' (scans the file's packets at open)
  pyav_whole_clip   PySlowFast's pyav_decode_stream (MAE-ST's PyAV path): seek 1024 ticks
                    before the window, decode every frame of the window spanning both frames,
                    convert every one to RGB, pick the two (MAE-ST's own pretraining decodes
                    the whole video with torchvision's removed video_reader: slower still)
  torchvision       read_video, where the installed torchvision still has it
A peer that is not installed (or cannot load) is left out with a `<name>_skipped: reason` line.
torchcodec needs FFmpeg's shared libraries: when it cannot find them this script runs itself
again with LD_LIBRARY_PATH on links to the FFmpeg that PyAV's wheel ships (the same FFmpeg our
decoder uses).

  python bench/loaders.py [--quick] [--workdir /tmp/vicmae_bench]

Full run (~5 min on 2 cores, clips made once): 6 s of CPU-timed pairs per loader and setting,
in 2 rounds that alternate the loaders. --quick (~1 min with the clips made): 0.3 s, one round.
--smoke: tiny clips, for tests/test_bench_loaders.py.

Prints one `name: value` per line:
  <peer>_skipped                              why a loader is left out
  ours_ffmpeg / torchcodec_ffmpeg / decord_ffmpeg   the FFmpeg each one decodes with
  decoder_threads_per_loader                  1
  preextracted_short_side / preextracted_frames_per_video   the extract_frames settings used
  <clip>_keyframes / <clip>_mbit_per_s        the clip's keyframe count and bitrate
  <clip>_ours_online_frames_decoded_per_pair  frames out of our decoder per pair
  <clip>_<loader>_mean_abs_diff_vs_ours       max over 8 pairs of the two frames' mean |diff|
                                              (uint8; pre-extracted: vs ours at the stored
                                              frames' times resized as extract_frames does)
  <clip>_ours_preextracted_jpeg_q90_roundtrip_mean_abs_diff   the part of that JPEG causes
                                              (one of ours re-encoded at q90: the floor)
  <clip>_<loader>_<aug|noaug>_pairs_per_s_per_core
  <clip>_ours_online_max_side_1024_<aug|noaug>_pairs_per_s_per_core   (1080p only: the
                                              trainer's default max_side, swscale downscale)
  <clip>_fastest_peer_<aug|noaug>             name of the fastest peer
  <clip>_ours_online_over_fastest_peer_<aug|noaug> / ..._ours_preextracted_over_fastest_peer_...
  jpeg_decode_<lib>_per_s_per_core            one stored frame of h264_320p (454x256):
                                              ours_decode_image (images.decode_image, PIL, what
                                              the frames source calls), pil, cv2, simplejpeg,
                                              turbojpeg (PyTurboJPEG + a libturbojpeg)
"""
from __future__ import annotations

import argparse
import dataclasses
import glob
import importlib.util
import io
import itertools
import math
import os
import sys
import tempfile
import time
from collections.abc import Callable

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
_REEXEC = 'VICMAE_BENCH_LOADERS_REEXEC'


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--quick', action='store_true', help='short run (~1 min)')
  parser.add_argument('--smoke', action='store_true', help='tiny clips, seconds (the test)')
  parser.add_argument('--workdir', default=os.path.join(tempfile.gettempdir(), 'vicmae_bench'))
  return parser.parse_args(argv)


def _ffmpeg_links(folder: str) -> str | None:
  """`folder` filled with links named as FFmpeg's sonames (libavcodec.so.62, ...) to the
  libraries PyAV's wheel ships, or None when PyAV has no bundled libraries."""
  spec = importlib.util.find_spec('av')
  libs = None if spec is None else os.path.join(os.path.dirname(os.path.dirname(spec.origin)),
                                                'av.libs')
  if libs is None or not glob.glob(os.path.join(libs, 'libavcodec-*.so.*')):
    return None
  os.makedirs(folder, exist_ok=True)
  for lib in glob.glob(os.path.join(libs, 'lib*-*.so.*')):
    stem, rest = os.path.basename(lib).split('-', 1)
    link = os.path.join(folder, f'{stem}.so.{rest.split(".so.", 1)[1].split(".")[0]}')
    if os.path.realpath(link) != os.path.realpath(lib):
      if os.path.lexists(link):
        os.remove(link)
      os.symlink(lib, link)
  return folder


def maybe_reexec_for_torchcodec() -> None:
  """torchcodec dlopens libavcodec.so.N and friends, found through LD_LIBRARY_PATH, which the
  loader reads at process start: when torchcodec is installed, run this script again (before
  the heavy imports) with LD_LIBRARY_PATH on links to PyAV's FFmpeg, the one ours decodes with."""
  if os.environ.get(_REEXEC) or importlib.util.find_spec('torchcodec') is None:
    return
  args = parse_args()
  folder = _ffmpeg_links(os.path.join(args.workdir, 'ffmpeg_links'))
  if folder is None:
    return
  env = dict(os.environ, **{_REEXEC: '1'})
  env['LD_LIBRARY_PATH'] = os.pathsep.join(p for p in (folder, env.get('LD_LIBRARY_PATH')) if p)
  sys.stdout.flush()
  os.execve(sys.executable, [sys.executable, os.path.abspath(__file__)] + sys.argv[1:], env)


if __name__ == '__main__':
  maybe_reexec_for_torchcodec()

from vicmae_jax.data import augment, records, sources, synthetic, video  # noqa: E402
from vicmae_jax.data.config import PairSampling  # noqa: E402

SAMPLING = PairSampling('distant')
AUG = augment.AugmentConfig(size=224)  # the trainer's video augmentation (pipeline.make_dataset)
PREEXTRACTED_SHORT_SIDE = 256  # extract_frames' default --short_side

@dataclasses.dataclass(frozen=True)
class Clip:
  codec: str
  width: int
  height: int
  seconds: int
  fps: int = 30


CLIPS = {'h264_320p': Clip('h264', 568, 320, 10), 'h264_1080p': Clip('h264', 1920, 1080, 5),
         'vp9_320p': Clip('vp9', 568, 320, 10)}
SMOKE_CLIPS = {'h264_tiny': Clip('h264', 96, 64, 2), 'vp9_tiny': Clip('vp9', 96, 64, 2)}


@dataclasses.dataclass(frozen=True)
class Pair:
  seed: int  # seeds load_pairs / FrameRecordSource.load, which draw `times` from it
  times: tuple[float, float]  # seconds, as our loaders are asked for them
  index: tuple[int, int]  # the frame indices the peers are asked for


# ---------------------------------------------------------------------------------------------
# Setup: clips, pre-extracted shards, pairs.

def make_clips(folder: str, clips: dict[str, Clip]) -> dict[str, str]:
  paths = {}
  os.makedirs(folder, exist_ok=True)
  for name, c in clips.items():
    path = os.path.join(folder, name + synthetic.CODECS[c.codec][1])
    if not os.path.exists(path):
      tmp = os.path.join(os.path.dirname(folder), f'.{os.getpid()}_{os.path.basename(path)}')
      synthetic.write_video(tmp, num_frames=c.seconds * c.fps, fps=c.fps, width=c.width,
                            height=c.height, codec=c.codec, textured=True, seed=1)
      os.replace(tmp, path)
    paths[name] = path
  return paths


def extract(folder: str, out: str) -> sources.FrameRecordSource:
  """extract_frames' shards of the clips in `folder` (its defaults, one worker), read as the
  trainer's `frames` source reads them."""
  from vicmae_jax.tools import extract_frames
  if not os.path.exists(os.path.join(out, 'summary.json')):
    extract_frames.main(['--kind', 'video_folder', '--path', folder, '--out', out,
                         '--workers', '1'])
  return sources.FrameRecordSource(sources.expand_shards(out), SAMPLING)


def draw_pairs(path: str, n: int, seed: int) -> list[Pair]:
  """`n` distant pairs, each from its own seed exactly as load_pairs draws them."""
  container = video.open_video(path)
  try:
    info = video.probe(container, path)
  finally:
    container.close()
  frames = int(round(info.duration * info.fps))
  pairs = []
  for k in range(n):
    s = seed * 100_003 + k
    times = video.sample_pair_times(np.random.default_rng(s), info.start, info.duration,
                                    info.fps, SAMPLING, 1)[0]
    index = [min(int(math.floor((t - info.start) * info.fps + 1e-6)), frames - 1) for t in times]
    pairs.append(Pair(s, (float(times[0]), float(times[1])), (index[0], index[1])))
  return pairs


def clip_stats(path: str) -> tuple[int, float]:
  """(keyframes, Mbit/s) of the clip's video stream."""
  import av
  with av.open(path) as c:
    s = c.streams.video[0]
    keyframes = sum(1 for p in c.demux(s) if p.size and p.is_keyframe)
    seconds = (float(s.duration * s.time_base) if s.duration else c.duration / av.time_base)
  return keyframes, os.path.getsize(path) * 8 / seconds / 1e6


# ---------------------------------------------------------------------------------------------
# Loaders: (path, pair) -> (frame_a, frame_b), uint8 RGB HxWx3.

Loader = Callable[[Pair], tuple[np.ndarray, np.ndarray]]


def ours_online(path: str, max_side: int | None = None) -> Loader:
  def load(pair: Pair):
    (a, b), = video.load_pairs(path, np.random.default_rng(pair.seed), SAMPLING, 1, threads=1,
                               max_side=max_side)[0]
    return a, b
  return load


def ours_preextracted(source: sources.FrameRecordSource, record: int) -> Loader:
  def load(pair: Pair):
    (a, b), = source.load(record, np.random.default_rng(pair.seed), 1)
    return a, b
  return load


def decord_loader(path: str) -> Loader:
  from decord import VideoReader, cpu

  def load(pair: Pair):
    batch = VideoReader(path, ctx=cpu(0), num_threads=1).get_batch(list(pair.index)).asnumpy()
    return batch[0], batch[1]
  return load


def torchcodec_loader(path: str, seek_mode: str) -> Loader:
  from torchcodec.decoders import VideoDecoder

  def load(pair: Pair):
    decoder = VideoDecoder(path, num_ffmpeg_threads=1, seek_mode=seek_mode,
                           dimension_order='NHWC')
    frames = decoder.get_frames_at(list(pair.index)).data.numpy()
    return frames[0], frames[1]
  return load


def pyav_decode_stream(container, start_pts: int, end_pts: int, stream,
                       buffer_size: int = 0) -> list:
  """PySlowFast's `pyav_decode_stream` (MAE-ST's PyAV decoder): frames with start <= pts <=
  end, plus `buffer_size` + 1 past the end, in pts order."""
  margin = 1024  # "seeking in the stream is imprecise"
  container.seek(max(start_pts - margin, 0), any_frame=False, backward=True, stream=stream)
  frames, buffer_count = {}, 0
  for frame in container.decode(stream):
    if frame.pts < start_pts:
      continue
    frames[frame.pts] = frame
    if frame.pts > end_pts:
      buffer_count += 1
      if buffer_count >= buffer_size:
        break
  return [frames[pts] for pts in sorted(frames)]


def pyav_whole_clip(path: str) -> Loader:
  """The window from frame i to frame j decoded whole, every frame converted to RGB, as
  PySlowFast's pyav_decode does for a clip (then np.stack, left out here), then the two frames
  picked. Window bounds in ticks from the frame indices; single-threaded codec."""
  import av

  def load(pair: Pair):
    container = av.open(path)
    try:
      stream = container.streams.video[0]
      stream.codec_context.thread_count = 1
      stream.codec_context.thread_type = 'NONE'
      tb, fps = stream.time_base, float(stream.average_rate)
      start = stream.start_time or 0
      i, j = pair.index
      lo, hi = (start + int(round(k / fps / tb)) for k in (i, j))
      window = pyav_decode_stream(container, lo, hi, stream)
      rgb = [f.to_ndarray(format='rgb24') for f in window]
    finally:
      container.close()
    return rgb[0], rgb[j - i]
  return load


def torchvision_loader(path: str) -> Loader:
  from torchvision.io import read_video
  container = video.open_video(path)
  info = video.probe(container, path)
  container.close()

  def load(pair: Pair):
    lo, hi = (info.start + k / info.fps for k in pair.index)
    frames, _, _ = read_video(path, start_pts=lo, end_pts=hi, pts_unit='sec',
                              output_format='THWC')
    return frames[0].numpy(), frames[-1].numpy()
  return load


# ---------------------------------------------------------------------------------------------
# Peers that may be missing.

def available_peers() -> tuple[dict[str, Callable[[str], Loader]], dict[str, str]]:
  """({peer: factory(path)}, {peer: why it is left out})."""
  peers, skipped = {}, {}
  try:
    import decord
    decord.VideoReader  # noqa: B018
    peers['decord'] = decord_loader
  except Exception as e:  # noqa: BLE001
    skipped['decord'] = f'cannot import decord ({type(e).__name__}: {e})'.replace('\n', ' ')
  try:
    import torch
    torch.set_num_threads(1)
    from torchcodec.decoders import VideoDecoder  # noqa: F401 - loads its FFmpeg libraries
    peers['torchcodec'] = lambda p: torchcodec_loader(p, 'approximate')
    peers['torchcodec_exact'] = lambda p: torchcodec_loader(p, 'exact')
  except Exception as e:  # noqa: BLE001
    reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    skipped['torchcodec'] = f'{type(e).__name__}: {reason}'[:300]
  peers['pyav_whole_clip'] = pyav_whole_clip
  if importlib.util.find_spec('torchvision') is None:
    skipped['torchvision'] = ('not installed: torchvision 0.28 (the release for torch 2.13) '
                              'has no read_video in its open-source build (video decoding was '
                              'deprecated in 0.22 and removed in 0.24); pyav_whole_clip '
                              'stands for its PyAV path')
  else:
    try:
      from torchvision.io import read_video  # noqa: F401
      peers['torchvision'] = torchvision_loader
    except Exception as e:  # noqa: BLE001
      import torchvision
      skipped['torchvision'] = (f'torchvision {torchvision.__version__} has no read_video '
                                f'({type(e).__name__}); video decoding was removed in 0.24')
  return peers, skipped


def ffmpeg_versions(peers: dict) -> dict[str, str]:
  """The FFmpeg each decoder runs on: PyAV's (ours, pyav_whole_clip), torchcodec's, decord's."""
  import av
  out = {'ours_ffmpeg': 'libavcodec %d.%d.%d (PyAV %s wheel)'
         % (*av.library_versions['libavcodec'], av.__version__)}
  if 'torchcodec' in peers:
    import torchcodec
    linked = any(os.path.basename(p.rstrip('/')) == 'ffmpeg_links'
                 for p in os.environ.get('LD_LIBRARY_PATH', '').split(os.pathsep))
    where = 'PyAV wheel, linked' if linked else 'system'
    out['torchcodec_ffmpeg'] = (f'FFmpeg {torchcodec.ffmpeg_major_version} ({where}; '
                                f'torchcodec {torchcodec.__version__})')
  spec = importlib.util.find_spec('decord')
  libs = [] if spec is None else glob.glob(os.path.join(
      os.path.dirname(os.path.dirname(spec.origin)), 'decord.libs', 'libavcodec-*.so.*'))
  if 'decord' in peers and libs:
    out['decord_ffmpeg'] = ('libavcodec ' + os.path.basename(libs[0]).split('.so.')[1]
                            + ' (decord 0.6.0 wheel)')
  return out


# ---------------------------------------------------------------------------------------------
# Measurement.

class Meter:
  """Items and CPU-seconds of this process accumulated over rounds (the first call warms up)."""

  def __init__(self, step: Callable[[], int]):
    self.step, self.items, self.cpu, self.warm = step, 0, 0.0, False

  def run(self, seconds: float, min_items: int) -> None:
    if not self.warm:
      self.step()
      self.warm = True
    items, wall0, cpu0 = 0, time.perf_counter(), time.process_time()
    while items < min_items or time.perf_counter() - wall0 < seconds:
      items += self.step()
    self.items += items
    self.cpu += time.process_time() - cpu0

  @property
  def rate(self) -> float:
    return self.items / self.cpu


def rate(step: Callable[[], int], seconds: float, min_items: int = 1) -> float:
  """Items per CPU-second of this process, running `step` (returns items made) for `seconds`."""
  meter = Meter(step)
  meter.run(seconds, min_items)
  return meter.rate


def pair_step(load: Loader, pairs: list[Pair], aug: bool) -> Callable[[], int]:
  cycle = itertools.cycle(pairs)

  def step() -> int:
    pair = next(cycle)
    a, b = load(pair)
    if aug:
      augment.two_views(a, b, np.random.default_rng(pair.seed + 1), AUG)
    return 1
  return step


def mean_abs_diff(x: np.ndarray, y: np.ndarray) -> float:
  if x.shape != y.shape:
    return float('inf')
  return float(np.abs(x.astype(np.int16) - y.astype(np.int16)).mean())


def check_frames(name: str, a: np.ndarray, b: np.ndarray) -> None:
  for x in (a, b):
    # Rows may be padded (PyAV returns FFmpeg's aligned linesize as the row stride).
    if not (isinstance(x, np.ndarray) and x.dtype == np.uint8 and x.ndim == 3
            and x.shape[2] == 3 and x.strides[1:] == (3, 1)):
      raise AssertionError(f'{name}: not a uint8 HxWx3 array: '
                           f'{getattr(x, "dtype", type(x))} {getattr(x, "shape", None)}')


def check_online(path: str, pairs: list[Pair]) -> tuple[list[tuple[np.ndarray, np.ndarray]], float]:
  """Our frames for `pairs` (checked: they are the frames at the peers' indices) and the
  frames out of the decoder per pair."""
  load, out, decoded = ours_online(path), [], 0
  for pair in pairs:
    a, b = load(pair)
    check_frames('ours_online', a, b)
    for frame, k in ((a, pair.index[0]), (b, pair.index[1])):
      if synthetic.read_index(frame) != k:
        raise AssertionError(f'{path}: ours_online returned frame {synthetic.read_index(frame)} '
                             f'for index {k}')
    out.append((a, b))
    container, stats = video.open_video(path), {}
    try:
      video.decode_at_times(container, pair.times, stats=stats)
    finally:
      container.close()
    decoded += stats['decoded']
  return out, decoded / len(pairs)


def preextracted_reference(path: str, header: dict, pair: Pair) -> tuple[np.ndarray, np.ndarray]:
  """Our online decode of the stored frames FrameRecordSource.load picks for `pair` (the same
  sampler call, snapped to the nearest stored time), resized as extract_frames stores them."""
  from vicmae_jax.tools import extract_frames
  stored = np.asarray(header['times'])
  wanted = video.sample_pair_times(np.random.default_rng(pair.seed), header['start'],
                                   header['duration'], header['fps'], SAMPLING, 1)
  nearest = np.abs(wanted[..., None] - stored).argmin(-1)[0]
  # A stored time is its frame's exact pts; asked at that float, decode_at_times may floor to
  # the tick before it and return the previous frame, so ask a quarter frame later.
  container = video.open_video(path)
  try:
    frames, _ = video.frames_at_times(container, stored[nearest] + 0.25 / header['fps'])
  finally:
    container.close()
  return tuple(extract_frames.resize_short_side(f, PREEXTRACTED_SHORT_SIDE) for f in frames)


def jpeg_rates(jpeg: bytes, seconds: float) -> dict[str, float]:
  """Decodes per CPU-second of one stored frame, by library (missing ones left out)."""
  from PIL import Image
  import cv2
  from vicmae_jax.data import images
  reference = images.decode_image(jpeg)
  decoders = {'ours_decode_image': lambda: images.decode_image(jpeg),
              'pil': lambda: np.asarray(Image.open(io.BytesIO(jpeg)).convert('RGB')),
              'cv2': lambda: cv2.cvtColor(cv2.imdecode(np.frombuffer(jpeg, np.uint8),
                                                       cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)}
  try:
    import simplejpeg
    decoders['simplejpeg'] = lambda: simplejpeg.decode_jpeg(jpeg, colorspace='RGB')
  except ImportError:
    pass
  try:
    from turbojpeg import TJPF_RGB, TurboJPEG
    tj = TurboJPEG()
    decoders['turbojpeg'] = lambda: tj.decode(jpeg, pixel_format=TJPF_RGB)
  except Exception:  # noqa: BLE001 - the package or its libturbojpeg is missing
    pass
  out = {}
  for name, fn in decoders.items():
    if mean_abs_diff(fn(), reference) > 2:
      raise AssertionError(f'jpeg decoder {name} disagrees with images.decode_image')
    out[name] = rate(lambda fn=fn: (fn(), 1)[1], seconds, 20)
  return out


def main(argv: list[str] | None = None) -> None:
  args = parse_args(argv)
  base = os.path.join(args.workdir, 'loaders_smoke' if args.smoke else 'loaders')
  # (seconds per loader, rounds it is split into, least pairs per round, pairs checked)
  seconds, rounds, min_items, n_check = ((0.05, 1, 1, 2) if args.smoke else
                                         (0.3, 1, 1, 2) if args.quick else (6.0, 2, 2, 8))
  clips = SMOKE_CLIPS if args.smoke else CLIPS

  import cv2
  cv2.setNumThreads(1)
  peers, skipped = available_peers()
  for name, why in skipped.items():
    print(f'{name}_skipped: {why}', flush=True)
  for name, value in ffmpeg_versions(peers).items():
    print(f'{name}: {value}', flush=True)
  print('decoder_threads_per_loader: 1', flush=True)

  import grain
  paths = make_clips(os.path.join(base, 'clips'), clips)
  frames_dir = os.path.join(base, 'frames')
  source = extract(os.path.join(base, 'clips'), frames_dir)
  reader = grain.sources.ArrayRecordDataSource(sources.expand_shards(frames_dir))
  record_of = {source.describe(i): i for i in range(len(source))}
  print(f'preextracted_short_side: {PREEXTRACTED_SHORT_SIDE}', flush=True)
  print(f'preextracted_frames_per_video: {len(records.decode_record(reader[0])[0]["times"])}',
        flush=True)

  for clip, path in paths.items():
    keyframes, mbit = clip_stats(path)
    print(f'{clip}_keyframes: {keyframes}', flush=True)
    print(f'{clip}_mbit_per_s: {mbit:.2f}', flush=True)
    pairs = draw_pairs(path, 64, seed=0)
    record = record_of[path]
    header = records.decode_record(reader[record])[0]
    loaders: dict[str, Loader] = {'ours_online': ours_online(path),
                                  'ours_preextracted': ours_preextracted(source, record)}
    loaders.update({name: factory(path) for name, factory in peers.items()})
    if max(clips[clip].width, clips[clip].height) > 1024:
      loaders['ours_online_max_side_1024'] = ours_online(path, max_side=1024)

    # Correctness first: every loader's frames for the same pairs against ours.
    ours, decoded = check_online(path, pairs[:n_check])
    print(f'{clip}_ours_online_frames_decoded_per_pair: {decoded:.1f}', flush=True)
    for name, load in loaders.items():
      if name.startswith('ours_online'):
        continue
      worst = 0.0
      for pair, (a0, b0) in zip(pairs[:n_check], ours):
        a, b = load(pair)
        check_frames(name, a, b)
        if name == 'ours_preextracted':
          a0, b0 = preextracted_reference(path, header, pair)
        worst = max(worst, mean_abs_diff(a, a0), mean_abs_diff(b, b0))
      print(f'{clip}_{name}_mean_abs_diff_vs_ours: {worst:.2f}', flush=True)
      if name == 'ours_preextracted':  # what JPEG alone costs on these (very noisy) frames
        from vicmae_jax.data import images
        ref = preextracted_reference(path, header, pairs[0])[0]
        loss = mean_abs_diff(images.decode_image(records.encode_jpeg(ref, 90)), ref)
        print(f'{clip}_ours_preextracted_jpeg_q90_roundtrip_mean_abs_diff: {loss:.2f}',
              flush=True)

    # Rounds alternate the loaders, so a slow drift of the machine spreads over all of them.
    meters = {(name, aug): Meter(pair_step(load, pairs, aug == 'aug'))
              for aug in ('noaug', 'aug') for name, load in loaders.items()}
    for _ in range(rounds):
      for meter in meters.values():
        meter.run(seconds / rounds, min_items)
    for (name, aug), meter in meters.items():
      print(f'{clip}_{name}_{aug}_pairs_per_s_per_core: {meter.rate:.2f}', flush=True)
    for aug in ('noaug', 'aug'):
      measured = {name: meters[name, aug].rate for name in peers}
      fastest = max(measured, key=measured.get)
      print(f'{clip}_fastest_peer_{aug}: {fastest}', flush=True)
      for ours_name in ('ours_online', 'ours_preextracted'):
        ratio = meters[ours_name, aug].rate / measured[fastest]
        print(f'{clip}_{ours_name}_over_fastest_peer_{aug}: {ratio:.2f}', flush=True)

  jpeg = records.decode_record(reader[record_of[next(iter(paths.values()))]])[1][0]
  for name, value in jpeg_rates(jpeg, max(seconds / 2, 0.05)).items():
    print(f'jpeg_decode_{name}_per_s_per_core: {value:.0f}', flush=True)


if __name__ == '__main__':
  main()
