package io.clusterlvm.fence.agent;

import java.util.Locale;

/** What a fence agent is asked to do, as the {@code action=} option of fence-agents. */
public enum FenceAction {
  OFF,
  ON,
  REBOOT,
  /** Query power: the agent exits 0 for on, 2 for off, anything else for failure. */
  STATUS;

  /** The value the agent reads, e.g. {@code off}. */
  public String agentValue() {
    return name().toLowerCase(Locale.ROOT);
  }
}
