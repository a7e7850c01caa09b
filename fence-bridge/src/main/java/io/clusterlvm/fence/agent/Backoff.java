package io.clusterlvm.fence.agent;

import java.time.Duration;
import java.util.Objects;

/**
 * Exponential back-off between fence rounds: {@code initial}, then times {@code multiplier} per
 * further failure, never more than {@code max}. A fencer retries a node for as long as it stays
 * FENCING, so the delay is capped rather than the number of tries.
 */
public record Backoff(Duration initial, Duration max, double multiplier) {

  /** 5 s, 10 s, 20 s, 40 s, then every 60 s. */
  public static final Backoff DEFAULT =
      new Backoff(Duration.ofSeconds(5), Duration.ofSeconds(60), 2);

  public Backoff {
    Objects.requireNonNull(initial, "initial");
    Objects.requireNonNull(max, "max");
    if (initial.isNegative() || max.compareTo(initial) < 0) {
      throw new IllegalArgumentException("need 0 <= initial <= max, got " + initial + ", " + max);
    }
    if (!(multiplier >= 1.0) || Double.isInfinite(multiplier)) {
      throw new IllegalArgumentException("multiplier must be a finite number >= 1: " + multiplier);
    }
  }

  /**
   * The delay before retry number {@code failures} (1 after the first failed round).
   *
   * @throws IllegalArgumentException if {@code failures < 1}
   */
  public Duration delayAfter(int failures) {
    if (failures < 1) {
      throw new IllegalArgumentException("failures must be >= 1: " + failures);
    }
    double nanos = initial.toNanos() * Math.pow(multiplier, failures - 1);
    // Comparing as double first keeps a large failure count from overflowing a long.
    return nanos >= max.toNanos() ? max : Duration.ofNanos((long) nanos);
  }
}
