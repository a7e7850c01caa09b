package io.clusterlvm.fence.config;

import java.util.List;
import java.util.Objects;

/**
 * A {@code <method>}: a way to fence a node. Methods are tried in order; within one method every
 * device must succeed (e.g. both power supplies of one host).
 */
public record FenceMethod(String name, List<FenceDeviceRef> devices) {
  public FenceMethod {
    Objects.requireNonNull(name, "name");
    devices = List.copyOf(devices);
    if (devices.stream().noneMatch(FenceDeviceRef::switchesOff)) {
      // Such a method would "succeed" without switching anything off.
      throw new IllegalArgumentException(
          "fence method " + name + " has no device that switches off");
    }
  }

  /** The devices a fence switches off, in order: all but those that are only switched on again. */
  public List<FenceDeviceRef> offDevices() {
    return devices.stream().filter(FenceDeviceRef::switchesOff).toList();
  }

  /** The devices switched on again once the host is fenced (action "reboot" or "on"), in order. */
  public List<FenceDeviceRef> onDevices() {
    return devices.stream().filter(FenceDeviceRef::powersOnAfterFence).toList();
  }
}
