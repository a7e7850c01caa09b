package io.clusterlvm.dlm.client;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;
import static org.awaitility.Awaitility.await;

import com.google.common.util.concurrent.Futures;
import com.google.common.util.concurrent.ListenableFuture;
import io.clusterlvm.dlm.proto.AcquireRequest;
import io.clusterlvm.dlm.proto.DlmGrpc;
import io.clusterlvm.dlm.proto.LockCall;
import io.clusterlvm.dlm.proto.LockCallResult;
import io.clusterlvm.dlm.proto.LockCallResults;
import io.clusterlvm.dlm.proto.LockCalls;
import io.clusterlvm.dlm.proto.LockReply;
import io.clusterlvm.dlm.proto.Owner;
import io.clusterlvm.dlm.proto.ReleaseRequest;
import io.grpc.CallOptions;
import io.grpc.ManagedChannel;
import io.grpc.Server;
import io.grpc.Status;
import io.grpc.StatusRuntimeException;
import io.grpc.inprocess.InProcessChannelBuilder;
import io.grpc.inprocess.InProcessServerBuilder;
import io.grpc.stub.StreamObserver;
import java.util.List;
import java.util.Optional;
import java.util.concurrent.CopyOnWriteArrayList;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.ScheduledExecutorService;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicLong;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

/**
 * The client's side of a LockStream: answers matched by call id, deadlines and cancels withdrawn on
 * the server, and open calls failed when the stream breaks. The server here is a bare LockStream
 * endpoint that answers only when the test tells it to, so the client's timing can be driven; the
 * lock service itself is tested against a real dlm-server in dlm-server's LockStreamTest.
 */
@Timeout(value = 30, unit = TimeUnit.SECONDS)
class LockStreamTest {
  private static final Owner OWNER = Owner.newBuilder().setNode("node1").setIncarnation(3).build();

  private final List<LockCall> received = new CopyOnWriteArrayList<>();
  private volatile StreamObserver<LockCallResults> answers;
  private Server server;
  private ManagedChannel channel;
  private ScheduledExecutorService timers;
  private ExecutorService callbacks;
  private LockStream stream;

  @BeforeEach
  void start() throws Exception {
    String name = InProcessServerBuilder.generateName();
    server =
        InProcessServerBuilder.forName(name)
            .directExecutor()
            .addService(
                new DlmGrpc.DlmImplBase() {
                  @Override
                  public StreamObserver<LockCalls> lockStream(StreamObserver<LockCallResults> o) {
                    answers = o;
                    return new StreamObserver<>() {
                      @Override
                      public void onNext(LockCalls calls) {
                        received.addAll(calls.getCallsList());
                      }

                      @Override
                      public void onError(Throwable t) {}

                      @Override
                      public void onCompleted() {}
                    };
                  }
                })
            .build()
            .start();
    channel = InProcessChannelBuilder.forName(name).directExecutor().build();
    timers = Executors.newSingleThreadScheduledExecutor();
    callbacks = Executors.newCachedThreadPool();
    stream = new LockStream(channel, timers, callbacks, new ContendedLocks(), new AtomicLong());
  }

  @AfterEach
  void stop() {
    stream.close();
    channel.shutdownNow();
    server.shutdownNow();
    timers.shutdownNow();
    callbacks.shutdownNow();
  }

  private ListenableFuture<LockReply> acquire(String resource, CallOptions options) {
    return stream.call(
        LockCall.newBuilder()
            .setAcquire(
                AcquireRequest.newBuilder()
                    .setOwner(OWNER)
                    .setLockspace("ls")
                    .setResource(resource)),
        LockCallResult::getLock,
        options);
  }

  private LockCall receivedAcquire(String resource) {
    return await()
        .until(
            () ->
                received.stream()
                    .filter(c -> c.getAcquire().getResource().equals(resource))
                    .findFirst(),
            Optional::isPresent)
        .get();
  }

  private boolean released(long lockId) {
    return received.stream()
        .anyMatch(
            c ->
                c.hasRelease()
                    && c.getRelease().getLockId() == lockId
                    && c.getRelease().getOwner().equals(OWNER));
  }

  private boolean withdrawn(long callId) {
    return received.stream().anyMatch(c -> c.hasWithdraw() && c.getCallId() == callId);
  }

  private void grant(long callId, long lockId) {
    answers.onNext(
        LockCallResults.newBuilder()
            .addResults(
                LockCallResult.newBuilder()
                    .setCallId(callId)
                    .setLock(LockReply.newBuilder().setLockId(lockId)))
            .build());
  }

  @Test
  void answersAreMatchedByCallIdInAnyOrder() throws Exception {
    ListenableFuture<LockReply> a = acquire("a", CallOptions.DEFAULT);
    ListenableFuture<LockReply> b = acquire("b", CallOptions.DEFAULT);
    long idA = receivedAcquire("a").getCallId();
    long idB = receivedAcquire("b").getCallId();
    assertThat(idA).isNotEqualTo(idB);

    grant(idB, 2);
    assertThat(b.get(5, TimeUnit.SECONDS).getLockId()).isEqualTo(2);
    assertThat(a.isDone()).isFalse();
    grant(idA, 1);
    assertThat(a.get(5, TimeUnit.SECONDS).getLockId()).isEqualTo(1);
    // Answered calls are not withdrawn, and nothing is released.
    assertThat(received).noneMatch(c -> c.hasWithdraw() || c.hasRelease());
  }

  @Test
  void aCallPastItsDeadlineFailsAndIsWithdrawn() {
    ListenableFuture<LockReply> slow =
        acquire("slow", CallOptions.DEFAULT.withDeadlineAfter(200, TimeUnit.MILLISECONDS));
    ListenableFuture<LockReply> patient = acquire("patient", CallOptions.DEFAULT);
    long id = receivedAcquire("slow").getCallId();

    assertThatThrownBy(() -> slow.get(5, TimeUnit.SECONDS))
        .isInstanceOf(ExecutionException.class)
        .cause()
        .isInstanceOf(StatusRuntimeException.class)
        .satisfies(
            e ->
                assertThat(((StatusRuntimeException) e).getStatus().getCode())
                    .isEqualTo(Status.Code.DEADLINE_EXCEEDED));
    await().until(() -> withdrawn(id));
    // A grant the server sent before the withdraw reached it is dropped (DlmSession abandons the
    // request, which releases it); it answers no other call. The other call is untouched.
    long patientId = receivedAcquire("patient").getCallId();
    grant(id, 7);
    assertThat(withdrawn(patientId)).isFalse();
    grant(patientId, 9);
    assertThat(Futures.getUnchecked(patient).getLockId()).isEqualTo(9);
    assertThat(released(7)).isFalse();
  }

  @Test
  void aCancelledCallIsWithdrawnAndAGrantThatCrossedItDropped() {
    ListenableFuture<LockReply> f = acquire("c", CallOptions.DEFAULT);
    long id = receivedAcquire("c").getCallId();
    f.cancel(false);
    await().until(() -> withdrawn(id));
    grant(id, 8);
    assertThat(f.isCancelled()).isTrue();
  }

  @Test
  void aBrokenStreamFailsItsOpenCallsAndLaterOnes() {
    ListenableFuture<LockReply> open = acquire("d", CallOptions.DEFAULT);
    receivedAcquire("d");
    answers.onError(Status.UNAVAILABLE.withDescription("server stopping").asRuntimeException());

    assertThatThrownBy(() -> open.get(5, TimeUnit.SECONDS))
        .hasCauseInstanceOf(StatusRuntimeException.class)
        .hasMessageContaining("UNAVAILABLE");
    await().until(stream::isBroken);
    assertThatThrownBy(() -> acquire("e", CallOptions.DEFAULT).get(5, TimeUnit.SECONDS))
        .hasMessageContaining("UNAVAILABLE");
    // Nothing is withdrawn on a stream that is gone.
    assertThat(received).noneMatch(LockCall::hasWithdraw);
  }

  private static LockCall.Builder deferrableRelease(long lockId) {
    return LockCall.newBuilder()
        .setRelease(
            ReleaseRequest.newBuilder()
                .setRequestId("release-" + lockId)
                .setOwner(OWNER)
                .setLockId(lockId)
                .setDeferrable(true));
  }

  @Test
  void aReleaseSomeoneWaitsForIsNotHeldBackWhenRetriedOnANewStream() throws Exception {
    // An hour's hold: only the server's word that someone waits can send these releases.
    System.setProperty(LockStream.RELEASE_HOLD_PROPERTY, Long.toString(TimeUnit.HOURS.toMillis(1)));
    ContendedLocks contended = new ContendedLocks();
    AtomicLong retries = new AtomicLong();
    LockStream first = new LockStream(channel, timers, callbacks, contended, retries);
    LockStream second = null;
    try {
      contended.add(42);
      ListenableFuture<LockCallResult> r =
          first.call(deferrableRelease(42), x -> x, CallOptions.DEFAULT);
      await().atMost(5, TimeUnit.SECONDS).until(() -> released(42));

      // The stream breaks before the answer: the release is retried on the next stream.
      answers.onError(Status.UNAVAILABLE.withDescription("leader gone").asRuntimeException());
      assertThatThrownBy(() -> r.get(5, TimeUnit.SECONDS)).hasMessageContaining("UNAVAILABLE");
      // Counted as retried by the break itself, before the failed call's retry is under way.
      assertThat(retries.get()).isEqualTo(1);
      received.clear();
      second = new LockStream(channel, timers, callbacks, contended, retries);
      second.call(deferrableRelease(42), x -> x, CallOptions.DEFAULT);
      await().atMost(5, TimeUnit.SECONDS).until(() -> released(42));
    } finally {
      System.clearProperty(LockStream.RELEASE_HOLD_PROPERTY);
      first.close();
      if (second != null) {
        second.close();
      }
    }
  }
}
