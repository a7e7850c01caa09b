package io.clusterlvm.fence.config;

import java.util.Locale;
import java.util.Objects;
import java.util.Optional;
import java.util.Set;

/**
 * A {@code <device name=.../>} inside a node's fence method: the shared {@link FenceDevice} plus
 * the attributes that select this node on it (port, plug, ...).
 *
 * @param device the {@code <fencedevice>} the element names (resolved at parse time)
 * @param nodeOptions the element's own attributes, except {@code name}
 */
public record FenceDeviceRef(FenceDevice device, AgentOptions nodeOptions) {
  /**
   * What a fence does with the device, by the {@code action} cluster.conf gives it (on the device
   * or its fencedevice): fenced handed that to the agent, whose default was reboot. The bridge
   * itself never asks an agent for reboot, whose success would not say that the host was seen off.
   */
  public enum Role {
    /** No action, or "off": switched off, then its status must say OFF. The host stays off. */
    OFF,
    /** "reboot": as OFF, then switched on again once the host is on record as fenced. */
    OFF_THEN_ON,
    /**
     * "on": only switched on again then, after the other devices of the method switched the host
     * off. The second half of the classic two-power-supply method (off, off, on, on).
     */
    ON_AFTER
  }

  /** The attributes that give the action: {@code option} is its older spelling (RHEL 5). */
  public static final Set<String> ACTION_KEYS = Set.of("action", "option");

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

  /** Whether {@code action} is one a cluster.conf may give (case does not matter). */
  public static boolean isKnownAction(String action) {
    return roleOf(action).isPresent();
  }

  /** The device's role; an action the bridge does not know counts as off (the parser warns). */
  public Role role() {
    AgentOptions o = agentOptions();
    return o.get("action")
        .or(() -> o.get("option"))
        .flatMap(FenceDeviceRef::roleOf)
        .orElse(Role.OFF);
  }

  /** Whether a fence switches the device off (and checks its status). */
  public boolean switchesOff() {
    return role() != Role.ON_AFTER;
  }

  /** Whether the device is switched on again once the host is on record as fenced. */
  public boolean powersOnAfterFence() {
    return role() != Role.OFF;
  }

  /** Whether {@code other} is the same outlet: the same device with the same options but action. */
  public boolean sameOutletAs(FenceDeviceRef other) {
    return name().equals(other.name())
        && agentOptions().without(ACTION_KEYS).equals(other.agentOptions().without(ACTION_KEYS));
  }

  private static Optional<Role> roleOf(String action) {
    return switch (action.strip().toLowerCase(Locale.ROOT)) {
      case "off" -> Optional.of(Role.OFF);
      case "reboot" -> Optional.of(Role.OFF_THEN_ON);
      case "on" -> Optional.of(Role.ON_AFTER);
      default -> Optional.empty();
    };
  }

  /**
   * What the agent gets on stdin before {@code action} and {@code nodename}: the fencedevice's
   * attributes with this element's attributes laid over them, as fenced merges them.
   */
  public AgentOptions agentOptions() {
    return device.options().overriddenBy(nodeOptions);
  }
}
