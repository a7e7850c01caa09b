package io.clusterlvm.dlm.engine;

/**
 * A node's membership record.
 *
 * @param releasedLocks LEFT: how many locks the leave or purge that ended the incarnation released
 */
public record NodeView(
    String node,
    long incarnation,
    NodeState state,
    String bootId,
    long sinceMillis,
    int releasedLocks) {

  public Owner owner() {
    return new Owner(node, incarnation);
  }
}
