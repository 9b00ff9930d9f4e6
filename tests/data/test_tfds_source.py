"""The TFDS source on a real (tiny) TFDS dataset prepared as ArrayRecord, as imagenet2012 would be."""
import pytest

from vicmae_jax import data
from vicmae_jax.data import images, synthetic

tfds = pytest.importorskip('tensorflow_datasets')


class TinyImages(tfds.core.GeneratorBasedBuilder):
  """Six small JPEG-encoded images with labels."""
  VERSION = tfds.core.Version('1.0.0')

  def _info(self):
    return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
        'image': tfds.features.Image(encoding_format='jpeg'),
        'label': tfds.features.ClassLabel(num_classes=3)}))

  def _split_generators(self, dl_manager):
    return {'train': self._generate_examples()}

  def _generate_examples(self):
    for i in range(6):
      kind = ['rgb_jpeg', 'gray_jpeg', 'rgb_jpeg'][i % 3]
      arr = images.decode_image(synthetic.image_bytes(kind, size=(48 + i, 40), seed=i))
      yield i, {'image': arr, 'label': i % 3}


def test_tfds_data_source(tmp_path):
  builder = TinyImages(data_dir=str(tmp_path))
  builder.download_and_prepare(file_format='array_record')
  cfg = dict(sources=[dict(kind='tfds', path='tiny_images', split='train', data_dir=str(tmp_path))],
             image_size=16, read_threads=1)
  it = data.make_pretrain_iterator(cfg, global_batch_size=4, seed=0, process_index=0,
                                   process_count=1)
  batch = next(it)
  assert batch['view1'].shape == (4, 16, 16, 3) and batch['is_video'].tolist() == [0] * 4
  assert it.metrics()['data/bad_fraction'] == 0
  # The same reader serves evaluation's labelled splits (one data layer).
  from vicmae_jax.evaluation import data as eval_data
  spec = dict(kind='tfds', name='tiny_images', train='train', val='train', data_dir=str(tmp_path))
  src = eval_data.build_source(spec, 'val')
  assert len(src) == 6 and src.num_classes == 3
  labels = sorted(src.get(i)[1] for i in range(6))
  assert labels == [0, 0, 1, 1, 2, 2] and src.get(0)[0].dtype.name == 'uint8'


def test_tfds_data_dir_in_a_bucket(tmp_path, gcs):
  """A TFDS dataset prepared locally and copied to a bucket is read from there (epath for the
  metadata, array_record's GCS client for the records)."""
  TinyImages(data_dir=str(tmp_path)).download_and_prepare(file_format='array_record')
  data_dir = gcs.url('tensorflow_datasets')
  gcs.upload_tree(str(tmp_path), data_dir)
  src = data.sources.TfdsImageSource('tiny_images', 'train', data_dir)
  local = data.sources.TfdsImageSource('tiny_images', 'train', str(tmp_path))
  assert len(src) == 6 and src.num_classes == 3
  for i in range(6):
    assert src.get(i)[1] == local.get(i)[1] and (src.get(i)[0] == local.get(i)[0]).all()
