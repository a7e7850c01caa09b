package io.clusterlvm.dlm.client;

import static org.assertj.core.api.Assertions.assertThat;
import static org.awaitility.Awaitility.await;

import io.clusterlvm.dlm.proto.AbandonResponse;
import io.clusterlvm.dlm.proto.CallFailure;
import io.clusterlvm.dlm.proto.LockCall;
import io.clusterlvm.dlm.proto.LockCallResult;
import io.clusterlvm.dlm.proto.ReleaseResponse;
import io.grpc.Status;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

/**
 * A client closed while a release waits out its back-off (the lock service has no leader for a
 * moment) lets it get through first. Before 2026-12-07 the retry found the client closed and was
 * dropped (found in review): a persistent lock, such as an LV's activation lock, then stayed held
 * until its node left. The stand-in server refuses the first releases as a follower without a
 * leader does.
 */
@Timeout(value = 30, unit = TimeUnit.SECONDS)
class ReleaseAtCloseTest {

  private static final int REFUSED = 4; // back-off 25 + 50 + 100 + 200 ms

  @Test
  void aReleaseInItsRetryBackOffGetsThroughBeforeTheClientCloses() throws Exception {
    AtomicInteger releases = new AtomicInteger();
    try (ScriptedServer server =
        ScriptedServer.start(
            (stream, call, out) -> {
              LockCallResult.Builder r = LockCallResult.newBuilder().setCallId(call.getCallId());
              if (releases.incrementAndGet() <= REFUSED) {
                r.setFailure(
                    CallFailure.newBuilder()
                        .setCode(Status.Code.UNAVAILABLE.value())
                        .setDescription("no leader"));
              } else {
                r.setReleased(ReleaseResponse.getDefaultInstance());
              }
              ScriptedServer.answer(out, r);
            })) {
      DlmClient client = DlmClient.forChannel(server.channel);
      DlmSession session = client.openSession("n1", 1, "test");
      Lock held = new Lock(77, "ls", "r", LockMode.EX, 1, new byte[0], true);
      CompletableFuture<Void> released = session.unlockAsync(held, null);
      await().atMost(10, TimeUnit.SECONDS).until(() -> releases.get() >= 2);

      client.close();

      assertThat(released).succeedsWithin(1, TimeUnit.SECONDS);
      assertThat(releases.get()).isEqualTo(REFUSED + 1);
    }
  }

  /**
   * The same for a conversion: a granted up-conversion whose answer never came would leave a
   * persistent lock in the stronger mode. Its abandon names the lock.
   */
  @Test
  void aConversionOpenAtCloseIsAbandonedBeforeTheClientCloses() throws Exception {
    try (ScriptedServer server = answeringOnlyAbandons()) {
      DlmClient client = DlmClient.forChannel(server.channel);
      DlmSession session = client.openSession("n1", 1, "test");
      Lock held = new Lock(77, "ls", "r", LockMode.PR, 1, new byte[0], true);
      CompletableFuture<Lock> converted =
          session.convertAsync(held, LockMode.EX, LockOptions.DEFAULT, null);
      await()
          .atMost(10, TimeUnit.SECONDS)
          .until(() -> server.received.stream().anyMatch(LockCall::hasConvert));

      client.close();

      // Failed by close, on the client's callback pool: it may land an instant after close returns.
      assertThat(converted).failsWithin(5, TimeUnit.SECONDS);
      assertThat(server.received)
          .filteredOn(LockCall::hasAbandon)
          .extracting(c -> c.getAbandon().getLockId())
          .containsExactly(77L);
    }
  }

  /** A server that answers abandons and nothing else: an acquire or conversion gets no answer. */
  private static ScriptedServer answeringOnlyAbandons() throws Exception {
    return ScriptedServer.start(
        (stream, call, out) -> {
          if (call.hasAbandon()) {
            ScriptedServer.answer(
                out,
                LockCallResult.newBuilder()
                    .setCallId(call.getCallId())
                    .setAbandoned(AbandonResponse.getDefaultInstance()));
          }
        });
  }

  /**
   * An acquire still waiting for its answer when the client closes (a leader that granted it died
   * before answering; the next one is still loading) is abandoned on the way out: the lock may be
   * granted, and nobody would know they hold it, a persistent one for good. Before 2026-12-07 the
   * abandon found the client closed and was never sent.
   */
  @Test
  void anAcquireOpenAtCloseIsAbandonedBeforeTheClientCloses() throws Exception {
    try (ScriptedServer server = answeringOnlyAbandons()) {
      DlmClient client = DlmClient.forChannel(server.channel);
      DlmSession session = client.openSession("n1", 1, "test");
      CompletableFuture<Lock> lock =
          session.lockAsync("ls", "r", LockMode.EX, LockOptions.DEFAULT.withPersistent());
      await()
          .atMost(10, TimeUnit.SECONDS)
          .until(() -> server.received.stream().anyMatch(LockCall::hasAcquire));
      String requestId = server.received.get(0).getAcquire().getRequestId();

      client.close();

      // Failed by close, on the client's callback pool: it may land an instant after close returns.
      assertThat(lock).failsWithin(5, TimeUnit.SECONDS);
      assertThat(server.received)
          .filteredOn(LockCall::hasAbandon)
          .extracting(c -> c.getAbandon().getRequestId())
          .containsExactly(requestId);
    }
  }
}
