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

  /** Whether {@code o} is this node's incarnation, and a member. */
  public boolean isMember(Owner o) {
    return node.equals(o.node()) && incarnation == o.incarnation() && state == NodeState.MEMBER;
  }
}
