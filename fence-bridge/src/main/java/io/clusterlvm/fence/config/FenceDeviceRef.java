package io.clusterlvm.fence.config;

import java.util.Objects;

/**
 * A {@code <device name=.../>} inside a node's fence method: the shared {@link FenceDevice} plus
 * the attributes that select this node on it (port, plug, ...).
 *
 * @param device the {@code <fencedevice>} the element names (resolved at parse time)
 * @param nodeOptions the element's own attributes, except {@code name}
 */
public record FenceDeviceRef(FenceDevice device, AgentOptions nodeOptions) {
  /** The {@code action} values a cluster.conf may give a device. */
  public static final java.util.Set<String> ACTIONS = java.util.Set.of("off", "reboot");

  public FenceDeviceRef {
    Objects.requireNonNull(device, "device");
    Objects.requireNonNull(nodeOptions, "nodeOptions");
  }

  public String name() {
    return device.name();
  }

  public String agent() {
    return device.agent();
  }

  /**
   * Whether the device is to power the host on again once a fence confirmed it off: {@code
   * action="reboot"} on the device or its fencedevice, as with fenced, whose agents' default action
   * was reboot. The bridge still runs off and status first, and never reboot itself: a reboot's
   * success would not say that the host was seen off.
   */
  public boolean powersOnAfterFence() {
    return agentOptions().get("action").filter("reboot"::equals).isPresent();
  }

  /**
   * What the agent gets on stdin before {@code action} and {@code nodename}: the fencedevice's
   * attributes with this element's attributes laid over them, as fenced merges them.
   */
  public AgentOptions agentOptions() {
    return device.options().overriddenBy(nodeOptions);
  }
}
