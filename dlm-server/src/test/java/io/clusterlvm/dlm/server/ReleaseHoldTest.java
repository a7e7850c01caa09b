package io.clusterlvm.dlm.server;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;
import static org.awaitility.Awaitility.await;

import io.clusterlvm.dlm.client.DlmClient;
import io.clusterlvm.dlm.client.DlmClientException;
import io.clusterlvm.dlm.client.DlmSession;
import io.clusterlvm.dlm.client.Lock;
import io.clusterlvm.dlm.client.LockMode;
import io.clusterlvm.dlm.client.LockOptions;
import io.clusterlvm.dlm.proto.BlockingNotification;
import io.clusterlvm.dlm.proto.DlmGrpc;
import io.clusterlvm.dlm.proto.LockCallResult;
import io.clusterlvm.dlm.proto.LockCallResults;
import io.clusterlvm.dlm.proto.LockCalls;
import io.clusterlvm.dlm.proto.LockInfo;
import io.clusterlvm.dlm.proto.Outcome;
import io.clusterlvm.dlm.proto.ResourceInfo;
import io.grpc.CallOptions;
import io.grpc.Channel;
import io.grpc.ClientCall;
import io.grpc.ClientInterceptor;
import io.grpc.ForwardingClientCall;
import io.grpc.ForwardingClientCallListener;
import io.grpc.ManagedChannel;
import io.grpc.ManagedChannelBuilder;
import io.grpc.Metadata;
import io.grpc.MethodDescriptor;
import java.time.Duration;
import java.util.List;
import java.util.Optional;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CopyOnWriteArrayList;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;
import org.apache.curator.test.TestingServer;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.EnumSource;
import org.junit.jupiter.params.provider.ValueSource;

/**
 * The client holds an asynchronous release back until its next call, and sends it at once when the
 * server hints that someone waits for the lock. The tests that must not depend on the hold's timer
 * set it to an hour: a release that only the timer would send never goes out there.
 */
@Timeout(value = 60, unit = TimeUnit.SECONDS)
class ReleaseHoldTest {
  private static final String HOLD = "dlm.client.release-hold-ms";
  private static final long AN_HOUR_MS = TimeUnit.HOURS.toMillis(1);

  private TestingServer zk;
  private DlmServer server;
  private DlmClient client;
  private DlmClient observer; // listings, on a client of its own

  @BeforeEach
  void start() throws Exception {
    zk = new TestingServer();
    server = ServerTestSupport.leading(DlmServerConfig.forTest(zk.getConnectString()));
    observer = DlmClient.connect("127.0.0.1:" + server.port());
  }

  /** The client under test; its lock stream reads the hold when it opens (on the first lock). */
  private DlmSession session(String node, long holdMillis) {
    System.setProperty(HOLD, Long.toString(holdMillis));
    if (client == null) {
      client = DlmClient.connect("127.0.0.1:" + server.port());
    }
    return client.openSession(node, client.join(node, "boot-" + node), "test");
  }

  @AfterEach
  void stop() throws Exception {
    System.clearProperty(HOLD);
    if (client != null) {
      client.close();
    }
    observer.close();
    server.close();
    zk.close();
  }

  /** Who the server has granted {@code resource} in lockspace "ls" to. */
  private List<LockInfo> granted(String resource) {
    return resource(resource).map(ResourceInfo::getGrantedList).orElse(List.of());
  }

  private int waitingCount(String resource) {
    return resource(resource).map(ResourceInfo::getWaitingCount).orElse(0);
  }

  /** {@code resource} in lockspace "ls" as the server lists it, if it has locks. */
  private Optional<ResourceInfo> resource(String resource) {
    return observer.locks("").stream() // all lockspaces: "ls" is gone once it has no locks
        .filter(r -> r.getLockspace().equals("ls") && r.getResource().equals(resource))
        .findFirst();
  }

  @Test
  void aHeldBackReleaseGoesOutWithTheNextCall() throws Exception {
    DlmSession a = session("node1", AN_HOUR_MS);
    Lock held = a.lock("ls", "r1", LockMode.EX);
    CompletableFuture<Void> released = a.unlockAsync(held, null);

    // Held back: the server keeps the lock (a release sent at once is durable in a few ms).
    await()
        .during(Duration.ofMillis(300))
        .atMost(Duration.ofSeconds(5))
        .until(
            () ->
                !released.isDone()
                    && granted("r1").stream().anyMatch(l -> l.getLockId() == held.id()));

    a.lock("ls", "r2", LockMode.EX); // carries the release with it
    released.get(10, TimeUnit.SECONDS);
    assertThat(granted("r1")).isEmpty();
  }

  /**
   * After a lock stream breaks, a held-back release is retried after a back-off, while a NOQUEUE
   * request the session makes meanwhile goes out on the new stream at once and is refused against
   * the session's own lock. The client asks again once the release is settled. The stream is cut by
   * an interceptor on the client's channel, which also holds the release's retry at a gate, so that
   * the request overtakes it every time.
   */
  @Test
  void aNoqueueRequestThatOvertakesTheRetryOfTheSessionsOwnReleaseIsAskedAgain() throws Exception {
    noqueueOvertakingARetriedRelease(false);
  }

  /**
   * A caller that stops waiting (here as orTimeout would) while its NOQUEUE request waits to be
   * asked again is not left holding a lock nobody knows of: the re-ask is withdrawn, or its grant
   * given back (found in review: the grant went nowhere and the lock stayed held).
   */
  @Test
  void aNoqueueRequestWhoseCallerStopsWaitingBeforeTheReAskLeavesNoLockHeld() throws Exception {
    noqueueOvertakingARetriedRelease(true);
  }

  private void noqueueOvertakingARetriedRelease(boolean callerStopsWaiting) throws Exception {
    StreamCutter cutter = new StreamCutter();
    ManagedChannel channel =
        ManagedChannelBuilder.forAddress("127.0.0.1", server.port())
            .usePlaintext()
            .intercept(cutter)
            .build();
    System.setProperty(HOLD, Long.toString(AN_HOUR_MS));
    try (DlmClient cut = DlmClient.forChannel(channel)) {
      DlmSession a = cut.openSession("node1", cut.join("node1", "boot-node1"), "test");
      Lock held = a.lock("ls", "r", LockMode.EX);
      CompletableFuture<Void> released = a.unlockAsync(held, null); // held back on stream 1

      cutter.cutFirstStream();
      // The release's retry, after its back-off, is held back on the next stream too; a later
      // call carries it out, into the gate.
      List<CompletableFuture<Lock>> others = new CopyOnWriteArrayList<>();
      await()
          .pollInterval(Duration.ofMillis(50))
          .until(
              () -> {
                others.add(
                    a.lockAsync("ls", "other" + others.size(), LockMode.EX, LockOptions.DEFAULT));
                return cutter.heldReleases.get() == 1;
              });

      CompletableFuture<Lock> again =
          a.lockAsync("ls", "r", LockMode.EX, LockOptions.DEFAULT.withNoqueue());
      await().until(() -> cutter.refusals.get() == 1); // refused: the lock is still held
      assertThat(granted("r")).extracting(LockInfo::getLockId).containsExactly(held.id());
      assertThat(again).isNotDone();
      if (callerStopsWaiting) {
        again.completeExceptionally(new java.util.concurrent.TimeoutException());
      }

      cutter.openGate();
      released.get(10, TimeUnit.SECONDS);
      for (CompletableFuture<Lock> o : others) {
        o.get(10, TimeUnit.SECONDS);
      }
      if (!callerStopsWaiting) {
        assertThat(again.get(10, TimeUnit.SECONDS).fencingToken())
            .isGreaterThan(held.fencingToken());
        return;
      }
      // Nobody holds r: another node takes it without queueing (once a's re-ask, if it went out,
      // was withdrawn or given back).
      DlmSession b = observer.openSession("node2", observer.join("node2", "boot-node2"), "test");
      Lock theirs =
          await()
              .atMost(Duration.ofSeconds(10))
              .ignoreExceptions()
              .until(
                  () -> b.lock("ls", "r", LockMode.EX, LockOptions.DEFAULT.withNoqueue()),
                  l -> l != null);
      assertThat(granted("r")).extracting(LockInfo::getLockId).containsExactly(theirs.id());
    } finally {
      channel.shutdownNow();
    }
  }

  /**
   * Without a stream break, a release goes out ahead of the session's next request, so a NOQUEUE
   * refusal then is real and stands at once: it is not asked again after the release settles.
   */
  @Test
  void aNoqueueRefusalAfterTheSessionsOwnReleaseStandsWithoutABreak() throws Exception {
    StreamCutter counter = new StreamCutter(); // cuts nothing here; counts the acquires sent
    ManagedChannel channel =
        ManagedChannelBuilder.forAddress("127.0.0.1", server.port())
            .usePlaintext()
            .intercept(counter)
            .build();
    System.setProperty(HOLD, Long.toString(AN_HOUR_MS));
    try (DlmClient counted = DlmClient.forChannel(channel)) {
      DlmSession a = counted.openSession("node1", counted.join("node1", "boot-node1"), "test");
      DlmSession b = observer.openSession("node2", observer.join("node2", "boot-node2"), "test");
      Lock mine = a.lock("ls", "r", LockMode.PR);
      Lock theirs = b.lock("ls", "r", LockMode.PR);
      CompletableFuture<Void> released = a.unlockAsync(mine, null); // held back, an hour
      CompletableFuture<Lock> refused =
          a.lockAsync("ls", "r", LockMode.EX, LockOptions.DEFAULT.withNoqueue());
      assertThatThrownBy(() -> refused.get(10, TimeUnit.SECONDS))
          .hasCauseInstanceOf(DlmClientException.class)
          .satisfies(e -> assertThat(((DlmClientException) e.getCause()).wouldBlock()).isTrue());
      released.get(10, TimeUnit.SECONDS);
      // Refused for b's lock, and not asked again once a's release settled (it went first).
      assertThat(counter.acquires.get()).isEqualTo(2); // a's PR, then the EX
      b.unlock(theirs);
    } finally {
      channel.shutdownNow();
    }
  }

  /**
   * Cuts the first lock stream on request, and holds messages carrying a release on later streams
   * until {@link #openGate}.
   */
  private static final class StreamCutter implements ClientInterceptor {
    final AtomicInteger heldReleases = new AtomicInteger();
    final AtomicInteger refusals = new AtomicInteger();
    final AtomicInteger acquires = new AtomicInteger();
    private final AtomicInteger streams = new AtomicInteger();
    private final List<ClientCall<?, ?>> calls = new CopyOnWriteArrayList<>();
    private final List<Runnable> held = new CopyOnWriteArrayList<>();
    private volatile boolean gateOpen;

    @Override
    public <Q, A> ClientCall<Q, A> interceptCall(
        MethodDescriptor<Q, A> method, CallOptions options, Channel next) {
      ClientCall<Q, A> call = next.newCall(method, options);
      if (!method.getFullMethodName().equals(DlmGrpc.getLockStreamMethod().getFullMethodName())) {
        return call;
      }
      int n = streams.incrementAndGet();
      return new ForwardingClientCall.SimpleForwardingClientCall<>(call) {
        @Override
        public void start(Listener<A> listener, Metadata headers) {
          calls.add(this);
          super.start(
              new ForwardingClientCallListener.SimpleForwardingClientCallListener<>(listener) {
                @Override
                public void onMessage(A message) {
                  for (LockCallResult r : ((LockCallResults) message).getResultsList()) {
                    if (r.getFailure().getOutcome() == Outcome.WOULD_BLOCK) {
                      refusals.incrementAndGet();
                    }
                  }
                  super.onMessage(message);
                }
              },
              headers);
        }

        @Override
        public void sendMessage(Q message) {
          acquires.addAndGet(
              (int)
                  ((LockCalls) message)
                      .getCallsList().stream().filter(c -> c.hasAcquire()).count());
          boolean release =
              ((LockCalls) message).getCallsList().stream().anyMatch(c -> c.hasRelease());
          if (n > 1 && release && !gateOpen) {
            heldReleases.incrementAndGet();
            held.add(() -> super.sendMessage(message));
            return;
          }
          super.sendMessage(message);
        }
      };
    }

    void cutFirstStream() {
      calls.get(0).cancel("cut by the test", null);
    }

    /** Sends what was held, from the test's thread: the client sends nothing meanwhile. */
    void openGate() {
      gateOpen = true;
      held.forEach(Runnable::run);
    }
  }

  @Test
  void aRequestThatQueuesBehindAHeldBackReleaseGetsTheLock() throws Exception {
    DlmSession a = session("node1", AN_HOUR_MS);
    // On a client of its own: a call on a's client would carry a's held release with it.
    DlmSession b = observer.openSession("node2", observer.join("node2", "boot-node2"), "test");
    Lock held = a.lock("ls", "r", LockMode.EX);
    CompletableFuture<Void> released = a.unlockAsync(held, null);

    // b queues behind a lock the server still thinks held; its hint sends a's release.
    Lock got = b.lock("ls", "r", LockMode.EX);
    assertThat(got.fencingToken()).isGreaterThan(held.fencingToken());
    released.get(10, TimeUnit.SECONDS);
  }

  @Test
  void aHolderThatBlocksSomeoneReleasesAtOnceAndIsNotToldUnlessItAsked() throws Exception {
    DlmSession a = session("node1", AN_HOUR_MS);
    DlmSession b = session("node2", AN_HOUR_MS);
    List<BlockingNotification> told = new CopyOnWriteArrayList<>();
    a.onBlocking(told::add);
    Lock held = a.lock("ls", "r", LockMode.EX);
    CompletableFuture<Lock> waiting = b.lockAsync("ls", "r", LockMode.PR, LockOptions.DEFAULT);
    await()
        .until(
            () ->
                observer.locks("ls").stream()
                    .anyMatch(r -> r.getResource().equals("r") && r.getWaitingCount() == 1));

    // The hint came (or comes) before this release, which therefore goes out at once.
    a.unlockAsync(held, null).get(10, TimeUnit.SECONDS);
    assertThat(waiting.get(10, TimeUnit.SECONDS).mode()).isEqualTo(LockMode.PR);
    // The hint is for the library: a lock taken without notify-blocking tells its holder nothing.
    assertThat(told).isEmpty();
  }

  @Test
  void aHintOutlivesTheLockStreamItCameOn() throws Exception {
    DlmSession a = session("node1", AN_HOUR_MS);
    DlmSession b = observer.openSession("node2", observer.join("node2", "boot-node2"), "test");
    // Told in full, so that the test sees when the server's word has arrived: the library marks
    // the lock contended before it calls the listeners, as it does for a hint.
    List<BlockingNotification> told = new CopyOnWriteArrayList<>();
    a.onBlocking(told::add);
    Lock held =
        a.lock("ls", "r", LockMode.EX, LockOptions.DEFAULT.withPersistent().withNotifyBlocking());
    CompletableFuture<Lock> waiting = b.lockAsync("ls", "r", LockMode.EX, LockOptions.DEFAULT);
    await().atMost(Duration.ofSeconds(10)).until(() -> told.size() == 1);

    // The server restarts: a's lock stream breaks, and its next one starts on the new server,
    // which has no reason to hint again (b's request is the same one, retried).
    server = ServerTestSupport.restart(server, zk);
    await().atMost(Duration.ofSeconds(20)).until(() -> waitingCount("r") == 1);

    // Only the hint can send this release: the hold is an hour and no other call follows.
    a.unlockAsync(held, null);
    assertThat(waiting.get(10, TimeUnit.SECONDS).fencingToken()).isGreaterThan(held.fencingToken());
  }

  /** 100 ms: held, and sent by the timer; 0: not held at all. No other call comes either way. */
  @ParameterizedTest
  @ValueSource(longs = {100, 0})
  void aReleaseGoesOutWithinTheHoldWithoutAnotherCall(long holdMillis) throws Exception {
    DlmSession a = session("node1", holdMillis);
    Lock held = a.lock("ls", "r", LockMode.EX);
    a.unlockAsync(held, null).get(10, TimeUnit.SECONDS);
    assertThat(granted("r")).isEmpty();
  }

  enum Closing {
    SESSION,
    CLIENT
  }

  @ParameterizedTest
  @EnumSource(Closing.class)
  void closingSendsTheHeldBackReleasesFirst(Closing closing) throws Exception {
    DlmSession a = session("node1", AN_HOUR_MS);
    // Persistent: the session's end would leave it held; only the release itself frees it.
    Lock held = a.lock("ls", "r", LockMode.EX, LockOptions.DEFAULT.withPersistent());
    CompletableFuture<Void> released = a.unlockAsync(held, null);
    if (closing == Closing.SESSION) {
      a.close();
    } else {
      client.close();
      client = null;
    }
    released.get(10, TimeUnit.SECONDS);
    assertThat(granted("r")).isEmpty();
  }
}
