package io.clusterlvm.clvm.exec;

/**
 * Binds the agent's lock session to the host's membership lease ({@code
 * NodeMembership::bindSession}), so that the lock service keeps the session's locks over a lost
 * connection while the lease lives.
 */
@FunctionalInterface
public interface LeaseBinding {
  /** Throws if the binding could not be written: no lock may be taken under the session then. */
  void bind(long incarnation, long sessionId) throws Exception;
}
