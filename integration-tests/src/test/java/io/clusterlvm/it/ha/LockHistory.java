package io.clusterlvm.it.ha;

import io.clusterlvm.dlm.client.LockMode;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.ConcurrentLinkedQueue;

/**
 * What the clients of a storm saw, on the test JVM's monotonic clock ({@code System.nanoTime}, one
 * clock for every client, since they all run in this JVM).
 */
final class LockHistory {

  /**
   * One granted acquire call, from the client's side.
   *
   * @param invoked when the acquire call was made
   * @param acked when the grant returned to the client: from here on it acts as the holder
   * @param releaseSent when the client called release: up to here it acted as the holder
   * @param valueAtGrant the counter in the value block the grant carried
   * @param valueRead the counter read with ReadValueBlock while holding (-1 if that failed)
   * @param released whether the release call succeeded
   */
  record Grant(
      String client,
      String resource,
      LockMode mode,
      long lockId,
      long token,
      long invoked,
      long acked,
      long releaseSent,
      int valueAtGrant,
      int valueRead,
      boolean released) {

    /** The epoch of the leader that made the grant (the high half of the token). */
    long epoch() {
      return token >>> 32;
    }
  }

  /**
   * An acquire call that did not return a grant.
   *
   * @param expected whether the failure is one the request asked for (NOQUEUE would block, or the
   *     timeout passed); anything else (UNAVAILABLE after the retry window, a lost session...) is
   *     not a clear answer for a lock user.
   */
  record Refusal(
      String client,
      String resource,
      LockMode mode,
      long invoked,
      long ended,
      String code,
      boolean expected,
      String message) {}

  private final ConcurrentLinkedQueue<Grant> grants = new ConcurrentLinkedQueue<>();
  private final ConcurrentLinkedQueue<Refusal> refusals = new ConcurrentLinkedQueue<>();
  private final ConcurrentLinkedQueue<String> problems = new ConcurrentLinkedQueue<>();

  void grant(Grant g) {
    grants.add(g);
  }

  void refusal(Refusal r) {
    refusals.add(r);
  }

  /** Something a lock user would call a failure (a release that failed, a lost session...). */
  void problem(String p) {
    problems.add(p);
  }

  List<Grant> grants() {
    return new ArrayList<>(grants);
  }

  List<Refusal> refusals() {
    return new ArrayList<>(refusals);
  }

  List<String> problems() {
    return new ArrayList<>(problems);
  }

  long grantCount() {
    return grants.size();
  }

  /** Grants made by a leader of an epoch above {@code epoch} (not retries of older grants). */
  long grantsAfterEpoch(long epoch) {
    return grants.stream().filter(g -> g.epoch() > epoch).count();
  }

  /** When the first grant of a leader with an epoch above {@code epoch} reached its client. */
  long firstAckAfterEpoch(long epoch) {
    return grants.stream()
        .filter(g -> g.epoch() > epoch)
        .mapToLong(Grant::acked)
        .min()
        .orElse(Long.MAX_VALUE);
  }
}
