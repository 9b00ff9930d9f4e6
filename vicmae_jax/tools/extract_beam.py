"""Frame extraction as an Apache Beam pipeline (DirectRunner on one machine; Dataflow, Flink or
Spark with their usual pipeline options). Run it through `extract_frames --engine beam`.

    Create(pending shard ids) -> Reshuffle -> ParDo(ExtractShard) -> Count -> Map(Summarize)

A shard is the unit of work: `ExtractShard` calls `extraction.write_shard`, the same function the
local pool calls, so there is one implementation of a record and of a shard. The plan (which
videos go to which shard) is a file in OUT that workers read once, so the pipeline graph carries
shard numbers only, whatever the index size. Counters (namespace `extract_frames`: videos,
frames, bytes, shards, bad_<kind>) move per video, which is what Dataflow's job page shows while
the job runs. The summary and the bad-files report are the pipeline's last step, from the shards'
stats files: each video is counted once even when a runner retries a shard (Beam counters count
attempts).

Files are read and written through `vicmae_jax.fs` (local paths and gs:// through fsspec/gcsfs),
the same layer the trainer reads the shards with.
"""
from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.options.pipeline_options import DirectOptions, PipelineOptions, StandardOptions

from vicmae_jax.tools import extraction

NAMESPACE = 'extract_frames'
load_plan = extraction.load_plan


class ExtractShard(beam.DoFn):
  """Shard number -> the shard written to OUT; yields its stats as a dict."""

  def __init__(self, out: str, fingerprint: str):
    self.out, self.fingerprint = out, fingerprint
    self.videos = Metrics.counter(NAMESPACE, 'videos')
    self.frames = Metrics.counter(NAMESPACE, 'frames')
    self.bytes = Metrics.counter(NAMESPACE, 'bytes')
    self.shards = Metrics.counter(NAMESPACE, 'shards')
    self.shard_seconds = Metrics.distribution(NAMESPACE, 'shard_seconds')

  def setup(self) -> None:
    self.plan = load_plan(self.out, self.fingerprint)
    if self.plan.fingerprint() != self.fingerprint:  # OUT was reused while the job was queued
      raise RuntimeError(f'{self.out}/{extraction.PLAN} changed after the job was submitted')

  def process(self, i: int):
    progress = extraction.ProgressFile(self.out, i)
    frames_before = [0]

    def tick(stats: extraction.ShardStats, kind: str | None, size: int) -> None:
      self.videos.inc()
      if kind is None:
        self.frames.inc(stats.frames - frames_before[0])
        self.bytes.inc(size)
      else:
        Metrics.counter(NAMESPACE, f'bad_{kind}').inc()
      frames_before[0] = stats.frames
      progress(stats, kind, size)

    stats = extraction.write_shard(self.out, self.plan, i, tick=tick)
    self.shards.inc()
    self.shard_seconds.update(int(stats.seconds * 1000))
    yield {'shard': stats.shard, 'written': stats.written, 'bad': len(stats.bad)}


def _summarize(count: int, out: str, started: float, extra: dict[str, Any]) -> dict[str, Any]:
  return extraction.summarize(out, load_plan(out), seconds=time.time() - started,
                              extra={**extra, 'shards_this_run': count})


def build(pipeline: beam.Pipeline, out: str, plan: extraction.Plan, pending: Sequence[int],
          engine: str) -> beam.PCollection:
  """Adds the extraction to `pipeline`; returns the PCollection holding the summary dict."""
  return (pipeline
          | 'Pending shards' >> beam.Create(list(pending))
          | 'Spread over workers' >> beam.Reshuffle()
          | 'Extract shard' >> beam.ParDo(ExtractShard(out, plan.fingerprint()))
          | 'Count shards' >> beam.combiners.Count.Globally()
          | 'Summarize' >> beam.Map(_summarize, out=out, started=time.time(),
                                  extra={'engine': engine}))


def pipeline_options(args: Sequence[str], workers: int) -> PipelineOptions:
  """The user's Beam options; with no --runner, the DirectRunner with `workers` processes."""
  options = PipelineOptions(list(args))
  if options.get_all_options()['default_sdk_harness_log_level'] is None:
    # Workers' INFO lines (channels opened, bundles done) would bury the progress line.
    options = PipelineOptions(list(args) + ['--default_sdk_harness_log_level=WARNING'])
  standard = options.view_as(StandardOptions)
  if not standard.runner:
    standard.runner = 'DirectRunner'
    direct = options.view_as(DirectOptions)
    if workers > 1:
      direct.direct_num_workers = workers
      direct.direct_running_mode = 'multi_processing'
  return options


def run(out: str, plan: extraction.Plan, pending: Sequence[int], args: Sequence[str],
        workers: int) -> dict[str, int]:
  """Runs the pipeline to the end; returns the committed counters (empty where a runner has none)."""
  options = pipeline_options(args, workers)
  runner = options.view_as(StandardOptions).runner
  pipeline = beam.Pipeline(options=options)
  build(pipeline, out, plan, pending, engine=f'beam/{runner}')
  result = pipeline.run()
  result.wait_until_finish()
  state = str(result.state)
  if 'DONE' not in state:
    raise RuntimeError(f'the Beam pipeline ended in state {state}')
  counters = {}
  try:
    for c in result.metrics().query(beam.metrics.MetricsFilter().with_namespace(NAMESPACE))[
        'counters']:
      counters[c.key.metric.name] = counters.get(c.key.metric.name, 0) + c.committed
  except (NotImplementedError, AttributeError, KeyError):
    pass
  return counters
