package io.clusterlvm.dlm.server;

import static org.assertj.core.api.Assertions.assertThat;

import io.clusterlvm.dlm.engine.LockView;
import io.clusterlvm.dlm.engine.QueueState;
import io.clusterlvm.dlm.proto.AcquireRequest;
import io.clusterlvm.dlm.proto.JoinRequest;
import io.clusterlvm.dlm.proto.JoinResponse;
import io.clusterlvm.dlm.proto.LockReply;
import io.clusterlvm.dlm.proto.Mode;
import io.clusterlvm.dlm.proto.Owner;
import io.grpc.stub.ServerCallStreamObserver;
import java.util.Optional;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.Executors;
import java.util.concurrent.ScheduledExecutorService;
import java.util.concurrent.TimeUnit;
import org.apache.curator.framework.CuratorFramework;
import org.apache.curator.test.TestingServer;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

/**
 * Acquires whose caller goes away, or comes twice, while the lock service works on them.
 *
 * <p>A client whose acquire stalls retries it with the same request id, and the retry is granted
 * and answered. The first attempt may still reach the server afterwards, on a call already
 * cancelled (its stream broke, its deadline passed). Finding the lock by request id, that stale
 * attempt released it, as if its caller had gone before hearing of a new grant: another node could
 * then take the lock the client holds. Found in review on 2026-12-07.
 *
 * <p>The gRPC call objects are stand-ins, so that a call can arrive already cancelled or be
 * cancelled at a chosen moment; the lock service, its engine and ZooKeeper are real (the writes can
 * be held back from counting as durable).
 */
@Timeout(value = 60, unit = TimeUnit.SECONDS)
class LateDuplicateAcquireTest {

  private TestingServer zk;
  private CuratorFramework curator;
  private ScheduledExecutorService timers;
  private LeaderCore core;
  private GatedLockStore store;
  private DlmGrpcService service;

  @BeforeEach
  void start() throws Exception {
    zk = new TestingServer();
    curator = ServerTestSupport.connected(zk);
    timers = Executors.newSingleThreadScheduledExecutor();
    store = new GatedLockStore(curator, new ZkPaths("/late"));
    core = ServerTestSupport.leaderCore(store, "s1", timers, e -> {});
    core.start();
    service =
        new DlmGrpcService(
            () -> core,
            new DlmGrpcService.ServerInfo() {
              @Override
              public String serverId() {
                return "s1";
              }

              @Override
              public String zookeeper() {
                return zk.getConnectString();
              }

              @Override
              public String leaderId() {
                return "s1";
              }
            });
  }

  @AfterEach
  void stop() throws Exception {
    core.close();
    timers.shutdownNow();
    curator.close();
    zk.close();
  }

  @Test
  void aStaleAttemptOfAGrantedAcquireLeavesTheLockHeld() throws Exception {
    Owner n1 = join("n1");
    AcquireRequest r1 = acquire("r1", n1, Mode.EX);
    Call<LockReply> retry = new Call<>(false);
    service.acquire(r1, retry);
    long lockId = retry.result.get(20, TimeUnit.SECONDS).getLockId();

    service.acquire(r1, new Call<>(true)); // the first attempt, late and cancelled

    assertThat(lockAfterEverythingBefore(lockId))
        .hasValueSatisfying(l -> assertThat(l.state()).isEqualTo(QueueState.GRANTED));
    // And another node still can't have it.
    Call<LockReply> other = new Call<>(false);
    service.acquire(acquire("r2", join("n2"), Mode.EX).toBuilder().setNoqueue(true).build(), other);
    assertThat(other.result).failsWithin(20, TimeUnit.SECONDS);
  }

  /**
   * A lock granted at once, whose caller goes away (a withdraw, a cancel, a deadline) while the
   * grant's write is on its way, is given back: its answer reaches nobody. Before, only a waiter's
   * grant was; this lock stayed held by nobody who knew of it, unless the client sent Abandon.
   */
  @Test
  void aNewGrantWhoseCallerGoesAwayBeforeItsAnswerIsGivenBack() throws Exception {
    Owner n1 = join("n1");
    CompletableFuture<Void> gate = store.shut();
    Call<LockReply> first = new Call<>(false);
    service.acquire(acquire("r1", n1, Mode.EX), first);
    long lockId = grantedLockIdOf("res");
    first.cancel();
    gate.complete(null);

    assertThat(first.result).failsWithin(1, TimeUnit.SECONDS); // never answered
    Call<LockReply> other = new Call<>(false);
    service.acquire(acquire("r2", join("n2"), Mode.EX).toBuilder().setNoqueue(true).build(), other);
    assertThat(other.result.get(20, TimeUnit.SECONDS).getLockId()).isNotEqualTo(lockId);
    assertThat(lockAfterEverythingBefore(lockId)).isEmpty();
  }

  /** Unless a retry of the same request was told of the lock meanwhile: then it stays. */
  @Test
  void aNewGrantARetryWasToldOfStaysWhenTheFirstCallGoesAway() throws Exception {
    Owner n1 = join("n1");
    CompletableFuture<Void> gate = store.shut();
    Call<LockReply> first = new Call<>(false);
    service.acquire(acquire("r1", n1, Mode.EX), first);
    long lockId = grantedLockIdOf("res");
    Call<LockReply> retry = new Call<>(false);
    service.acquire(acquire("r1", n1, Mode.EX), retry);
    lockAfterEverythingBefore(lockId); // the retry has been taken
    first.cancel();
    gate.complete(null);

    assertThat(retry.result.get(20, TimeUnit.SECONDS).getLockId()).isEqualTo(lockId);
    assertThat(lockAfterEverythingBefore(lockId))
        .hasValueSatisfying(l -> assertThat(l.state()).isEqualTo(QueueState.GRANTED));
  }

  /** The id of the one lock granted on {@code resource}, once the engine has granted one. */
  private long grantedLockIdOf(String resource) {
    return org.awaitility.Awaitility.await()
        .atMost(java.time.Duration.ofSeconds(20))
        .until(
            () -> {
              CompletableFuture<Long> id = new CompletableFuture<>();
              core.submit(
                  null,
                  (engine, fx) -> {
                    id.complete(
                        engine
                            .resource(new io.clusterlvm.dlm.engine.ResourceKey("ls", resource))
                            .filter(r -> !r.granted().isEmpty())
                            .map(r -> r.granted().get(0).lockId())
                            .orElse(0L));
                    return null;
                  });
              return id.get(20, TimeUnit.SECONDS);
            },
            id -> id != 0);
  }

  private Owner join(String node) throws Exception {
    Call<JoinResponse> joined = new Call<>(false);
    service.join(JoinRequest.newBuilder().setNode(node).setBootId("boot").build(), joined);
    long incarnation = joined.result.get(20, TimeUnit.SECONDS).getIncarnation();
    return Owner.newBuilder().setNode(node).setIncarnation(incarnation).build();
  }

  private static AcquireRequest acquire(String requestId, Owner owner, Mode mode) {
    return AcquireRequest.newBuilder()
        .setRequestId(requestId)
        .setOwner(owner)
        .setLockspace("ls")
        .setResource("res")
        .setMode(mode)
        .build();
  }

  /** The lock as the engine has it once everything submitted before has run. */
  private Optional<LockView> lockAfterEverythingBefore(long lockId) throws Exception {
    CompletableFuture<Optional<LockView>> seen = new CompletableFuture<>();
    core.submit(
        null,
        (engine, fx) -> {
          seen.complete(engine.lock(lockId));
          return null;
        });
    return seen.get(20, TimeUnit.SECONDS);
  }

  /** A server call whose one answer is captured; cancelled from the start if asked, or later. */
  private static final class Call<T> extends ServerCallStreamObserver<T> {
    final CompletableFuture<T> result = new CompletableFuture<>();
    private volatile boolean cancelled;
    private volatile Runnable onCancel;

    Call(boolean cancelled) {
      this.cancelled = cancelled;
    }

    /** As gRPC cancels a call: marked cancelled, then its cancel handler runs. */
    void cancel() {
      cancelled = true;
      Runnable r = onCancel;
      if (r != null) {
        r.run();
      }
    }

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

    @Override
    public boolean isCancelled() {
      return cancelled;
    }

    @Override
    public void setOnCancelHandler(Runnable onCancel) {
      this.onCancel = onCancel;
    }

    @Override
    public void setCompression(String compression) {}

    @Override
    public boolean isReady() {
      return true;
    }

    @Override
    public void setOnReadyHandler(Runnable onReady) {}

    @Override
    public void disableAutoInboundFlowControl() {}

    @Override
    public void request(int count) {}

    @Override
    public void setMessageCompression(boolean enable) {}
  }
}
