package io.clusterlvm.fence.domain;

/**
 * What a host must do before it may attest that it stopped all storage work: a host that rejoins
 * with the same boot id (it did not reboot) may still have volumes active that its old incarnation
 * locked. Only once they are stopped may that incarnation's locks be released.
 */
@FunctionalInterface
public interface StorageAttestor {
  /**
   * Stops the storage work of {@code oldIncarnation} on this host (e.g. deactivates the volumes it
   * had active). Returns null when all of it stopped, or why not: the host then stays out of the
   * fence domain and its old locks stay frozen until it is fenced or an operator acknowledges it.
   */
  String stopStorageWork(String node, long oldIncarnation) throws Exception;

  StorageAttestor NOTHING_TO_STOP = (node, inc) -> null;
}
