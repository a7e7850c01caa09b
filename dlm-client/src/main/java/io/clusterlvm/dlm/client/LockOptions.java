package io.clusterlvm.dlm.client;

import java.time.Duration;

/**
 * How to request a lock.
 *
 * @param timeout how long to wait for the grant; null or zero waits as long as it takes. The leader
 *     times the wait. If the leader changes meanwhile, the request waits again, for the whole
 *     timeout, at the new leader; if it stops answering, the client gives up on it 10 s after the
 *     timeout and asks the next server. So the wait may last longer than the timeout; a grant its
 *     caller never hears of is given back (the session abandons the request).
 * @param noqueue fail at once ({@link DlmClientException#wouldBlock()}) instead of waiting
 * @param persistent keep the lock when the session ends (the node still owns it)
 * @param notifyBlocking receive blocking notifications while this lock blocks others
 */
public record LockOptions(
    Duration timeout, boolean noqueue, boolean persistent, boolean notifyBlocking) {

  public static final LockOptions DEFAULT = new LockOptions(null, false, false, false);

  public LockOptions withTimeout(Duration t) {
    return new LockOptions(t, noqueue, persistent, notifyBlocking);
  }

  public LockOptions withNoqueue() {
    return new LockOptions(timeout, true, persistent, notifyBlocking);
  }

  public LockOptions withPersistent() {
    return new LockOptions(timeout, noqueue, true, notifyBlocking);
  }

  public LockOptions withNotifyBlocking() {
    return new LockOptions(timeout, noqueue, persistent, true);
  }
}
