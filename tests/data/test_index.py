"""Index readers: good files resolve; malformed ones fail before training with file and line."""
import json
import os

import pytest

from vicmae_jax.data import index

from conftest import write


def _kinetics_tree(tmp_path, names):
  for label, yid in names:
    write(str(tmp_path / 'videos' / label / f'{yid}_000010_000020.mp4'), b'x')
  return str(tmp_path / 'videos')


def test_kinetics_csv(tmp_path):
  root = _kinetics_tree(tmp_path, [('abseiling', 'aaa'), ('air drumming', 'bbb')])
  csv = write(str(tmp_path / 'train.csv'), b'label,youtube_id,time_start,time_end,split\n'
              b'abseiling,aaa,10,20,train\n"air drumming",bbb,10,20,train\n')
  idx = index.read_kinetics_csv(csv, root)
  assert [os.path.basename(p) for p in idx.paths] == ['aaa_000010_000020.mp4', 'bbb_000010_000020.mp4']
  assert idx.labels == (0, 1) and idx.classes == ('abseiling', 'air drumming')


def test_kinetics_errors_name_file_and_line(tmp_path):
  root = _kinetics_tree(tmp_path, [('a', 'aaa')])
  bad_header = write(str(tmp_path / 'h.csv'), b'label,id,start\na,aaa,10\n')
  with pytest.raises(index.IndexFormatError, match=r'h\.csv:1: missing column'):
    index.read_kinetics_csv(bad_header, root)
  bad_row = write(str(tmp_path / 'r.csv'), b'label,youtube_id,time_start,time_end,split\n'
                  b'a,aaa,10,20,train\na,bbb,ten,20,train\na,ccc,10\n')
  with pytest.raises(index.IndexFormatError) as e:
    index.read_kinetics_csv(bad_row, root)
  assert 'r.csv:3' in str(e.value) and 'r.csv:4' in str(e.value)
  missing = write(str(tmp_path / 'm.csv'), b'label,youtube_id,time_start,time_end,split\n'
                  b'a,aaa,10,20,train\na,zzz,10,20,train\n')
  with pytest.raises(index.IndexFormatError, match=r'm\.csv:3: file does not exist'):
    index.read_kinetics_csv(missing, root)
  assert len(index.read_kinetics_csv(missing, root, on_missing='skip')) == 1


def test_an_empty_index_file_says_so(tmp_path):
  root = _kinetics_tree(tmp_path, [('a', 'aaa')])
  empty = write(str(tmp_path / 'e.csv'), b'')
  with pytest.raises(index.IndexFormatError, match=r'e\.csv: the file is empty') as e:
    index.read_kinetics_csv(empty, root)
  assert 'header is []' not in str(e.value)
  with pytest.raises(index.IndexFormatError, match=r'no usable entries \(the file is empty\)'):
    index.read_path_csv(empty)


def test_path_csv_variants(tmp_path):
  for name in ('a.mp4', 'b.mp4', 'dir with space/c.mp4'):
    write(str(tmp_path / name), b'x')
  with_header = write(str(tmp_path / 'l1.csv'), b'path,label\na.mp4,3\nb.mp4,5\n')
  assert index.read_path_csv(with_header).labels == (3, 5)
  videomae = write(str(tmp_path / 'l2.csv'), b'a.mp4 0\nb.mp4 1\n')
  assert index.read_path_csv(videomae).labels == (0, 1)
  unlabelled = write(str(tmp_path / 'l3.csv'), b'a.mp4\ndir with space/c.mp4\n')
  idx = index.read_path_csv(unlabelled)
  assert idx.labels == (-1, -1) and idx.paths[1].endswith('dir with space/c.mp4')
  broken = write(str(tmp_path / 'l4.csv'), b'path,label\na.mp4,1\na.mp4,1,extra\n')
  with pytest.raises(index.IndexFormatError, match=r'l4\.csv:3'):
    index.read_path_csv(broken)
  missing = write(str(tmp_path / 'l5.csv'), b'a.mp4,1\nnope.mp4,2\n')
  with pytest.raises(index.IndexFormatError, match=r'l5\.csv:2: file does not exist'):
    index.read_path_csv(missing)


def test_ssv2_json(tmp_path):
  for i in (1, 2):
    write(str(tmp_path / 'videos' / f'{i}.webm'), b'x')
  labels = write(str(tmp_path / 'labels.json'), json.dumps(
      {'Pushing something from left to right': '0', 'Putting something on a surface': '1'}).encode())
  train = write(str(tmp_path / 'train.json'), json.dumps([
      {'id': '1', 'template': 'Pushing [something] from left to right'},
      {'id': '2', 'template': 'Putting [something] on a surface'}]).encode())
  idx = index.read_ssv2_json(train, str(tmp_path / 'videos'), labels)
  assert idx.labels == (0, 1)
  broken = write(str(tmp_path / 'b.json'), b'[{"id": "1"},\n {"id": ]')
  with pytest.raises(index.IndexFormatError, match=r'b\.json:2'):
    index.read_ssv2_json(broken, str(tmp_path / 'videos'))


def test_folders(tmp_path):
  for rel in ('cls_b/x.mp4', 'cls_a/y.mp4', 'cls_a/z.MP4', 'cls_a/notes.txt'):
    write(str(tmp_path / 'mit' / rel), b'x')
  idx = index.scan_folder(str(tmp_path / 'mit'), index.VIDEO_EXTENSIONS)
  assert len(idx) == 3 and idx.classes == ('cls_a', 'cls_b') and idx.labels == (0, 0, 1)
  write(str(tmp_path / 'flat' / 'a.jpg'), b'x')
  assert index.scan_folder(str(tmp_path / 'flat'), ('.jpg',)).labels == (-1,)
  with pytest.raises(index.IndexFormatError, match='no files'):
    index.scan_folder(str(tmp_path / 'flat'), ('.mp4',))


def test_read_index_is_the_one_factory(tmp_path):
  for rel in ('train/cls_a/y.mp4', 'train/cls_b/x.mp4', 'train/cls_c/w.mp4', 'val/cls_c/v.mp4'):
    write(str(tmp_path / rel), b'x')
  train = index.read_index({'kind': 'video_folder', 'path': str(tmp_path / 'train')})
  assert train.classes == ('cls_a', 'cls_b', 'cls_c') and train.labels == (0, 1, 2)
  # Alone, the val split would call cls_c class 0; numbered by the train split it is class 2.
  assert index.read_index({'kind': 'mit', 'path': str(tmp_path / 'val')}).labels == (0,)
  val = index.read_index({'kind': 'video_folder', 'path': str(tmp_path / 'val')},
                         classes=train.classes)
  assert val.labels == (2,) and val.classes == train.classes
  write(str(tmp_path / 'val/cls_z/u.mp4'), b'x')
  with pytest.raises(index.IndexFormatError, match='cls_z'):
    index.read_index({'kind': 'video_folder', 'path': str(tmp_path / 'val')},
                     classes=train.classes)
  with pytest.raises(ValueError, match='unknown index kind'):
    index.read_index({'kind': 'folder', 'path': str(tmp_path)})


def test_video_fine_tuning_val_split_uses_the_train_numbering(tmp_path):
  from vicmae_jax.evaluation import video_data
  for rel in ('train/a/1.mp4', 'train/b/2.mp4', 'val/b/3.mp4'):
    write(str(tmp_path / rel), b'x')
  spec = {'kind': 'video_folder', 'train': str(tmp_path / 'train'), 'val': str(tmp_path / 'val')}
  val = video_data.build_video_source(spec, 'val')
  assert val.index.labels == (1,) and val.num_classes == 2


def test_index_paths_stay_inside_their_root(tmp_path):
  """A Kinetics id or a CSV path that climbs out of the source root (or is absolute elsewhere)
  is an index error naming the line, unless the source allows paths outside its root."""
  root = _kinetics_tree(tmp_path, [('a', 'aaa')])
  write(str(tmp_path / 'outside' / 'escape_000010_000020.mp4'), b'x')
  write(str(tmp_path / 'secret.txt'), b'x')
  csv = write(str(tmp_path / 'k.csv'), b'label,youtube_id,time_start,time_end,split\n'
              b'a,aaa,10,20,train\na,../outside/escape,10,20,train\n')
  with pytest.raises(index.IndexFormatError, match=r'k\.csv:3: .* is outside the source root'):
    index.read_kinetics_csv(csv, root)
  lst = write(str(tmp_path / 'lists' / 'l.csv'),
              f'ok.mp4,0\n../secret.txt,0\n{tmp_path / "secret.txt"},1\n'.encode())
  write(str(tmp_path / 'lists' / 'ok.mp4'), b'x')
  with pytest.raises(index.IndexFormatError) as e:
    index.read_index(dict(kind='video_csv', path=lst))
  assert 'l.csv:2' in str(e.value) and 'l.csv:3' in str(e.value) and 'l.csv:1' not in str(e.value)
  allowed = index.read_index(dict(kind='video_csv', path=lst, allow_outside_root=True))
  assert len(allowed) == 3
  ssv2 = write(str(tmp_path / 's.json'), json.dumps([{'id': '../../x'}]).encode())
  with pytest.raises(index.IndexFormatError, match='outside the source root'):
    index.read_ssv2_json(ssv2, str(tmp_path / 'videos'))
