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
   * What the agent gets on stdin before {@code action} and {@code nodename}: the fencedevice's
   * attributes with this element's attributes laid over them, as fenced merges them.
   */
  public AgentOptions agentOptions() {
    return device.options().overriddenBy(nodeOptions);
  }
}
