package io.clusterlvm.dlm.client;

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
