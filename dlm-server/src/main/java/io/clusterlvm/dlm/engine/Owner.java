package io.clusterlvm.dlm.engine;

import java.util.Objects;

/** Who owns a lock: a node in one incarnation (a node gets a new incarnation on every join). */
public record Owner(String node, long incarnation) {
  public Owner {
    Objects.requireNonNull(node, "node");
  }

  @Override
  public String toString() {
    return node + "/" + incarnation;
  }
}
