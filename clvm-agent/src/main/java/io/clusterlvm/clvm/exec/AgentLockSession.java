package io.clusterlvm.clvm.exec;

import io.clusterlvm.clvm.exec.ClusterRefusalException.Reason;
import io.clusterlvm.dlm.client.DlmClient;
import io.clusterlvm.dlm.client.DlmClientException;
import io.clusterlvm.dlm.client.DlmSession;
import java.util.function.Consumer;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * The agent's session with the lock service, for the host's current incarnation: opened when the
 * host joins, closed when the lease is lost, opened again after the rejoin (a new incarnation owns
 * new locks).
 *
 * <p>The session is bound to the host's lease before any lock is taken under it: a host cut off
 * from the dlm-servers but not from ZooKeeper keeps its lease, and the lock service then keeps the
 * session's locks until it resumes (it never gives up resuming), instead of taking the break for a
 * dead process and handing the VG lock to another host while lvm still runs here. If the session is
 * lost all the same (the lock service ended it: the host was purged), its transient locks are gone:
 * the listener hears so, and the next command opens a new session; the persistent activation locks
 * belong to the incarnation and survive.
 */
final class AgentLockSession {

  private static final Logger LOG = LoggerFactory.getLogger(AgentLockSession.class);
  private static final String CLIENT_NAME = "clvm-agent";

  private final DlmClient dlm;
  private final String node;
  private final Consumer<DlmSession> onLost;
  private final LeaseBinding binding;

  // Guarded by this.
  private DlmSession session;
  private long incarnation;

  AgentLockSession(DlmClient dlm, String node, LeaseBinding binding, Consumer<DlmSession> onLost) {
    this.dlm = dlm;
    this.node = node;
    this.binding = binding;
    this.onLost = onLost;
  }

  /**
   * The host joined with {@code incarnation}: replace the session (opening it may fail; retried).
   */
  synchronized void joined(long newIncarnation) {
    closeSession();
    incarnation = newIncarnation;
    try {
      open();
    } catch (ClusterRefusalException e) {
      LOG.warn(
          "[node={}] could not open a lock session for incarnation {} ({}); the next command"
              + " retries",
          node,
          newIncarnation,
          e.getMessage());
    }
  }

  /**
   * The incarnation is gone: its locks will be purged, nothing may be done under it. With {@code
   * keepLocks} (lvm that could not be stopped may still write under them) the session is dropped,
   * not closed, so that its locks stay frozen until the host is fenced or attests.
   */
  synchronized void incarnationEnded(boolean keepLocks) {
    close(keepLocks);
    incarnation = 0;
  }

  /**
   * The session to take locks with, opened if needed.
   *
   * @throws ClusterRefusalException LOCK_SERVICE_UNAVAILABLE if it can't be opened
   */
  synchronized DlmSession current() throws ClusterRefusalException {
    if (incarnation == 0) {
      throw new ClusterRefusalException(
          Reason.NOT_MEMBER,
          "this host is not a member of the fence domain (node "
              + node
              + " has no incarnation); clvm refuses to touch shared storage");
    }
    if (session != null && !session.isLost()) {
      return session;
    }
    return open();
  }

  synchronized long incarnation() {
    return incarnation;
  }

  /** Ends the session; with {@code keepLocks} drops it instead (see {@link #incarnationEnded}). */
  synchronized void close(boolean keepLocks) {
    if (keepLocks && session != null) {
      session.drop();
      session = null;
    }
    closeSession();
  }

  private DlmSession open() throws ClusterRefusalException {
    closeSession();
    DlmSession s;
    try {
      s = dlm.openLeaseBoundSession(node, incarnation, CLIENT_NAME);
    } catch (DlmClientException e) {
      throw unavailable("the lock service could not be reached to open a lock session", e);
    }
    try {
      binding.bind(incarnation, s.id());
    } catch (Exception e) {
      s.close();
      throw unavailable(
          "lock session " + s.id() + " could not be bound to this host's membership lease", e);
    }
    s.onLost(() -> onLost.accept(s));
    session = s;
    LOG.info(
        "[node={}] lock session {} open for incarnation {}, bound to the lease",
        node,
        s.id(),
        s.incarnation());
    return s;
  }

  private static ClusterRefusalException unavailable(String what, Exception e) {
    return new ClusterRefusalException(
        Reason.LOCK_SERVICE_UNAVAILABLE, what + ": " + e.getMessage(), null, null, false, e);
  }

  private void closeSession() {
    if (session != null) {
      session.close();
      session = null;
    }
  }
}
