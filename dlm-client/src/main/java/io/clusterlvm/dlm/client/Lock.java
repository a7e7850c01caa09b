package io.clusterlvm.dlm.client;

import io.clusterlvm.dlm.proto.LockInfo;
import io.clusterlvm.dlm.proto.ResourceInfo;

/**
 * A granted lock.
 *
 * @param fencingToken grows with every grant of the resource, cluster-wide and across server
 *     restarts; pass it to whatever you write under this lock so it can refuse a stale writer
 * @param valueBlock the resource's value block (empty below PR)
 * @param valueBlockValid false if a PW/EX holder failed without writing it
 */
public record Lock(
    long id,
    String lockspace,
    String resource,
    LockMode mode,
    long fencingToken,
    byte[] valueBlock,
    boolean valueBlockValid) {

  /**
   * A granted lock as a listing ({@code DlmClient.locks}) shows it, for a process that takes over
   * locks of its incarnation another process took: release and convert go by owner and id. A
   * listing carries no value block, so it is empty here; read it if it is needed.
   */
  public static Lock listed(ResourceInfo resource, LockInfo lock) {
    return new Lock(
        lock.getLockId(),
        resource.getLockspace(),
        resource.getResource(),
        LockMode.of(lock.getGrantedMode()),
        lock.getFencingToken(),
        new byte[0],
        resource.getValueBlockValid());
  }

  @Override
  public String toString() {
    return "Lock["
        + lockspace
        + " "
        + resource
        + " "
        + mode
        + " id="
        + id
        + " token="
        + fencingToken
        + "]";
  }
}
