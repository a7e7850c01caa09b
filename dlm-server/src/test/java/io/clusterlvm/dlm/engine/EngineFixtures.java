package io.clusterlvm.dlm.engine;

import java.time.Clock;
import java.time.Instant;
import java.time.ZoneOffset;
import java.util.HexFormat;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/** Shared helpers for the lock engine tests. */
final class EngineFixtures {
  static final Clock CLOCK = Clock.fixed(Instant.parse("2024-05-01T12:00:00Z"), ZoneOffset.UTC);

  private EngineFixtures() {}

  /**
   * A {@link ResourceView} with its value block as hex, so that two snapshots compare with equals()
   * (a record compares arrays by identity).
   */
  record ResourceSnapshot(
      ResourceKey key,
      String valueBlock,
      boolean valueBlockValid,
      List<LockView> granted,
      List<LockView> converting,
      List<LockView> waiting) {}

  static ResourceSnapshot snapshot(ResourceView v) {
    return new ResourceSnapshot(
        v.key(),
        HexFormat.of().formatHex(v.valueBlock()),
        v.valueBlockValid(),
        v.granted(),
        v.converting(),
        v.waiting());
  }

  /** Every resource of the engine, in its order, keyed by name. */
  static Map<ResourceKey, ResourceSnapshot> snapshot(LockEngine engine) {
    Map<ResourceKey, ResourceSnapshot> out = new LinkedHashMap<>();
    for (ResourceView v : engine.resources(null)) {
      out.put(v.key(), snapshot(v));
    }
    return out;
  }

  static AcquireCommand cmd(Owner owner, ResourceKey key, LockMode mode) {
    return new AcquireCommand("", owner, 0, key, mode, false, false, false);
  }

  static AcquireCommand tryCmd(Owner owner, ResourceKey key, LockMode mode) {
    return new AcquireCommand("", owner, 0, key, mode, true, false, false);
  }

  static AcquireCommand notifyingCmd(Owner owner, ResourceKey key, LockMode mode) {
    return new AcquireCommand("", owner, 0, key, mode, false, false, true);
  }

  static AcquireCommand sessionCmd(
      Owner owner, long session, ResourceKey key, LockMode mode, boolean persistent) {
    return new AcquireCommand("", owner, session, key, mode, false, persistent, false);
  }

  static byte[] bytes(String s) {
    return s.getBytes(java.nio.charset.StandardCharsets.US_ASCII);
  }
}
