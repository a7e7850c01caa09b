package io.clusterlvm.fence.config;

import java.time.Duration;
import java.util.Objects;

/**
 * The {@code <fence_daemon/>} settings the bridge honours.
 *
 * @param postFailDelay how long a failed node stays FAILED before it is fenced, giving it a chance
 *     to come back (fenced's {@code post_fail_delay}, default 0)
 * @param postJoinDelay how long after a node joins the fence domain before members that have not
 *     joined are fenced (fenced's {@code post_join_delay}, default 6 s)
 */
public record FenceDaemonOptions(Duration postFailDelay, Duration postJoinDelay) {
  /** fenced's defaults. */
  public static final FenceDaemonOptions DEFAULTS =
      new FenceDaemonOptions(Duration.ZERO, Duration.ofSeconds(6));

  public FenceDaemonOptions {
    Objects.requireNonNull(postFailDelay, "postFailDelay");
    Objects.requireNonNull(postJoinDelay, "postJoinDelay");
    if (postFailDelay.isNegative() || postJoinDelay.isNegative()) {
      throw new IllegalArgumentException("fence_daemon delays must not be negative");
    }
  }
}
