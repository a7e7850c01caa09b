package io.clusterlvm.dlm.engine;

import java.util.Objects;

/** Who owns a lock: a node in one incarnation (a node gets a new incarnation on every join). */
public record Owner(String node, long incarnation) {
  public Owner {
    Objects.requireNonNull(node, "node");
  }

  /** Whether this is {@code node} in {@code incarnation} (in any incarnation if 0). */
  public boolean is(String node, long incarnation) {
    return this.node.equals(node) && (incarnation == 0 || this.incarnation == incarnation);
  }

  @Override
  public String toString() {
    return node + "/" + incarnation;
  }
}
