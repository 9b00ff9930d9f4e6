"""Frame extraction on Apache Beam's DirectRunner (worker processes): the same shards as the local
pool, record for record; resumable; every bad file reported once; local folders and gs://."""
import os

import numpy as np
import pytest

pytest.importorskip('apache_beam')

from vicmae_jax import fs  # noqa: E402
from vicmae_jax.data import sources, synthetic, video  # noqa: E402
from vicmae_jax.tools import extract_beam, extract_frames, extraction  # noqa: E402


def _audio_only(path):
  """An AAC track in an MP4 with no video stream (a real file class in Kinetics mirrors)."""
  import fractions

  import av
  container = av.open(path, 'w')
  stream = container.add_stream('aac', rate=16000)
  stream.layout = 'mono'
  for i in range(10):
    frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format='fltp',
                                       layout='mono')
    frame.sample_rate, frame.pts, frame.time_base = 16000, i * 1024, fractions.Fraction(1, 16000)
    for packet in stream.encode(frame):
      container.mux(packet)
  for packet in stream.encode():
    container.mux(packet)
  container.close()


@pytest.fixture(scope='module')
def videos(tmp_path_factory):
  """Six good H.264 clips and three bad files, listed in a CSV that also names a missing one."""
  root = tmp_path_factory.mktemp('videos')
  names = []
  for i in range(6):
    synthetic.write_video(str(root / f'good{i}.mp4'), num_frames=36, fps=12, seed=i)
    names.append(f'good{i}.mp4')
  synthetic.write_video(str(root / 'long.mp4'), num_frames=120, fps=30, width=128, height=96)
  payload = (root / 'long.mp4').read_bytes()
  (root / 'truncated.mp4').write_bytes(payload[:len(payload) // 2])  # cut: no moov atom
  (root / 'empty.mp4').write_bytes(b'')
  _audio_only(str(root / 'audio_only.mp4'))
  names[2:2] = ['truncated.mp4', 'gone.mp4']
  names[5:5] = ['empty.mp4', 'audio_only.mp4']
  csv = root / 'train.csv'
  csv.write_text(''.join(f'{n} {i % 3}\n' for i, n in enumerate(names)))
  return str(root), str(csv)


def _args(videos, out, *more):
  root, csv = videos
  return ['--kind', 'video_csv', '--path', csv, '--root', root, '--out', out,
          '--frames_per_video', '6', '--short_side', '0', '--videos_per_shard', '3',
          '--progress_every_s', '0.5', *more]


def _all_records(out):
  shards = sorted(fs.join(out, f) for f in fs.listdir(out) if f.endswith('.array_record'))
  return shards, [list(r) for r in map(_read, shards)]


def _read(path):
  import grain
  ds = grain.sources.ArrayRecordDataSource([path])
  return [ds[k] for k in range(len(ds))]


def test_beam_writes_the_pools_shards_resumes_and_reports_each_bad_file_once(videos, tmp_path,
                                                                              capsys):
  pool_out, beam_out = str(tmp_path / 'pool'), str(tmp_path / 'beam')
  pool = extract_frames.main(_args(videos, pool_out, '--workers', '1'))
  beam = extract_frames.main(_args(videos, beam_out, '--engine', 'beam', '--workers', '2'))
  err = capsys.readouterr().err
  assert 'extract: 9/9 videos (100.0%)' in err and 'videos/s' in err and 'ETA' in err

  # Same shards, record for record (names, count, bytes).
  pool_shards, pool_records = _all_records(pool_out)
  beam_shards, beam_records = _all_records(beam_out)
  assert [os.path.basename(s) for s in beam_shards] == [os.path.basename(s) for s in pool_shards]
  assert len(beam_shards) == 3 and sum(map(len, beam_records)) == 6
  assert beam_records == pool_records
  keys = ('videos', 'written', 'frames', 'bytes', 'bad', 'shards', 'missing_shards', 'plan')
  assert {k: beam[k] for k in keys} == {k: pool[k] for k in keys}
  assert (beam['videos'], beam['written'], beam['frames']) == (10, 6, 36)
  assert beam['bad'] == {'empty': 1, 'missing': 1, 'unreadable': 2}
  assert beam['engine'] == 'beam/DirectRunner' and pool['engine'] == 'pool'
  # Beam's counters saw the nine videos the pipeline opened (the missing one never reached it).
  assert beam['beam_counters']['videos'] == 9 and beam['beam_counters']['shards'] == 3
  assert beam['beam_counters']['frames'] == 36 and beam['beam_counters']['bad_empty'] == 1

  # The report: each bad file once, with its cause, in index order.
  rows = [line.split('\t') for line in
          (tmp_path / 'beam' / 'bad_videos.tsv').read_text().splitlines()[1:]]
  assert [(os.path.basename(p), k) for p, k, _ in rows] == [
      ('gone.mp4', 'missing'), ('truncated.mp4', 'unreadable'), ('empty.mp4', 'empty'),
      ('audio_only.mp4', 'unreadable')]
  causes = {os.path.basename(p): d for p, _, d in rows}
  assert causes['audio_only.mp4'] == 'no video stream' and 'Invalid data' in causes['truncated.mp4']
  assert 'train.csv:4' in causes['gone.mp4']

  # The trainer's frames source reads the shards.
  source = sources.build_source(dict(kind='frames', path=beam_out), sampling=video.PairSampling())
  assert len(source) == 6
  (a, b), = source.load(5, np.random.default_rng(0), 1)
  assert synthetic.read_index(a) < 18 <= synthetic.read_index(b)

  # A second run after losing one shard rewrites that shard alone; the summary is unchanged.
  stamps = {s: os.stat(s).st_mtime_ns for s in beam_shards}
  os.remove(beam_shards[2])
  again = extract_frames.main(_args(videos, beam_out, '--engine', 'beam', '--workers', '2'))
  assert {s: os.stat(s).st_mtime_ns for s in beam_shards if s != beam_shards[2]} == {
      s: t for s, t in stamps.items() if s != beam_shards[2]}
  assert _all_records(beam_out)[1] == pool_records
  assert {k: again[k] for k in keys} == {k: beam[k] for k in keys}
  assert again['shards_this_run'] == 1 and again['beam_counters']['shards'] == 1
  assert not os.path.exists(os.path.join(beam_out, extraction.PROGRESS_DIR))


def test_beam_from_a_bucket_to_a_bucket(videos, gcs):
  root, _ = videos
  src = gcs.url('beam_src', 'videos', 'cls')
  for name in ('good0.mp4', 'good1.mp4', 'empty.mp4', 'good2.mp4'):
    fs.copy_file(os.path.join(root, name), f'{src}/{name}')
  out = gcs.url('beam_out', 'frames')
  args = ['--kind', 'video_folder', '--path', gcs.url('beam_src', 'videos'), '--out', out,
          '--frames_per_video', '4', '--videos_per_shard', '2', '--engine', 'beam',
          '--workers', '1']
  summary = extract_frames.main(args)
  assert (summary['videos'], summary['written'], summary['bad']) == (4, 3, {'empty': 1})
  assert sorted(f for f in fs.listdir(out) if f.endswith('.array_record')) == [
      'frames-00000-of-00002.array_record', 'frames-00001-of-00002.array_record']
  assert 'empty.mp4\tempty' in fs.read_text(f'{out}/bad_videos.tsv')
  source = sources.build_source(dict(kind='frames', path=out), sampling=video.PairSampling())
  assert len(source) == 3


def test_pipeline_options_default_to_a_multiprocess_direct_runner():
  from apache_beam.options.pipeline_options import DirectOptions, StandardOptions
  options = extract_beam.pipeline_options([], workers=3)
  assert options.view_as(StandardOptions).runner == 'DirectRunner'
  direct = options.view_as(DirectOptions)
  assert (direct.direct_num_workers, direct.direct_running_mode) == (3, 'multi_processing')
  dataflow = extract_beam.pipeline_options(['--runner', 'DataflowRunner', '--project', 'p'], 3)
  assert dataflow.view_as(StandardOptions).runner == 'DataflowRunner'
