package io.clusterlvm.bench;

import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.Map;

/** Latencies in nanoseconds, kept whole (runs are short enough) so percentiles are exact. */
final class Samples {
  private static final int MAX = 5_000_000;

  private long[] values = new long[1024];
  private int size;

  void add(long nanos) {
    if (size == values.length) {
      if (size >= MAX) {
        return; // bounded: a runaway phase cannot eat the heap
      }
      values = Arrays.copyOf(values, Math.min(MAX, size * 2));
    }
    values[size++] = nanos;
  }

  void addAll(Samples other) {
    for (int i = 0; i < other.size; i++) {
      add(other.values[i]);
    }
  }

  int size() {
    return size;
  }

  /** The q-quantile (nearest rank) in nanoseconds; 0 when empty. */
  long percentile(double q) {
    if (size == 0) {
      return 0;
    }
    long[] sorted = Arrays.copyOf(values, size);
    Arrays.sort(sorted);
    int rank = (int) Math.ceil(q * size) - 1;
    return sorted[Math.max(0, Math.min(size - 1, rank))];
  }

  double meanNanos() {
    if (size == 0) {
      return 0;
    }
    double sum = 0;
    for (int i = 0; i < size; i++) {
      sum += values[i];
    }
    return sum / size;
  }

  static double micros(long nanos) {
    return nanos / 1_000.0;
  }

  /** n, mean, p50, p90, p99, max in microseconds, for the JSON report. */
  Map<String, Object> summary() {
    Map<String, Object> m = new LinkedHashMap<>();
    m.put("n", size);
    m.put("mean_us", round(meanNanos() / 1_000.0));
    m.put("p50_us", round(micros(percentile(0.50))));
    m.put("p90_us", round(micros(percentile(0.90))));
    m.put("p99_us", round(micros(percentile(0.99))));
    m.put("max_us", round(micros(percentile(1.0))));
    return m;
  }

  static double round(double v) {
    return Math.round(v * 10.0) / 10.0;
  }

  static double round2(double v) {
    return Math.round(v * 100.0) / 100.0;
  }
}
