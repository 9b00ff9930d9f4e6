"""Frame extraction, engine-free part: plans, idempotent shards, exactly-once summaries, progress."""
import json
import os

import pytest

from vicmae_jax.data import index as index_lib, records, synthetic
from vicmae_jax.tools import extract_frames, extraction


def _index(root, n=4):
  os.makedirs(root, exist_ok=True)
  paths = []
  for i in range(n):
    path = os.path.join(root, f'v{i}.mp4')
    synthetic.write_video(path, num_frames=30, fps=15, seed=i)
    paths.append(path)
  return index_lib.Index(tuple(paths), tuple(range(n)))


def _records(path):
  from array_record.python.array_record_module import ArrayRecordReader
  reader = ArrayRecordReader(path)
  out = [reader.read([k])[0] for k in range(reader.num_records())]
  reader.close()
  return out


def test_a_shard_is_the_same_bytes_however_often_it_is_written(tmp_path):
  idx = _index(str(tmp_path / 'v'))
  plan = extraction.make_plan(idx, extraction.Options(frames_per_video=4, videos_per_shard=2))
  out = str(tmp_path / 'out')
  assert extraction.prepare(out, plan) == [0, 1]
  first = extraction.write_shard(out, plan, 1)
  shard = extraction.shard_name(out, 1, 2)
  before = _records(shard)
  second = extraction.write_shard(out, plan, 1)  # a retry, or a speculative second attempt
  assert _records(shard) == before and len(before) == 2
  assert (first.written, first.frames, first.bytes) == (second.written, second.frames,
                                                         second.bytes) == (2, 8, first.bytes)
  assert sorted(os.listdir(out)) == ['extract_plan.json', 'frames-00001-of-00002.array_record',
                                     'stats-00001.json']
  assert extraction.prepare(out, plan) == [0]
  header, jpegs = records.decode_record(before[0])
  assert header['label'] == 2 and len(jpegs) == 4


def test_an_attempt_that_dies_leaves_no_shard_and_no_stats(tmp_path, monkeypatch):
  idx = _index(str(tmp_path / 'v'), n=2)
  plan = extraction.make_plan(idx, extraction.Options(frames_per_video=4, videos_per_shard=2))
  out = str(tmp_path / 'out')
  extraction.prepare(out, plan)

  def dies(stats, kind, size):
    if stats.written == 1:
      raise KeyboardInterrupt  # a preempted worker: not an error the shard loop may swallow

  with pytest.raises(KeyboardInterrupt):
    extraction.write_shard(out, plan, 0, tick=dies)
  assert os.listdir(out) == ['extract_plan.json']  # no partial shard, no temporary file
  assert extraction.prepare(out, plan) == [0]
  summary = extraction.summarize(out, plan)
  assert summary['missing_shards'] == [0] and summary['written'] == 0


def test_a_folder_with_another_plan_is_refused_with_the_difference(tmp_path):
  idx = _index(str(tmp_path / 'v'), n=3)
  out = str(tmp_path / 'out')
  extraction.prepare(out, extraction.make_plan(idx, extraction.Options(videos_per_shard=2)))
  with pytest.raises(ValueError, match='frames_per_video: 16 then, 8 now'):
    extraction.prepare(out, extraction.make_plan(idx, extraction.Options(frames_per_video=8,
                                                                          videos_per_shard=2)))
  fewer = index_lib.Index(idx.paths[:2], idx.labels[:2])
  with pytest.raises(ValueError, match=r'3 videos then, 2 now; 0 added, 1 removed'):
    extraction.prepare(out, extraction.make_plan(fewer, extraction.Options(videos_per_shard=2)))


def test_the_summary_counts_each_video_once_and_lists_index_misses(tmp_path):
  root = str(tmp_path / 'v')
  _index(root, n=3)
  with open(os.path.join(root, 'empty.mp4'), 'wb'):
    pass
  csv = tmp_path / 'list.csv'
  csv.write_text(''.join(f'{n} 0\n' for n in ('v0.mp4', 'gone.mp4', 'v1.mp4', 'empty.mp4',
                                                'v2.mp4')))
  out = str(tmp_path / 'out')
  args = ['--kind', 'video_csv', '--path', str(csv), '--root', root, '--out', out,
          '--frames_per_video', '4', '--videos_per_shard', '2', '--workers', '1']
  summary = extract_frames.main(args)
  assert (summary['videos'], summary['written'], summary['frames']) == (5, 3, 12)
  assert summary['bad'] == {'empty': 1, 'missing': 1} and summary['missing_shards'] == []
  report = (tmp_path / 'out' / 'bad_videos.tsv').read_text().splitlines()
  assert report[0] == 'path\tkind\tdetail' and len(report) == 3
  assert report[1].startswith(os.path.join(root, 'gone.mp4') + '\tmissing\tlisted at ')
  assert report[1].endswith('list.csv:2; not found when the index was read')
  assert report[2] == os.path.join(root, 'empty.mp4') + '\tempty\t'
  os.remove(extraction.shard_name(out, 0, 2))
  again = extract_frames.main(args)  # redoes shard 0 alone; counts stay exact
  assert {k: again[k] for k in ('videos', 'written', 'frames', 'bytes', 'bad')} == {
      k: summary[k] for k in ('videos', 'written', 'frames', 'bytes', 'bad')}
  assert again['shards_this_run'] == 1


def test_beam_options_need_the_beam_engine(tmp_path):
  with pytest.raises(SystemExit):
    extract_frames.parse_args(['--kind', 'video_folder', '--path', 'x', '--out', 'y',
                               '--runner', 'DataflowRunner'])
  args, rest = extract_frames.parse_args(['--kind', 'video_folder', '--path', 'x', '--out', 'y',
                                          '--engine', 'beam', '--runner', 'DataflowRunner'])
  assert args.engine == 'beam' and rest == ['--runner', 'DataflowRunner']


def test_progress_line_counts_finished_and_running_shards(tmp_path):
  idx = _index(str(tmp_path / 'v'), n=3)
  plan = extraction.make_plan(idx, extraction.Options(frames_per_video=4, videos_per_shard=2))
  out = str(tmp_path / 'out')
  pending = extraction.prepare(out, plan)
  watcher = extraction.Watcher(out, plan, pending)
  assert watcher.line().startswith('extract: 0/3 videos (0.0%)')
  extraction.write_shard(out, plan, 0)
  progress = extraction.ProgressFile(out, 1, every_s=0.0)
  progress(extraction.ShardStats(shard=1, videos=1, written=0, bad=[('x', 'empty', '')]),
           'empty', 0)
  line = watcher.line()
  assert line.startswith('extract: 3/3 videos (100.0%)') and ', 1 bad,' in line
  assert 'videos/s' in line and 'ETA' in line
  json.loads((tmp_path / 'out' / 'stats-00000.json').read_text())


def test_output_of_the_earlier_layout_is_continued(tmp_path):
  """Shards written before plans and stats files existed (report-IIIII.tsv beside them) are
  adopted when the shard count matches: counted from their records, their reports kept."""
  idx = _index(str(tmp_path / 'v'), n=3)
  out = str(tmp_path / 'out')
  args = ['--kind', 'video_folder', '--path', str(tmp_path / 'v'), '--out', out,
          '--frames_per_video', '4', '--videos_per_shard', '2', '--workers', '1']
  first = extract_frames.main(args)
  for name in ('extract_plan.json', 'stats-00000.json', 'stats-00001.json', 'summary.json'):
    os.remove(os.path.join(out, name))
  (tmp_path / 'out' / 'report-00001.tsv').write_text('/x/old.mp4\tempty\t\n')
  again = extract_frames.main(args)
  assert again['shards_this_run'] == 0 and again['written'] == first['written'] == 3
  assert again['frames'] == first['frames'] and again['bytes'] == first['bytes']
  assert again['bad'] == {'empty': 1}  # the old report's line, kept
  assert len(idx) == 3
  other = ['--kind', 'video_folder', '--path', str(tmp_path / 'v'), '--out', out,
           '--videos_per_shard', '1', '--workers', '1']
  os.remove(os.path.join(out, 'extract_plan.json'))
  with pytest.raises(ValueError, match='holds shards of another run'):
    extract_frames.main(other)


def test_the_beam_engine_without_beam_says_how_to_install_it(tmp_path, monkeypatch):
  import sys

  import vicmae_jax.tools
  # As if Beam were absent: the module cannot be imported (and is not already an attribute of
  # the package, as it is once another test imported it).
  monkeypatch.setitem(sys.modules, 'vicmae_jax.tools.extract_beam', None)
  monkeypatch.delattr(vicmae_jax.tools, 'extract_beam', raising=False)
  with pytest.raises(SystemExit, match=r'pip install -e "\.\[beam\]"'):
    extract_frames.main(['--kind', 'video_folder', '--path', str(tmp_path), '--out',
                         str(tmp_path / 'out'), '--engine', 'beam'])
