package io.clusterlvm.dlm.server;

import static org.assertj.core.api.Assertions.assertThat;
import static org.awaitility.Awaitility.await;

import io.clusterlvm.dlm.engine.AcquireCommand;
import io.clusterlvm.dlm.engine.LockMode;
import io.clusterlvm.dlm.engine.LockResult;
import io.clusterlvm.dlm.engine.Outcome;
import io.clusterlvm.dlm.engine.Owner;
import io.clusterlvm.dlm.engine.ResourceKey;
import io.clusterlvm.dlm.engine.ResourceView;
import io.clusterlvm.dlm.proto.LockReply;
import io.clusterlvm.dlm.proto.SessionEvent;
import io.grpc.Status;
import io.grpc.stub.ServerCallStreamObserver;
import io.grpc.stub.StreamObserver;
import java.time.Clock;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.CopyOnWriteArrayList;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.Executors;
import java.util.concurrent.ScheduledExecutorService;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.AtomicLong;
import java.util.concurrent.atomic.AtomicReference;
import java.util.function.Consumer;
import org.apache.curator.framework.CuratorFramework;
import org.apache.curator.test.TestingServer;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

/** The leader core's batches: what callers are told when a batch cannot be trusted. */
@Timeout(value = 60, unit = TimeUnit.SECONDS)
class LeaderCoreTest {
  private static final ZkPaths PATHS = new ZkPaths("/core");
  private static final ResourceKey RES = new ResourceKey("ls", "res");
  private static final ResourceKey OTHER = new ResourceKey("ls", "other");

  private TestingServer zk;
  private CuratorFramework curator;
  private ScheduledExecutorService timers;
  private GatedLockStore store;
  private LeaderCore core;
  private final AtomicReference<Throwable> fatal = new AtomicReference<>();

  @BeforeEach
  void start() throws Exception {
    zk = new TestingServer();
    curator = ServerTestSupport.connected(zk);
    timers = Executors.newSingleThreadScheduledExecutor();
    store = new GatedLockStore(curator, PATHS);
    core = ServerTestSupport.leaderCore(store, "s1", timers, fatal::set);
    // Long enough that a test decides when a deferred release is written.
    core.deferReleasesFor(Duration.ofSeconds(30));
    core.start();
  }

  @AfterEach
  void stop() throws Exception {
    core.close();
    timers.shutdownNow();
    curator.close();
    zk.close();
  }

  /**
   * Collects the events a session stream is sent. Its client reads them, unless {@link #stuck}:
   * then gRPC's buffer for the stream stays full ({@code isReady()} false).
   */
  private static class Events extends ServerCallStreamObserver<SessionEvent> {
    final List<SessionEvent> received = new CopyOnWriteArrayList<>();
    volatile boolean stuck;

    @Override
    public boolean isReady() {
      return !stuck;
    }

    @Override
    public boolean isCancelled() {
      return false;
    }

    @Override
    public void setOnCancelHandler(Runnable r) {}

    @Override
    public void setOnReadyHandler(Runnable r) {}

    @Override
    public void setCompression(String c) {}

    @Override
    public void disableAutoInboundFlowControl() {}

    @Override
    public void request(int n) {}

    @Override
    public void setMessageCompression(boolean enable) {}

    @Override
    public void onNext(SessionEvent e) {
      received.add(e);
    }

    @Override
    public void onError(Throwable t) {}

    @Override
    public void onCompleted() {}

    boolean blocking(long lockId, boolean hintOnly) {
      return received.stream()
          .anyMatch(
              e ->
                  e.hasBlocking()
                      && e.getBlocking().getLockId() == lockId
                      && e.getBlocking().getHintOnly() == hintOnly);
    }
  }

  /**
   * What a session that does not read has held back stays about as large as what it holds: a client
   * stuck for hours while its other threads lock and unlock contended resources would otherwise
   * leave an entry for every lock it ever held (found in review).
   */
  @Test
  void notificationsHeldBackForLocksReleasedSinceAreDroppedAsTheyGrow() throws Exception {
    Owner holder = join("node1");
    Owner asker = join("node2");
    Events stuck = new Events();
    stuck.stuck = true;
    AtomicLong sid = new AtomicLong();
    Answer<String> opened = new Answer<>();
    core.submit(
        opened,
        (engine, fx) -> {
          sid.set(core.openSession(holder, "stuck", 0, List.of(), stuck).id);
          return () -> LeaderCore.reply(opened, "opened");
        });
    assertThat(opened.status().isOk()).isTrue();

    int cycles = 300;
    for (int i = 0; i < cycles; i++) {
      ResourceKey key = new ResourceKey("ls", "r" + i);
      long held =
          granted(
              new AcquireCommand("h" + i, holder, sid.get(), key, LockMode.EX, false, false, true));
      Answer<String> cycled = new Answer<>();
      int n = i;
      core.submit(
          cycled,
          (engine, fx) -> {
            // The asker queues (a notification for the holder, held back), then the holder lets go.
            engine.acquire(
                new AcquireCommand("w" + n, asker, 0, key, LockMode.EX, false, false, false), fx);
            engine.release(holder, held, null, fx);
            return () -> LeaderCore.reply(cycled, "cycled");
          });
      assertThat(cycled.status().isOk()).isTrue();
    }

    AtomicLong heldBack = new AtomicLong(-1);
    Answer<String> counted = new Answer<>();
    core.submit(
        counted,
        (engine, fx) -> {
          heldBack.set(core.sessions().get(sid.get()).heldBack.size());
          return () -> LeaderCore.reply(counted, "counted");
        });
    assertThat(counted.status().isOk()).isTrue();
    assertThat(stuck.received).isEmpty(); // all held back
    assertThat(heldBack.get()).isLessThan(64); // 300 without the pruning
  }

  /** Captures the one answer a unary call gets. */
  private static final class Answer<T> implements StreamObserver<T> {
    final CompletableFuture<T> result = new CompletableFuture<>();

    @Override
    public void onNext(T value) {
      result.complete(value);
    }

    @Override
    public void onError(Throwable t) {
      result.completeExceptionally(t);
    }

    @Override
    public void onCompleted() {}

    Status status() throws Exception {
      try {
        result.get(20, TimeUnit.SECONDS);
        return Status.OK;
      } catch (ExecutionException e) {
        return Status.fromThrowable(e.getCause());
      }
    }
  }

  private LeaderCore.Task acquire(String requestId, Owner o, ResourceKey key, Answer<String> a) {
    return (engine, fx) -> {
      engine.acquire(new AcquireCommand(requestId, o, 0, key, LockMode.EX, false, true, false), fx);
      return () -> LeaderCore.reply(a, "granted");
    };
  }

  /** Joins {@code node} through the core; returns its owner. */
  private Owner join(String node) throws Exception {
    Answer<String> joined = new Answer<>();
    AtomicLong incarnation = new AtomicLong();
    core.submit(
        joined,
        (engine, fx) -> {
          incarnation.set(engine.join(node, "boot", fx).incarnation());
          return () -> LeaderCore.reply(joined, "joined");
        });
    assertThat(joined.status().isOk()).isTrue();
    return new Owner(node, incarnation.get());
  }

  /**
   * Blocks the engine thread until the returned latch is counted down: what is submitted meanwhile
   * is applied as one batch.
   */
  private CountDownLatch holdEngine() throws InterruptedException {
    CountDownLatch entered = new CountDownLatch(1);
    CountDownLatch open = new CountDownLatch(1);
    core.submit(
        null,
        (engine, fx) -> {
          entered.countDown();
          try {
            open.await();
          } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
          }
          return null;
        });
    assertThat(entered.await(10, TimeUnit.SECONDS)).isTrue();
    return open;
  }

  @Test
  void aBatchThatHitsABugAcknowledgesNothingOfIt() throws Exception {
    Owner owner = join("node1");

    // Hold the engine thread so that the next three requests land in one batch.
    CountDownLatch gateOpen = holdEngine();
    Answer<String> before = new Answer<>();
    Answer<String> bug = new Answer<>();
    Answer<String> after = new Answer<>();
    core.submit(before, acquire("req-1", owner, RES, before));
    core.submit(
        bug,
        (engine, fx) -> {
          throw new IllegalStateException("a simulated engine bug");
        });
    core.submit(after, acquire("req-2", owner, OTHER, after));
    gateOpen.countDown();

    // The grant before the bug was applied but never written: it must not be acknowledged.
    assertThat(before.status().getCode()).isEqualTo(Status.Code.UNAVAILABLE);
    assertThat(bug.status().getCode()).isEqualTo(Status.Code.INTERNAL);
    assertThat(after.status().getCode()).isEqualTo(Status.Code.UNAVAILABLE);

    // The table was reloaded from ZooKeeper: neither lock exists, and a retry gets the lock.
    Answer<String> seen = new Answer<>();
    core.submit(
        seen,
        (engine, fx) -> {
          String s = engine.resource(RES).isPresent() + "/" + engine.resource(OTHER).isPresent();
          return () -> LeaderCore.reply(seen, s);
        });
    assertThat(seen.result.get(20, TimeUnit.SECONDS)).isEqualTo("false/false");
    assertThat(curator.checkExists().forPath(PATHS.resource(RES))).isNull();
    Answer<String> retry = new Answer<>();
    core.submit(retry, acquire("req-1", owner, RES, retry));
    assertThat(retry.result.get(20, TimeUnit.SECONDS)).isEqualTo("granted");
    assertThat(curator.checkExists().forPath(PATHS.resource(RES))).isNotNull();
    assertThat(fatal.get()).isNull();
  }

  @Test
  void aLockGrantedAsItsCallerGoesAwayIsGivenBack() throws Exception {
    Owner owner = join("node1");

    long heldId = hold(owner, RES, "h");
    Answer<LockReply> waiter = new Answer<>();
    LeaderCore.Waiter parkedWaiter = queue(owner, RES, waiter);

    // In one batch: the holder releases (granting the waiter), then the waiter's call goes away
    // before that grant is written and answered.
    CountDownLatch gateOpen = holdEngine();
    Answer<String> released = new Answer<>();
    core.submit(
        released,
        (engine, fx) -> {
          engine.release(owner, heldId, null, fx);
          return () -> LeaderCore.reply(released, "released");
        });
    core.submit(null, (engine, fx) -> core.callerGone(parkedWaiter, engine, fx));
    gateOpen.countDown();
    assertThat(released.status().isOk()).isTrue();

    Answer<String> seen = new Answer<>();
    core.submit(
        seen,
        (engine, fx) -> {
          String s = String.valueOf(engine.resource(RES).isPresent());
          return () -> LeaderCore.reply(seen, s);
        });
    assertThat(seen.result.get(20, TimeUnit.SECONDS))
        .as("nobody is left to tell about the grant, so the lock must not stay held")
        .isEqualTo("false");
    assertThat(waiter.result).isNotDone();
    assertThat(curator.checkExists().forPath(PATHS.resource(RES))).isNull();
  }

  /** Opens a session of {@code owner} whose events go to {@code events}; returns its id. */
  private long session(Owner owner, Events events) throws Exception {
    AtomicLong id = new AtomicLong();
    Answer<String> opened = new Answer<>();
    core.submit(
        opened,
        (engine, fx) -> {
          id.set(core.openSession(owner, "test", 0, List.of(), events).id);
          return () -> LeaderCore.reply(opened, "opened");
        });
    assertThat(opened.status().isOk()).isTrue();
    return id.get();
  }

  /** Acquires EX on {@code key} in session {@code sessionId} and waits for it; returns its id. */
  private long holdIn(Owner owner, long sessionId, ResourceKey key, boolean notifyBlocking)
      throws Exception {
    return granted(
        new AcquireCommand(
            "h-" + owner.node(), owner, sessionId, key, LockMode.EX, false, false, notifyBlocking));
  }

  /** Runs {@code cmd}, which must be granted at once; returns the lock's id. */
  private long granted(AcquireCommand cmd) throws Exception {
    AtomicLong id = new AtomicLong();
    Answer<String> answer = new Answer<>();
    core.submit(
        answer,
        (engine, fx) -> {
          LockResult r = engine.acquire(cmd, fx);
          id.set(r.lock().lockId());
          return () -> LeaderCore.reply(answer, r.outcome().name());
        });
    assertThat(answer.result.get(20, TimeUnit.SECONDS)).isEqualTo("GRANTED");
    return id.get();
  }

  @Test
  void aHintGoesOutBeforeTheWaitersWriteIsDurableAFullNotificationAfterIt() throws Exception {
    Owner hinted = join("node1");
    Owner told = join("node2");
    Owner asker = join("node3");
    Events hintedEvents = new Events();
    Events toldEvents = new Events();
    long hintedLock = holdIn(hinted, session(hinted, hintedEvents), RES, false);
    long toldLock = holdIn(told, session(told, toldEvents), OTHER, true);

    // The asker queues behind both holders; its writes reach ZooKeeper but do not count as
    // durable until the gate opens.
    CompletableFuture<Void> gate = store.shut();
    for (ResourceKey key : List.of(RES, OTHER)) {
      core.submit(
          null,
          (engine, fx) -> {
            engine.acquire(
                new AcquireCommand(
                    "w-" + key.resource(), asker, 0, key, LockMode.EX, false, true, false),
                fx);
            return null;
          });
    }

    // A hint only makes the holder send a release it has made; it need not wait for the write.
    await().atMost(Duration.ofSeconds(10)).until(() -> hintedEvents.blocking(hintedLock, true));
    // A full notification reaches a listener, which must have heard of its grant first: it
    // waits until the request that blocks is durable.
    await()
        .during(Duration.ofMillis(500))
        .atMost(Duration.ofSeconds(5))
        .until(() -> toldEvents.received.isEmpty());

    gate.complete(null);
    await().atMost(Duration.ofSeconds(10)).until(() -> toldEvents.blocking(toldLock, false));
    assertThat(hintedEvents.received).as("one hint per blocking request").hasSize(1);
    assertThat(toldEvents.received).hasSize(1);
  }

  @Test
  void aFullNotificationGoesOutAfterTheGrantOfTheLockItIsAbout() throws Exception {
    Owner holder = join("node1");
    Owner asker = join("node2");
    List<String> sent = new CopyOnWriteArrayList<>();
    long sessionId =
        session(
            holder,
            new Events() {
              @Override
              public void onNext(SessionEvent e) {
                sent.add("notification");
              }
            });

    // One batch: the holder is granted (and asked to be told), the asker queues behind it.
    CountDownLatch gateOpen = holdEngine();
    core.submit(
        null,
        (engine, fx) -> {
          engine.acquire(
              new AcquireCommand("h", holder, sessionId, RES, LockMode.EX, false, false, true), fx);
          // As a lock stream answers: with the rest of the pass, when its answer batch closes.
          return () -> {
            if (!AnswerBatch.sendAtClose(() -> sent.add("grant"))) {
              sent.add("grant");
            }
          };
        });
    core.submit(
        null,
        (engine, fx) -> {
          engine.acquire(
              new AcquireCommand("w", asker, 0, RES, LockMode.EX, false, true, false), fx);
          return null;
        });
    gateOpen.countDown();

    await().atMost(Duration.ofSeconds(10)).until(() -> sent.size() == 2);
    assertThat(sent).containsExactly("grant", "notification");
  }

  /** Acquires an EX lock on {@code key} for {@code owner} and waits for it; returns its id. */
  private long hold(Owner owner, ResourceKey key, String requestId) throws Exception {
    return holdIn(owner, key, LockMode.EX, requestId);
  }

  /** Queues an EX request of {@code owner} on {@code key} behind its holder; returns its waiter. */
  private LeaderCore.Waiter queue(Owner owner, ResourceKey key, Answer<LockReply> waiter)
      throws Exception {
    AtomicReference<LeaderCore.Waiter> parked = new AtomicReference<>();
    Answer<String> queued = new Answer<>();
    core.submit(
        queued,
        (engine, fx) -> {
          long id =
              engine
                  .acquire(
                      new AcquireCommand(
                          "w-" + owner.node(), owner, 0, key, LockMode.EX, false, true, false),
                      fx)
                  .lock()
                  .lockId();
          LeaderCore.Waiter w = new LeaderCore.Waiter(waiter, id, null, false);
          core.park(w, fx);
          parked.set(w);
          return () -> LeaderCore.reply(queued, "queued");
        });
    assertThat(queued.status().isOk()).isTrue();
    return parked.get();
  }

  private Answer<String> releaseDeferrable(Owner owner, long lockId) {
    Answer<String> released = new Answer<>();
    core.submit(
        released,
        LeaderCore.Needs.lock(lockId, owner.node()),
        true,
        (engine, fx) -> {
          engine.release(owner, lockId, null, fx);
          return () -> LeaderCore.reply(released, "released");
        });
    return released;
  }

  /** The zxid of a new probe znode: transactions between two probes = difference - 1. */
  private long zxid() throws Exception {
    String p =
        curator
            .create()
            .withMode(org.apache.zookeeper.CreateMode.PERSISTENT_SEQUENTIAL)
            .forPath("/probe-");
    return curator.checkExists().forPath(p).getCzxid();
  }

  @Test
  void aReleaseNobodyWaitsForIsCommittedWithTheNextChange() throws Exception {
    Owner owner = join("node1");
    long lockId = hold(owner, RES, "h");

    long before = zxid();
    Answer<String> released = releaseDeferrable(owner, lockId);
    // Applied (the count drops once the batch is through the engine) but not written.
    org.awaitility.Awaitility.await()
        .atMost(Duration.ofSeconds(20))
        .until(() -> core.lockCount() == 0);
    assertThat(released.result).as("not durable yet, so not answered").isNotDone();
    assertThat(curator.checkExists().forPath(PATHS.resource(RES))).isNotNull();

    // The next change carries the release: both are answered after one transaction.
    Answer<String> next = new Answer<>();
    core.submit(next, acquire("n", owner, OTHER, next));
    assertThat(next.status().isOk()).isTrue();
    assertThat(released.status().isOk()).isTrue();
    long after = zxid();
    assertThat(after - before - 1).as("transactions for the release and the grant").isEqualTo(1);
    assertThat(curator.checkExists().forPath(PATHS.resource(RES))).isNull();
    assertThat(curator.checkExists().forPath(PATHS.resource(OTHER))).isNotNull();
  }

  @Test
  void aReleaseThatWakesAWaiterIsNotDeferred() throws Exception {
    Owner holder = join("node1");
    Owner other = join("node2");
    long lockId = hold(holder, RES, "h");
    Answer<LockReply> waiter = new Answer<>();
    queue(other, RES, waiter);

    Answer<String> released = releaseDeferrable(holder, lockId);
    // Well within the 30 s this test's core would hold a deferred release.
    assertThat(waiter.result.get(10, TimeUnit.SECONDS).getLockId()).isNotZero();
    assertThat(released.status().isOk()).isTrue();
  }

  @Test
  void aDeferredReleaseIsWrittenAloneWhenNothingFollows() throws Exception {
    core.close();
    core = ServerTestSupport.leaderCore(new LockStore(curator, PATHS), "s1", timers, fatal::set);
    core.deferReleasesFor(Duration.ofMillis(200));
    core.start();
    Owner owner = join("node1");
    long lockId = hold(owner, RES, "h");

    Answer<String> released = releaseDeferrable(owner, lockId);
    assertThat(released.status().isOk()).isTrue();
    assertThat(curator.checkExists().forPath(PATHS.resource(RES))).isNull();
  }

  /** Acquires EX with NOQUEUE for {@code owner}; answers with the outcome's name. */
  private LeaderCore.Task tryAcquire(Owner o, ResourceKey key, Answer<String> a) {
    return (engine, fx) -> {
      String outcome =
          engine
              .acquire(
                  new AcquireCommand(
                      "try-" + o.node() + "-" + key, o, 0, key, LockMode.EX, true, true, false),
                  fx)
              .outcome()
              .name();
      return () -> LeaderCore.reply(a, outcome);
    };
  }

  /** Takes {@code mode} on {@code key} for {@code owner}, granted at once; returns the lock id. */
  private long holdIn(Owner owner, ResourceKey key, LockMode mode, String requestId)
      throws Exception {
    return granted(new AcquireCommand(requestId, owner, 0, key, mode, false, true, false));
  }

  /** Answered once every batch submitted before it is durable and its waiters answered. */
  private void afterEverythingBefore() throws Exception {
    Answer<String> probe = new Answer<>();
    core.submit(probe, (engine, fx) -> () -> LeaderCore.reply(probe, "done"));
    assertThat(probe.result.get(20, TimeUnit.SECONDS)).isEqualTo("done");
  }

  /**
   * A conversion reuses its lock's id. A caller gives up its conversion and asks again while the
   * end of the first is still being written: that end must not answer the second, which still waits
   * (the engine has it converting) and is granted later. The second request may land in the batch
   * that ended the first, or in a later one.
   */
  @ParameterizedTest
  @ValueSource(booleans = {true, false})
  void aWaiterIsAnsweredOnlyByWhatHappensToItsLockAfterItParked(boolean sameBatch)
      throws Exception {
    Owner a = join("node1");
    Owner b = join("node2");
    long lockA = holdIn(a, RES, LockMode.PR, "a");
    long lockB = holdIn(b, RES, LockMode.PR, "b");
    CompletableFuture<Void> gate = store.shut();
    Answer<LockReply> first = new Answer<>();
    AtomicReference<LeaderCore.Waiter> firstWaiter = new AtomicReference<>();
    CountDownLatch gaveUp = new CountDownLatch(1);
    CountDownLatch engine = holdEngine(); // what comes next is one batch
    core.submit(
        first,
        (e, fx) -> {
          e.convert(a, lockA, LockMode.EX, false, null, null, fx);
          LeaderCore.Waiter w = new LeaderCore.Waiter(first, lockA, null, true);
          core.park(w, fx);
          firstWaiter.set(w);
          return null;
        });
    core.submit(
        null,
        (e, fx) -> {
          gaveUp.countDown();
          return core.callerGone(firstWaiter.get(), e, fx);
        });
    if (!sameBatch) {
      engine.countDown();
      assertThat(gaveUp.await(10, TimeUnit.SECONDS)).isTrue();
    }
    Answer<LockReply> second = new Answer<>();
    AtomicReference<Outcome> secondOutcome = new AtomicReference<>();
    core.submit(
        second,
        (e, fx) -> {
          LockResult r = e.convert(a, lockA, LockMode.EX, false, null, null, fx);
          secondOutcome.set(r.outcome());
          if (r.outcome() == Outcome.QUEUED) {
            core.park(new LeaderCore.Waiter(second, lockA, null, true), fx);
          }
          return null;
        });
    engine.countDown();
    gate.complete(null);
    afterEverythingBefore();
    assertThat(secondOutcome.get()).isEqualTo(Outcome.QUEUED);
    assertThat(second.result)
        .as("the second conversion still waits (%s)", second.result)
        .isNotDone();

    Answer<String> released = new Answer<>();
    core.submit(
        released,
        (e, fx) -> {
          e.release(b, lockB, null, fx);
          return () -> LeaderCore.reply(released, "released");
        });
    assertThat(released.status().isOk()).isTrue();
    assertThat(second.result.get(20, TimeUnit.SECONDS).getMode())
        .isEqualTo(io.clusterlvm.dlm.proto.Mode.EX);
    assertThat(first.result).isNotDone(); // it went away; nobody answers it
  }

  /**
   * An acquire retried (same request id) while the first call still waits for the grant's write is
   * told it holds the lock; the first call going away then must not give the lock back.
   */
  @Test
  void aLockARetryWasToldOfIsNotGivenBackWhenTheFirstCallGoesAway() throws Exception {
    Owner a = join("node1");
    Owner b = join("node2");
    long holder = holdIn(b, RES, LockMode.EX, "holder");
    Answer<LockReply> original = new Answer<>();
    AtomicReference<LeaderCore.Waiter> waiter = new AtomicReference<>();
    AtomicLong lockId = new AtomicLong();
    core.submit(
        original,
        (engine, fx) -> {
          LockResult r =
              engine.acquire(
                  new AcquireCommand("req", a, 0, RES, LockMode.EX, false, true, false), fx);
          lockId.set(r.lock().lockId());
          LeaderCore.Waiter w = new LeaderCore.Waiter(original, r.lock().lockId(), null, false);
          core.park(w, fx);
          waiter.set(w);
          return null;
        });
    afterEverythingBefore();
    CompletableFuture<Void> gate = store.shut();
    core.submit(
        null,
        (engine, fx) -> {
          engine.release(b, holder, null, fx); // grants the waiting request
          return null;
        });
    Answer<String> retry = new Answer<>();
    core.submit(
        retry,
        (engine, fx) -> {
          LockResult r =
              engine.acquire(
                  new AcquireCommand("req", a, 0, RES, LockMode.EX, false, true, false), fx);
          if (r.outcome() == Outcome.GRANTED && r.retry()) {
            core.claim(r.lock().lockId()); // as DlmGrpcService does for such a retry
          }
          return () -> LeaderCore.reply(retry, r.outcome().name());
        });
    core.submit(null, (engine, fx) -> core.callerGone(waiter.get(), engine, fx));
    gate.complete(null);
    assertThat(retry.result.get(20, TimeUnit.SECONDS)).isEqualTo("GRANTED");
    Answer<String> state = new Answer<>();
    core.submit(
        state,
        (engine, fx) -> {
          String st = engine.lock(lockId.get()).map(l -> l.state().name()).orElse("released");
          return () -> LeaderCore.reply(state, st);
        });
    assertThat(state.result.get(20, TimeUnit.SECONDS)).isEqualTo("GRANTED");
  }

  /**
   * A session whose node shows no sign of life keeps its locks frozen for the fence; once the node
   * is purged, the leader forgets the session too (it kept one per session of every dead host).
   */
  @Test
  void aFrozenSessionIsForgottenWhenItsNodeIsPurged() throws Exception {
    restartWithLiveness(owner -> NodeLiveness.Lease.NONE);
    Owner owner = join("node1");
    Events events = new Events();
    long sid = session(owner, events);
    holdIn(owner, sid, RES, false);
    core.submit(null, (e, fx) -> core.streamEnded(sid, events, e, fx));
    await("the session's end is decided: frozen")
        .atMost(Duration.ofSeconds(10))
        .until(() -> isFrozen(owner));
    assertThat(core.sessionCount()).isEqualTo(1);

    Answer<String> purged = new Answer<>();
    core.submit(
        purged,
        (engine, fx) -> {
          engine.purge(owner, fx);
          core.forgetSessionsOf(owner);
          return () -> LeaderCore.reply(purged, "purged");
        });
    assertThat(purged.status().isOk()).isTrue();
    assertThat(core.sessionCount()).isZero();
  }

  /**
   * A session that holds no locks and whose node shows no sign of life (it left, and its process
   * exited without closing the session) has nothing to freeze for the fence: it ends. Before, the
   * leader kept it until the next leader change, with a warning of frozen locks.
   */
  @Test
  void aBrokenSessionWithoutLocksOfANodeWithoutLeaseEnds() throws Exception {
    restartWithLiveness(owner -> NodeLiveness.Lease.NONE);
    Owner owner = join("node1");
    Events events = new Events();
    long sid = session(owner, events);
    assertThat(core.sessionCount()).isEqualTo(1);
    core.submit(null, (e, fx) -> core.streamEnded(sid, events, e, fx));
    await("the session ends").atMost(Duration.ofSeconds(10)).until(() -> core.sessionCount() == 0);
    assertThat(core.frozenSessions()).isZero();
  }

  /**
   * A lease-bound session whose connection flaps (breaks, resumes, breaks...) keeps its locks, and
   * the leader keeps one decision going for it, that of its latest break: each break used to add a
   * chain of lease reads that lived as long as the session stayed broken.
   */
  @Test
  void aFlappingLeaseBoundSessionKeepsOneDecisionGoing() throws Exception {
    AtomicLong heartbeat = new AtomicLong();
    AtomicLong bound = new AtomicLong();
    List<Long> reads = new CopyOnWriteArrayList<>();
    restartWithLiveness(
        owner -> {
          reads.add(System.nanoTime());
          return new NodeLiveness.Lease(heartbeat.incrementAndGet(), bound.get());
        });
    Owner owner = join("node1");
    Events events = new Events();
    long sid = session(owner, events);
    bound.set(sid);
    holdIn(owner, sid, RES, false);
    for (int i = 0; i < 5; i++) {
      core.submit(null, (e, fx) -> core.streamEnded(sid, events, e, fx));
      Thread.sleep(250); // nothing to wait on: the decision runs its rounds meanwhile
      Answer<String> resumed = new Answer<>();
      core.submit(
          resumed,
          (engine, fx) -> {
            core.openSession(owner, "test", sid, List.of(), events);
            return () -> LeaderCore.reply(resumed, "resumed");
          });
      assertThat(resumed.status().isOk()).isTrue();
    }
    core.submit(null, (e, fx) -> core.streamEnded(sid, events, e, fx));
    Thread.sleep(500); // let decisions of earlier breaks see they are stale
    int before = reads.size();
    Thread.sleep(1000);
    // One decision reads once per 100 ms grace; six would read about six times as often.
    assertThat(reads.size() - before).isBetween(1, 14);
    Answer<String> probe = new Answer<>();
    core.submit(
        probe,
        (engine, fx) ->
            () -> LeaderCore.reply(probe, String.valueOf(engine.lockCount(owner.node()))));
    assertThat(probe.result.get(10, TimeUnit.SECONDS)).isEqualTo("1");
  }

  /** Replaces the core with one that reads node liveness from {@code liveness}, 100 ms grace. */
  private void restartWithLiveness(NodeLiveness liveness) throws Exception {
    core.close();
    core =
        new LeaderCore(
            new LockStore(curator, PATHS),
            "s2",
            Clock.systemUTC(),
            Duration.ofSeconds(5),
            Duration.ofMillis(100),
            liveness,
            timers,
            fatal::set);
    core.start();
  }

  /** Whether the core froze a session of {@code owner}: its locks are held by nobody resumable. */
  private boolean isFrozen(Owner owner) throws Exception {
    Answer<String> probe = new Answer<>();
    core.submit(
        probe,
        (engine, fx) ->
            () -> LeaderCore.reply(probe, String.valueOf(engine.lockCount(owner.node()))));
    // Frozen: the stream is gone, the lock is still there, and the decision was made (no timer).
    return probe.result.get(10, TimeUnit.SECONDS).equals("1") && core.frozenSessions() == 1;
  }

  /**
   * Ids (and tokens) are the epoch and a 32-bit counter: a leader whose counter runs low starts the
   * next epoch itself, as a new leader would, and keeps every lock.
   */
  @Test
  void aLeaderWhoseIdsRunLowStartsTheNextEpochAndKeepsItsLocks() throws Exception {
    Owner owner = join("node1");
    long held = hold(owner, RES, "held");
    long firstEpoch = core.epoch();
    core.renewEpochBelow((1L << 32) - 40); // after about forty ids, every epoch
    List<Long> tokens = new CopyOnWriteArrayList<>();
    for (int i = 0; i < 60; i++) {
      Answer<String> done = new Answer<>();
      String requestId = "cycle-" + i;
      core.submit(
          done,
          (engine, fx) -> {
            LockResult r =
                engine.acquire(
                    new AcquireCommand(requestId, owner, 0, OTHER, LockMode.EX, false, true, false),
                    fx);
            tokens.add(r.grant().lock().fencingToken());
            engine.release(owner, r.lock().lockId(), null, fx);
            return () -> LeaderCore.reply(done, "cycled");
          });
      assertThat(done.status().isOk()).as("cycle %d", i).isTrue();
    }
    assertThat(core.epoch()).isGreaterThan(firstEpoch + 1);
    assertThat(tokens).hasSize(60).isSorted().doesNotHaveDuplicates();
    assertThat(tokens.get(59) >>> 32).isEqualTo(core.epoch());
    Answer<String> still = new Answer<>();
    core.submit(
        still,
        (engine, fx) -> {
          String s = engine.lock(held).map(l -> l.state().name()).orElse("gone");
          return () -> LeaderCore.reply(still, s);
        });
    assertThat(still.result.get(10, TimeUnit.SECONDS)).isEqualTo("GRANTED");
    assertThat(fatal.get()).isNull();
  }

  @Test
  void aNewLeaderServesALockspaceOnlyOnceItsRecordsAreIn() throws Exception {
    Owner holder = join("node1");
    Owner other = join("node2");
    Owner third = join("node3");
    long thirdsLock = hold(third, new ResourceKey("ls-50", "third"), "third");
    // Enough records that the new leader is still reading when the requests come.
    int lockspaces = 100;
    int perLockspace = 100;
    List<Answer<String>> taken = new ArrayList<>();
    List<ResourceKey> keys = new ArrayList<>();
    for (int l = 0; l < lockspaces; l++) {
      for (int r = 0; r < perLockspace; r++) {
        ResourceKey key = new ResourceKey("ls-" + l, "res-" + r);
        Answer<String> a = new Answer<>();
        core.submit(a, acquire("take-" + l + "-" + r, holder, key, a));
        taken.add(a);
        keys.add(key);
      }
    }
    for (Answer<String> a : taken) {
      assertThat(a.status().isOk()).isTrue();
    }
    core.close();

    // A new leader serves while it loads: every request arrives before the table is in, and
    // each may run only once its lockspace is. Run early, it would find the resource free.
    core = ServerTestSupport.leaderCore(new LockStore(curator, PATHS), "s2", timers, fatal::set);
    core.start();
    // A node's requests keep their order while the table loads: a release that waits for its
    // lockspace holds back the same node's request in a lockspace that needs no loading.
    AtomicInteger answered = new AtomicInteger();
    AtomicLong releasedAs = new AtomicLong();
    AtomicLong acquiredAs = new AtomicLong();
    Answer<String> thirdReleased = new Answer<>();
    core.submit(
        thirdReleased,
        LeaderCore.Needs.lock(thirdsLock, third.node()),
        (engine, fx) -> {
          engine.release(third, thirdsLock, null, fx);
          releasedAs.set(answered.incrementAndGet());
          return () -> LeaderCore.reply(thirdReleased, "released");
        });
    Answer<String> thirdAcquired = new Answer<>();
    core.submit(
        thirdAcquired,
        LeaderCore.Needs.lockspace("other-new-ls", third.node()),
        (engine, fx) -> {
          acquiredAs.set(answered.incrementAndGet());
          return tryAcquire(third, new ResourceKey("other-new-ls", "r"), thirdAcquired)
              .apply(engine, fx);
        });
    List<Answer<String>> tries = new ArrayList<>();
    for (int i = keys.size() - 1; i >= 0; i--) { // the loader's order reversed
      Answer<String> a = new Answer<>();
      core.submit(
          a,
          LeaderCore.Needs.lockspace(keys.get(i).lockspace(), other.node()),
          tryAcquire(other, keys.get(i), a));
      tries.add(a);
    }
    Answer<String> fresh = new Answer<>();
    core.submit(
        fresh,
        LeaderCore.Needs.lockspace("new-ls", other.node()),
        tryAcquire(other, new ResourceKey("new-ls", "res"), fresh));
    for (Answer<String> a : tries) {
      assertThat(a.result.get(20, TimeUnit.SECONDS)).isEqualTo("WOULD_BLOCK");
    }
    assertThat(fresh.result.get(20, TimeUnit.SECONDS)).isEqualTo("GRANTED");
    assertThat(thirdReleased.status().isOk()).isTrue();
    assertThat(thirdAcquired.result.get(20, TimeUnit.SECONDS)).isEqualTo("GRANTED");
    assertThat(releasedAs.get())
        .as("node3's release ran before its later request")
        .isLessThan(acquiredAs.get());

    // A task that needs the whole table sees all of it.
    Answer<String> count = new Answer<>();
    core.submit(
        count,
        (engine, fx) -> {
          String n = String.valueOf(engine.lockCount());
          return () -> LeaderCore.reply(count, n);
        });
    assertThat(count.result.get(20, TimeUnit.SECONDS))
        .isEqualTo(String.valueOf(lockspaces * perLockspace + 2));
    assertThat(fatal.get()).isNull();
  }

  /**
   * While a new leader loads the table, it does not know a session yet, only its locks as they come
   * in: a resume by another owner that names them is refused all the same, and hears nothing of
   * them (found in review, once a resume was told whom its locks block).
   */
  @Test
  void aResumeByAnotherOwnerIsRefusedWhileTheTableLoads() throws Exception {
    Owner owner = join("node1");
    Owner other = join("node2");
    long sid = session(owner, new Events());
    long held = holdIn(owner, sid, new ResourceKey("ls-a", "res"), true);
    hold(owner, new ResourceKey("ls-b", "res"), "held-b");
    core.close();

    LoadGatedStore gated = new LoadGatedStore(curator, PATHS);
    CompletableFuture<Void> bRead = gated.gate("ls-b"); // the table stays loading
    core = ServerTestSupport.leaderCore(gated, "s2", timers, fatal::set);
    core.start();
    Answer<String> resumed = new Answer<>();
    core.submit(
        resumed,
        LeaderCore.Needs.resume(sid, List.of(held)),
        (engine, fx) -> {
          core.openSession(other, "intruder", sid, List.of(held), new Events());
          return () -> LeaderCore.reply(resumed, "resumed");
        });
    assertThat(resumed.status().getCode()).isEqualTo(Status.Code.PERMISSION_DENIED);
    assertThat(core.tableLoading()).isTrue();
    bRead.complete(null);
  }

  /**
   * A session that resumes on a new leader before the lockspace of its persistent lock is read is
   * told whom that lock blocks once it is: its resume could not tell it (the lock was not loaded)
   * and does not wait for it (a client does not name its persistent locks), and a holder that gives
   * way only when told would keep its waiter waiting (found in review).
   */
  @Test
  void aSessionResumedBeforeItsPersistentLockIsReadIsToldWhomItBlocksOnceItIs() throws Exception {
    Owner holder = join("node1");
    Owner waiter = join("node2");
    long sid = session(holder, new Events());
    ResourceKey key = new ResourceKey("ls-a", "res");
    long held =
        granted(new AcquireCommand("h-node1", holder, sid, key, LockMode.EX, false, true, true));
    queue(waiter, key, new Answer<>());
    core.close();

    LoadGatedStore gated = new LoadGatedStore(curator, PATHS);
    CompletableFuture<Void> aRead = gated.gate("ls-a");
    core = ServerTestSupport.leaderCore(gated, "s2", timers, fatal::set);
    core.start();
    Events resumedStream = new Events();
    Answer<String> resumed = new Answer<>();
    core.submit(
        resumed,
        LeaderCore.Needs.resume(sid, List.of()),
        (engine, fx) -> {
          core.openSession(holder, "test", sid, List.of(), resumedStream);
          return () -> LeaderCore.reply(resumed, "resumed");
        });
    assertThat(resumed.result.get(20, TimeUnit.SECONDS)).isEqualTo("resumed");
    assertThat(core.tableLoading()).isTrue();
    assertThat(resumedStream.blocking(held, false)).isFalse();

    aRead.complete(null);
    await().atMost(Duration.ofSeconds(20)).until(() -> resumedStream.blocking(held, false));
    assertThat(fatal.get()).isNull();
  }

  /** Submits {@code owner}'s release of {@code lockId}, which adds {@code label} to {@code ran}. */
  private Answer<String> releaseNoting(Owner owner, long lockId, List<String> ran, String label) {
    Answer<String> released = new Answer<>();
    core.submit(
        released,
        LeaderCore.Needs.lock(lockId, owner.node()),
        (engine, fx) -> {
          ran.add(label);
          engine.release(owner, lockId, null, fx);
          return () -> LeaderCore.reply(released, "released");
        });
    return released;
  }

  /** The real store, whose reading of a lockspace waits until the test lets it go on. */
  private static final class LoadGatedStore extends LockStore {
    private final Map<String, CompletableFuture<Void>> gates = new ConcurrentHashMap<>();

    LoadGatedStore(CuratorFramework curator, ZkPaths paths) {
      super(curator, paths);
    }

    /** Holds back the reading of {@code lockspace}; completing the result lets it go on. */
    CompletableFuture<Void> gate(String lockspace) {
      return gates.computeIfAbsent(lockspace, k -> new CompletableFuture<>());
    }

    @Override
    LockspaceRead readLockspace(String lockspace, Consumer<List<ResourceView>> sink)
        throws Exception {
      CompletableFuture<Void> g = gates.get(lockspace);
      if (g != null) {
        g.get(); // interrupted when the loader is closed
      }
      return super.readLockspace(lockspace, sink);
    }
  }

  /**
   * A node's requests run in the order they came even when their lockspaces come in one by one: a
   * release in A waits for A, a request in B for B, and an acquire in A behind both. Once A is in,
   * the release may run, and must not be put behind the acquire, which would find the lock still
   * held.
   */
  @Test
  void aNodesRequestsKeepTheirOrderWhileTheirLockspacesComeInOneByOne() throws Exception {
    Owner owner = join("node1");
    ResourceKey inA = new ResourceKey("ls-a", "res");
    long held = hold(owner, inA, "held");
    hold(owner, new ResourceKey("ls-b", "res"), "held-b"); // so that ls-b must be read too
    core.close();

    LoadGatedStore gated = new LoadGatedStore(curator, PATHS);
    CompletableFuture<Void> aRead = gated.gate("ls-a");
    CompletableFuture<Void> bRead = gated.gate("ls-b");
    core = ServerTestSupport.leaderCore(gated, "s2", timers, fatal::set);
    core.start();
    List<String> ran = new CopyOnWriteArrayList<>();
    Answer<String> released = releaseNoting(owner, held, ran, "release in A");
    Answer<String> requestedInB = new Answer<>();
    LeaderCore.Task inB = tryAcquire(owner, new ResourceKey("ls-b", "other"), requestedInB);
    core.submit(
        requestedInB,
        LeaderCore.Needs.lockspace("ls-b", owner.node()),
        (engine, fx) -> {
          ran.add("request in B");
          return inB.apply(engine, fx);
        });
    Answer<String> acquiredInA = new Answer<>();
    LeaderCore.Task againInA = tryAcquire(owner, inA, acquiredInA);
    core.submit(
        acquiredInA,
        LeaderCore.Needs.lockspace("ls-a", owner.node()),
        (engine, fx) -> {
          ran.add("acquire in A");
          return againInA.apply(engine, fx);
        });
    Answer<String> aIsIn = new Answer<>(); // nobody's request: runs as soon as ls-a is in
    core.submit(
        aIsIn,
        LeaderCore.Needs.lockspace("ls-a", null),
        (engine, fx) -> () -> LeaderCore.reply(aIsIn, "in"));

    aRead.complete(null);
    assertThat(aIsIn.result.get(20, TimeUnit.SECONDS)).isEqualTo("in");
    bRead.complete(null);

    assertThat(acquiredInA.result.get(20, TimeUnit.SECONDS))
        .as("the acquire ran after the node's earlier release")
        .isEqualTo("GRANTED");
    assertThat(released.status().isOk()).isTrue();
    assertThat(requestedInB.result.get(20, TimeUnit.SECONDS)).isEqualTo("GRANTED");
    assertThat(ran).containsExactly("release in A", "request in B", "acquire in A");
    assertThat(fatal.get()).isNull();
  }

  /**
   * A lockspace whose read breaks off after part of its records came in (a lost connection) is read
   * again by the loader: no reload, no new epoch, and no record restored twice. A request in it
   * waits for the second read rather than fail.
   */
  @Test
  void aLockspaceReadThatBreaksOffIsReadAgainWithoutAReload() throws Exception {
    Owner owner = join("node1");
    Owner other = join("node2");
    int locks = 1200; // three read requests: the second breaks off once
    Answer<String> taken = new Answer<>();
    core.submit(
        taken,
        (engine, fx) -> {
          for (int i = 0; i < locks; i++) {
            engine.acquire(
                new AcquireCommand(
                    "t" + i,
                    owner,
                    0,
                    new ResourceKey("ls-a", "r" + i),
                    LockMode.EX,
                    false,
                    true,
                    false),
                fx);
          }
          return () -> LeaderCore.reply(taken, "taken");
        });
    assertThat(taken.status().isOk()).isTrue();
    core.close();

    AtomicInteger reads = new AtomicInteger();
    LockStore breaking =
        new LockStore(curator, PATHS) {
          @Override
          LockspaceRead readLockspace(String lockspace, Consumer<List<ResourceView>> sink)
              throws Exception {
            if (reads.incrementAndGet() > 1) {
              return super.readLockspace(lockspace, sink);
            }
            AtomicInteger answers = new AtomicInteger();
            return super.readLockspace(
                lockspace,
                views -> {
                  if (answers.incrementAndGet() == 2) {
                    throw new IllegalStateException("connection lost (the test)");
                  }
                  sink.accept(views);
                });
          }
        };
    core = ServerTestSupport.leaderCore(breaking, "s2", timers, fatal::set);
    core.start();
    long epoch = core.epoch();
    Answer<String> tried = new Answer<>();
    core.submit(
        tried,
        LeaderCore.Needs.lockspace("ls-a", other.node()),
        tryAcquire(other, new ResourceKey("ls-a", "r7"), tried));
    assertThat(tried.result.get(20, TimeUnit.SECONDS)).isEqualTo("WOULD_BLOCK");
    Answer<String> count = new Answer<>();
    core.submit(
        count,
        (engine, fx) -> {
          // By lock id and by owner: a record restored twice would count once and twice.
          String n = engine.lockCount() + " " + engine.lockCount(owner.node());
          return () -> LeaderCore.reply(count, n);
        });
    assertThat(count.result.get(20, TimeUnit.SECONDS)).isEqualTo(locks + " " + locks);
    assertThat(reads.get()).isEqualTo(2);
    assertThat(core.epoch()).as("no reload").isEqualTo(epoch);
    assertThat(fatal.get()).isNull();
  }

  /**
   * A corrupt record in one lockspace must not cost the other lockspaces their order: a node's
   * release of a lock in a lockspace still being read keeps waiting (it is not failed because the
   * table can't load to the end), and runs before the node's later request. Only once every
   * lockspace not read is corrupt do calls on locks not read fail (found in review).
   */
  @Test
  void aCorruptLockspaceLeavesTheOrderOfRequestsInOthersAlone() throws Exception {
    Owner owner = join("node1");
    ResourceKey inSlow = new ResourceKey("ls-slow", "res");
    long held = hold(owner, inSlow, "held");
    hold(owner, new ResourceKey("ls-bad", "res"), "held-bad");
    core.close();
    curator
        .create()
        .creatingParentsIfNeeded()
        .forPath(PATHS.resource(new ResourceKey("ls-bad", "damaged")), new byte[] {(byte) 0xff});

    LoadGatedStore gated = new LoadGatedStore(curator, PATHS);
    CompletableFuture<Void> slowRead = gated.gate("ls-slow");
    core = ServerTestSupport.leaderCore(gated, "s2", timers, fatal::set);
    core.start();
    List<String> ran = new CopyOnWriteArrayList<>();
    Answer<String> released = releaseNoting(owner, held, ran, "release");
    Answer<String> again = new Answer<>();
    LeaderCore.Task acquireAgain = tryAcquire(owner, inSlow, again);
    core.submit(
        again,
        LeaderCore.Needs.lockspace("ls-slow", owner.node()),
        (engine, fx) -> {
          ran.add("acquire");
          return acquireAgain.apply(engine, fx);
        });
    // ls-bad is found corrupt at once, and again after 100, 200, 400 ms.
    Answer<String> inBad = new Answer<>();
    core.submit(
        inBad,
        LeaderCore.Needs.lockspace("ls-bad", "node2"),
        tryAcquire(owner, new ResourceKey("ls-bad", "other"), inBad));
    assertThat(inBad.status().getDescription()).contains("lockspace ls-bad cannot be read");
    // A call on a lock that is nowhere: it may yet come in with ls-slow.
    Answer<String> unknown = new Answer<>();
    core.submit(
        unknown,
        LeaderCore.Needs.lock(held + 1_000_000, "node3"),
        (engine, fx) -> () -> LeaderCore.reply(unknown, "ran"));
    Thread.sleep(800);
    assertThat(released.result).as("the release waits for ls-slow").isNotDone();
    assertThat(unknown.result).isNotDone();

    slowRead.complete(null);
    assertThat(released.status().isOk()).isTrue();
    assertThat(again.result.get(20, TimeUnit.SECONDS)).isEqualTo("GRANTED");
    assertThat(ran).containsExactly("release", "acquire");

    // Only ls-bad is left to read: a call on a lock not read (it may be in there) fails now.
    assertThat(unknown.status().getCode()).isEqualTo(Status.Code.UNAVAILABLE);
    assertThat(fatal.get()).isNull();
  }

  @Test
  void aBugWhileAReleaseIsDeferredReloadsOnceAndTheReleaseIsRetried() throws Exception {
    Owner owner = join("node1");
    long lockId = hold(owner, RES, "h");
    long epoch = core.epoch();

    Answer<String> released = releaseDeferrable(owner, lockId);
    Answer<String> bug = new Answer<>();
    core.submit(
        bug,
        (engine, fx) -> {
          throw new IllegalStateException("a simulated engine bug");
        });
    assertThat(bug.status().getCode()).isEqualTo(Status.Code.INTERNAL);
    assertThat(released.status().getCode())
        .as("never written, so the client must retry it")
        .isEqualTo(Status.Code.UNAVAILABLE);
    Answer<String> after = new Answer<>(); // runs after the reload
    core.submit(
        after,
        (engine, fx) -> {
          String e = String.valueOf(core.epoch());
          return () -> LeaderCore.reply(after, e);
        });
    assertThat(after.result.get(20, TimeUnit.SECONDS))
        .as("one reload, one new epoch")
        .isEqualTo(String.valueOf(epoch + 1));
    assertThat(curator.checkExists().forPath(PATHS.resource(RES))).isNotNull();
    assertThat(fatal.get()).isNull();
  }
}
