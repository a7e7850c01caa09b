package io.clusterlvm.bench;

import java.util.Map;

/**
 * A latency measurement that can run in chunks. The benchmark runs the chunks of all measurements
 * in rounds, rotating their order, so that a machine that gets busier or quieter during the run
 * (other jobs, JIT, GC, ZooKeeper snapshots) weighs on every system alike.
 */
interface Measurement {
  /** Where the summary goes in the JSON: e.g. {"uncontended", "dlm"}. */
  String[] key();

  /** What the progress line says. */
  String label();

  /** Runs {@code iterations} samples; keeps them only if {@code record} (else a warm-up). */
  void run(int iterations, boolean record) throws Exception;

  Map<String, Object> summary();
}
