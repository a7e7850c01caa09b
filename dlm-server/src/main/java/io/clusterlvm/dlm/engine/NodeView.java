package io.clusterlvm.dlm.engine;

/** A node's membership record. */
public record NodeView(
    String node, long incarnation, NodeState state, String bootId, long sinceMillis) {

  public Owner owner() {
    return new Owner(node, incarnation);
  }
}
