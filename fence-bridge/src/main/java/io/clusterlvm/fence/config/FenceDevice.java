package io.clusterlvm.fence.config;

import java.util.Objects;

/**
 * A {@code <fencedevice/>}: a power switch, BMC or PDU and how to reach it.
 *
 * @param name the name {@code <device name=...>} elements refer to
 * @param agent the fence-agents executable, e.g. {@code fence_ipmilan}, or an absolute path
 * @param options every other attribute (ipaddr, login, passwd_script, ...); secrets are masked in
 *     {@link #toString()}
 */
public record FenceDevice(String name, String agent, AgentOptions options) {
  public FenceDevice {
    Objects.requireNonNull(name, "name");
    Objects.requireNonNull(agent, "agent");
    Objects.requireNonNull(options, "options");
  }
}
