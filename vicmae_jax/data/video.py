"""PyAV decoding of a few frames at given times, and frame-pair time sampling (docs/decisions.md,
D6 and D14).

Decoding never walks a whole clip to take two frames:
  * targets are presentation times, looked up through pts * time_base, so variable frame rate is
    handled (the answer for time t is the last frame shown at or before t);
  * a seek goes to the keyframe before the first target when it is far from the current position;
  * between targets, packets are only demuxed (cheap) and buffered from the latest keyframe at or
    before the next target, so whole GOPs that are not needed are never decoded; a new seek is only
    made when the next target is more than `reseek_s` ahead;
  * non-reference frames (most B-frames) are skipped when a later frame that is still at or before
    the target has already been demuxed, so they cannot be the answer;
  * only the requested frames are converted to RGB (the conversion costs as much as the decoding).
"""
from __future__ import annotations

import bisect
import dataclasses
import io
import math
import threading
from collections.abc import Sequence
from typing import Any

import av
import av.video.reformatter
import numpy as np

from vicmae_jax import fs
from vicmae_jax.data.badinput import BadInput
from vicmae_jax.data.config import PairSampling

# Corrupt files are handled and counted; FFmpeg log spam about them is not useful.
av.logging.set_level(av.logging.PANIC)


@dataclasses.dataclass(frozen=True)
class VideoInfo:
  start: float  # seconds
  duration: float  # seconds
  fps: float  # average frame rate
  duration_from: str  # 'stream', 'container' or 'scan' (a demux-only counting pass)


def sample_pair_times(rng: np.random.Generator, start: float, duration: float, fps: float,
                      sampling: PairSampling, k: int = 1) -> np.ndarray:
  """Draws `k` frame pairs as times in seconds, shape [k, 2], each row ordered.

  Frame-unit modes work on the clip's grid of frame slots (slot j is centred at start + (j + .5) /
  fps), so with a constant frame rate the decoded frames are exactly `gap` frames apart.
  """
  n = max(int(round(duration * fps)), 1)
  out = np.empty((k, 2))
  for row in range(k):
    if sampling.mode == 'distant' or sampling.unit == 'frames':
      if sampling.mode == 'distant':
        half = max(n // 2, 1)
        j1, j2 = rng.integers(0, half), rng.integers(min(half, n - 1), n)
      else:
        gap = sampling.gap if sampling.mode == 'fixed_gap' else rng.integers(
            int(sampling.gap), int(sampling.gap_max) + 1)
        gap = int(min(gap, n - 1))
        j1 = rng.integers(0, n - gap)
        j2 = j1 + gap
      out[row] = start + (np.array([j1, j2]) + 0.5) / fps
    else:
      gap = sampling.gap if sampling.mode == 'fixed_gap' else rng.uniform(sampling.gap,
                                                                           sampling.gap_max)
      gap = min(gap, duration * 0.999)
      t1 = start + rng.uniform(0, duration - gap)
      out[row] = (t1, t1 + gap)
  return out


# Videos in object storage up to this size are read whole: one request (plus a stat) beats the
# round trips of range reads for Kinetics-sized clips (~1-2 MB); longer videos stream.
REMOTE_WHOLE_FILE_BYTES = 8 << 20


def ffmpeg_cause(e: BaseException) -> str:
  """An FFmpeg error's reason without the file name FFmpeg appends (the report names the file
  already, and a long path would push the reason out of the truncated cause)."""
  reason = getattr(e, 'strerror', None)
  return f'{reason} (code {e.errno})' if isinstance(e, av.error.FFmpegError) and reason else str(e)


class _RemoteContainer:
  """A container read through a file object (object storage). For a long video FFmpeg asks for
  the byte ranges it needs (index, then the packets near each seek target) and the video is never
  downloaded whole. Closing it closes the file object too, which PyAV leaves open."""

  def __init__(self, container: av.container.InputContainer, file: Any):
    self._container, self._file = container, file

  def __getattr__(self, name: str) -> Any:
    return getattr(self._container, name)

  def close(self) -> None:
    try:
      self._container.close()
    finally:
      self._file.close()


# Opening costs what FFmpeg's stream probing decodes: by default several H.264 frames, to guess
# the reorder delay (3.1 ms of a 320p pair, 33 ms at 1080p; bench/loaders.py). Probing with no
# frame decoded and a minimal probe size reads the same headers and gives the same frames (and
# keeps rotation metadata, which 'nonkey' would drop); 0.2-0.3 ms per open.
_OPEN_OPTIONS = dict(options={'skip_frame': 'all'}, container_options={'probesize': '32'})


def open_video(path: str, threads: int = 1) -> av.container.InputContainer:
  """Opens a video (local or any fs URL), mapping every failure to a counted `BadInput` kind."""
  try:
    size = fs.size(path)
  except OSError:
    raise BadInput('missing', path) from None
  if size == 0:
    raise BadInput('empty', path)
  file = None
  try:
    if fs.is_url(path):
      # A short clip is fetched in one request; FFmpeg's seeks would cost ~10 round trips per
      # pair (bench/remote_decode.py). A long video is read by byte ranges instead.
      file = (io.BytesIO(fs.read_bytes(path)) if size <= REMOTE_WHOLE_FILE_BYTES
              else fs.open(path, 'rb'))
      container = _RemoteContainer(av.open(file, metadata_errors='ignore', **_OPEN_OPTIONS), file)
    else:
      container = av.open(path, metadata_errors='ignore', **_OPEN_OPTIONS)
  except (av.error.FFmpegError, UnicodeDecodeError, ValueError, OSError) as e:
    if file is not None:
      file.close()
    raise BadInput('unreadable', path, ffmpeg_cause(e)) from None
  if not container.streams.video:
    container.close()
    raise BadInput('unreadable', path, 'no video stream')
  stream = container.streams.video[0]
  # Slice threads help a single decode; frame threads add latency per seek. With one worker per
  # core (the usual setup) threads=1 is fastest; 0 lets FFmpeg pick.
  stream.codec_context.thread_count = threads
  stream.codec_context.thread_type = 'SLICE' if threads != 1 else 'NONE'
  return container


def probe(container: av.container.InputContainer, path: str = '') -> VideoInfo:
  """Start, duration and average rate of the first video stream.

  Duration comes from the stream header, else the container header, else (some webm/avi files) a
  demux-only pass over the packets, which reads the file but decodes nothing.
  """
  stream = container.streams.video[0]
  tb = stream.time_base
  start = float(stream.start_time * tb) if stream.start_time is not None else 0.0
  rate = stream.average_rate or stream.guessed_rate or stream.base_rate
  if stream.duration is not None and stream.duration > 0:
    duration, source = float(stream.duration * tb), 'stream'
  elif container.duration is not None and container.duration > 0:
    duration, source = container.duration / av.time_base - max(start, 0.0), 'container'
  else:
    last, count = None, 0
    for packet in container.demux(stream):
      if packet.pts is not None:
        count += 1
        end = packet.pts + (packet.duration or 0)
        last = end if last is None else max(last, end)
    container.seek(0, stream=stream)
    if last is None:
      raise BadInput('unreadable', path, 'no timestamped packets')
    duration, source = float(last * tb) - start, 'scan'
    if not rate and count:
      rate = count / max(duration, 1e-6)
  fps = float(rate) if rate else 25.0
  if stream.frames and duration > 0 and not rate:
    fps = stream.frames / duration
  return VideoInfo(start=start, duration=max(duration, 0.0), fps=fps, duration_from=source)


def _timestamp(obj) -> int | None:
  return obj.pts if obj.pts is not None else obj.dts


class _Cursor:
  """Resolves sorted target ticks to the last frame with pts <= target as frames come out."""

  def __init__(self, targets: Sequence[int]):
    self.targets = list(targets)
    self.results: list = [None] * len(targets)
    self.i = 0
    self.candidate = None
    self.last = None
    self.decoded = 0

  def done(self) -> bool:
    return self.i >= len(self.targets)

  def push(self, frame) -> None:
    self.decoded += 1
    pts = _timestamp(frame)
    if pts is None:  # no timestamps at all: frames arrive in order, count them instead
      pts = self.decoded - 1
    self.last = (frame, pts)
    while not self.done() and pts > self.targets[self.i]:
      # A target before the first decodable frame (e.g. before the stream start) gets that frame.
      self.results[self.i] = self.candidate or (frame, pts)
      self.i += 1
    if not self.done():
      self.candidate = (frame, pts)

  def finish(self) -> None:
    while not self.done():
      self.results[self.i] = self.candidate or self.last
      self.i += 1


class _ForwardDecoder:
  """The decoder side of `decode_at_times`: the packets demuxed since the last seek, which of them
  still wait for the decoder, and whether a frame can be skipped undecoded."""

  def __init__(self, container: av.container.InputContainer, cursor: _Cursor, skip_nonref: bool):
    self.container, self.cursor, self.skip_nonref = container, cursor, skip_nonref
    self.stream = container.streams.video[0]
    self.cc = self.stream.codec_context
    self.seen: list[int] = []  # pts of every packet demuxed since the last seek, sorted
    self.pending: list = []  # packets demuxed but not yet sent to the decoder
    self.live = False  # whether the decoder holds state that later packets depend on
    self.position = None  # dts of the last demuxed packet
    self.counters = {'demuxed': 0, 'sent': 0, 'seeks': 0}

  def feed(self, packet) -> None:
    self.counters['sent'] += 1
    pts, cursor = packet.pts, self.cursor
    skip = False
    if self.skip_nonref and pts is not None and not packet.is_keyframe:
      # The smallest unresolved target at or after this frame decides whether it can be the answer.
      k = bisect.bisect_left(cursor.targets, pts, lo=cursor.i)
      if k < len(cursor.targets):
        nxt = bisect.bisect_right(self.seen, pts)
        skip = nxt < len(self.seen) and self.seen[nxt] <= cursor.targets[k]
    self.cc.skip_frame = 'NONREF' if skip else 'DEFAULT'
    for frame in self.cc.decode(packet):
      cursor.push(frame)

  def send_pending(self) -> None:
    for p in self.pending:
      self.feed(p)
    self.pending, self.live = [], True

  def seek(self, tick: int) -> None:
    self.counters['seeks'] += 1
    self.container.seek(max(tick, 0), stream=self.stream, backward=True, any_frame=False)
    self.cc.flush_buffers()
    self.live, self.pending, self.seen = False, [], []

  def drain(self) -> None:
    """End of stream: decode what is pending, flush the decoder, resolve the remaining targets."""
    for p in self.pending:
      self.feed(p)
    self.cc.skip_frame = 'DEFAULT'
    for frame in self.cc.decode(None):
      self.cursor.push(frame)
    self.cursor.finish()

  def advance(self, target: int, far: float) -> bool:
    """Demuxes forward, decoding only from the last keyframe at or before each target, until the
    cursor is done or the next target is more than `far` ticks ahead (time to seek). Returns
    whether the stream ended."""
    for packet in self.container.demux(self.stream):
      if packet.size == 0:
        continue
      self.counters['demuxed'] += 1
      ts = _timestamp(packet)
      if ts is None:  # no timing information at all: decode everything in order
        self.feed(packet)
        self.live = True
        if self.cursor.done():
          return False
        continue
      if not self.live and not self.pending and not packet.is_keyframe:
        continue  # after a seek, decoding must start at a keyframe
      if packet.is_keyframe and packet.pts is not None and packet.pts <= target:
        # Everything before a keyframe at or before the target is unneeded: drop it undecoded.
        if self.live:
          self.cc.flush_buffers()
        self.pending, self.live = [], False
      self.pending.append(packet)
      bisect.insort(self.seen, packet.pts if packet.pts is not None else ts)
      self.position = packet.dts if packet.dts is not None else ts
      if self.position <= target:
        continue
      # No keyframe at or before the target can follow (pts >= dts): decode what is pending.
      self.send_pending()
      if self.cursor.done():
        return False
      target = self.cursor.targets[self.cursor.i]
      if target - self.position > far:
        return False  # the next target is far ahead: seek instead of demuxing
    return True


def decode_at_times(container: av.container.InputContainer, times: Sequence[float], *,
                    reseek_s: float = 5.0, skip_nonref: bool = True, path: str = '',
                    stats: dict[str, int] | None = None) -> list:
  """Decodes the frames shown at `times` (seconds, any order) in one forward pass.

  `stats`, if given, receives 'decoded' (frames out of the decoder), 'sent' (packets decoded or
  skipped by the decoder), 'demuxed' and 'seeks', to check that little of the clip is decoded.

  Returns, in the order of `times`, (av.VideoFrame, pts in seconds) tuples. Raises BadInput
  ('truncated') when the stream ends or breaks well before a requested time.
  """
  stream = container.streams.video[0]
  tb = stream.time_base
  order = np.argsort(times, kind='stable')
  # The epsilon keeps a time equal to a frame's exact timestamp on that frame (float division
  # can land a hair below it and return the previous frame).
  cursor = _Cursor([int(math.floor(float(times[j]) / float(tb) + 1e-6)) for j in order])
  decoder = _ForwardDecoder(container, cursor, skip_nonref)
  margin = int(0.5 / tb)  # mp4 seeks by dts, which trails pts by the B-frame delay
  far = reseek_s / tb
  start = stream.start_time or 0
  try:
    while not cursor.done():
      target = cursor.targets[cursor.i]
      if target - (start if decoder.position is None else decoder.position) > far:
        decoder.seek(target - margin)
      if decoder.advance(target, far):
        decoder.drain()
  except (av.error.FFmpegError, ValueError) as e:
    if cursor.last is None:
      raise BadInput('unreadable', path, ffmpeg_cause(e)) from None
    raise BadInput('truncated', path, f'decode error: {ffmpeg_cause(e)}') from None
  if stats is not None:
    stats.update(decoder.counters, decoded=cursor.decoded)
  return _in_request_order(cursor, order, tb, path)


def _in_request_order(cursor: _Cursor, order: np.ndarray, tb, path: str) -> list:
  """The cursor's (frame, pts in s) results in the caller's order; BadInput if a target has no
  frame or lies more than 1 s past the last decoded one (a truncated stream, not a short one)."""
  if cursor.last is None or any(r is None for r in cursor.results):
    raise BadInput('unreadable', path, 'no decodable frame')
  last_pts = cursor.last[1]
  for target in cursor.targets:
    if (target - last_pts) * tb > 1.0:
      raise BadInput('truncated', path, f'stream ends at {float(last_pts * tb):.2f}s')
  out = [None] * len(order)
  for j, (frame, pts) in zip(order, cursor.results):
    out[j] = (frame, float(pts * tb))
  return out


_REFORMATTERS = threading.local()


def _reformatter() -> av.video.reformatter.VideoReformatter:
  """This thread's swscale context: `to_ndarray` builds one per frame (0.5 ms of a 320p frame's
  0.6), a kept one is reused while the size and format stay the same. One per thread: decode
  threads of a Grain worker must not share one."""
  r = getattr(_REFORMATTERS, 'r', None)
  if r is None:
    r = _REFORMATTERS.r = av.video.reformatter.VideoReformatter()
  return r


def frame_to_rgb(frame: av.VideoFrame, max_side: int | None = None) -> np.ndarray:
  """HxWx3 uint8 RGB with the display rotation applied; downscaled in swscale if over `max_side`."""
  w, h = frame.width, frame.height
  if max_side and max(w, h) > max_side:
    s = max_side / max(w, h)
    img = _reformatter().reformat(frame, format='rgb24', width=max(int(w * s), 1),
                                  height=max(int(h * s), 1), interpolation='AREA',
                                  threads=1).to_ndarray()
  else:
    img = _reformatter().reformat(frame, format='rgb24', threads=1).to_ndarray()
  quarter = int(round((frame.rotation or 0) / 90)) % 4
  if quarter:
    img = np.ascontiguousarray(np.rot90(img, k=quarter))  # rotation is counterclockwise degrees
  return img


def frames_at_times(container: av.container.InputContainer, times: Sequence[float], *,
                    max_side: int | None = None, reseek_s: float = 5.0, skip_nonref: bool = True,
                    path: str = '', stats: dict[str, int] | None = None
                    ) -> tuple[list[np.ndarray], np.ndarray]:
  """uint8 RGB frames shown at `times` and the times of the frames decoded (seconds).

  The one decode path of every video reader (pretraining pairs, fine-tuning clips and test
  views): `decode_at_times`, then one RGB conversion per distinct frame (a frame may serve
  several times: pairs of a short clip, overlapping test views).
  """
  decoded = decode_at_times(container, times, reseek_s=reseek_s, skip_nonref=skip_nonref,
                            path=path, stats=stats)
  cache: dict[int, np.ndarray] = {}
  for frame, _ in decoded:
    if id(frame) not in cache:
      cache[id(frame)] = frame_to_rgb(frame, max_side)
  return [cache[id(frame)] for frame, _ in decoded], np.array([t for _, t in decoded])


def first_pts(container: av.container.InputContainer, default: float) -> float:
  """Presentation time (s) of the first packet, then back to the start.

  Usually the stream start; AVI with B-frames shows its first frame one tick after it, which
  would shift every frame index by one.
  """
  stream = container.streams.video[0]
  first = default
  for packet in container.demux(stream):
    if packet.size:
      if packet.is_keyframe and packet.pts is not None:
        first = float(packet.pts * stream.time_base)
      break
  container.seek(0, stream=stream)
  return first


def load_pairs(path: str, rng: np.random.Generator, sampling: PairSampling, k: int = 1, *,
               threads: int = 1, max_side: int | None = None, reseek_s: float = 5.0,
               skip_nonref: bool = True) -> tuple[list[tuple[np.ndarray, np.ndarray]], np.ndarray]:
  """Draws `k` frame pairs from one video with a single forward decode.

  Returns ([(frame_a, frame_b)] * k as uint8 RGB, times [k, 2] of the frames actually decoded).
  Raises BadInput for missing, empty, unreadable, truncated or too-short (< 2 frames) videos.
  """
  container = open_video(path, threads)
  try:
    try:
      info = probe(container, path)
    except av.error.FFmpegError as e:
      raise BadInput('unreadable', path, ffmpeg_cause(e)) from None
    if info.duration * info.fps < 1.5:
      raise BadInput('too_short', path, f'{info.duration:.3f}s at {info.fps:.1f} fps')
    times = sample_pair_times(rng, info.start, info.duration, info.fps, sampling, k)
    rgb, got = frames_at_times(container, times.reshape(-1), max_side=max_side,
                               reseek_s=reseek_s, skip_nonref=skip_nonref, path=path)
    got = got.reshape(k, 2)
    if k and np.all(got[:, 0] == got[:, 1]) and np.ptp(got) == 0:
      raise BadInput('too_short', path, 'a single distinct frame')
  finally:
    container.close()
  return [(rgb[2 * i], rgb[2 * i + 1]) for i in range(k)], got


def load_all_frames_naive(path: str, max_side: int | None = None) -> list[np.ndarray]:
  """Baseline of whole-clip readers: decode every frame and convert each to RGB (bench only)."""
  container = open_video(path)
  try:
    return [frame_to_rgb(f, max_side) for f in container.decode(video=0)]
  finally:
    container.close()
