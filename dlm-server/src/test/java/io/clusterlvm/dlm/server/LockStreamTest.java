package io.clusterlvm.dlm.server;

import static org.assertj.core.api.Assertions.assertThat;
import static org.awaitility.Awaitility.await;

import com.google.protobuf.ByteString;
import com.google.protobuf.UnknownFieldSet;
import io.clusterlvm.dlm.client.DlmClient;
import io.clusterlvm.dlm.client.DlmSession;
import io.clusterlvm.dlm.client.LockMode;
import io.clusterlvm.dlm.proto.AcquireRequest;
import io.clusterlvm.dlm.proto.BlockingNotification;
import io.clusterlvm.dlm.proto.DlmGrpc;
import io.clusterlvm.dlm.proto.LockCall;
import io.clusterlvm.dlm.proto.LockCallResult;
import io.clusterlvm.dlm.proto.LockCallResults;
import io.clusterlvm.dlm.proto.LockCalls;
import io.clusterlvm.dlm.proto.Mode;
import io.clusterlvm.dlm.proto.OpenSessionRequest;
import io.clusterlvm.dlm.proto.Outcome;
import io.clusterlvm.dlm.proto.Owner;
import io.clusterlvm.dlm.proto.ReleaseRequest;
import io.clusterlvm.dlm.proto.ResourceInfo;
import io.clusterlvm.dlm.proto.SessionEvent;
import io.clusterlvm.dlm.proto.WithdrawCall;
import io.grpc.CallOptions;
import io.grpc.ClientCall;
import io.grpc.ManagedChannel;
import io.grpc.ManagedChannelBuilder;
import io.grpc.Metadata;
import io.grpc.Status;
import io.grpc.netty.NettyChannelBuilder;
import io.grpc.stub.ClientCallStreamObserver;
import io.grpc.stub.ClientResponseObserver;
import java.util.Map;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.Semaphore;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicLong;
import org.apache.curator.test.TestingServer;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

/**
 * The LockStream RPC as a client other than ours would speak it: several calls to a message,
 * answers by call id, a withdrawn call and an ended stream leave the queue, and unary-call failures
 * arrive with their status code and outcome.
 */
@Timeout(value = 60, unit = TimeUnit.SECONDS)
class LockStreamTest {
  private TestingServer zk;
  private DlmServer server;
  private DlmClient client;
  private ManagedChannel channel;
  private DlmSession holder;
  private DlmSession asker;

  @BeforeEach
  void start() throws Exception {
    zk = new TestingServer();
    server = ServerTestSupport.leading(DlmServerConfig.forTest(zk.getConnectString()));
    client = DlmClient.connect("127.0.0.1:" + server.port());
    holder = client.openSession("node1", client.join("node1", "boot-1"), "test");
    asker = client.openSession("node2", client.join("node2", "boot-2"), "test");
    channel = ManagedChannelBuilder.forAddress("127.0.0.1", server.port()).usePlaintext().build();
  }

  @AfterEach
  void stop() throws Exception {
    if (channel != null) {
      channel.shutdownNow();
    }
    if (client != null) {
      client.close();
    }
    if (server != null) {
      server.close();
    }
    zk.close();
  }

  /** A raw LockStream; answers collected by call id. */
  private final class Stream {
    final Map<Long, LockCallResult> answers = new ConcurrentHashMap<>();
    final ClientCallStreamObserver<LockCalls> out;
    volatile int messages;
    volatile boolean completed;
    volatile Throwable error;

    Stream() {
      ClientCallStreamObserver<LockCalls>[] o = new ClientCallStreamObserver[1];
      DlmGrpc.newStub(channel)
          .lockStream(
              new ClientResponseObserver<LockCalls, LockCallResults>() {
                @Override
                public void beforeStart(ClientCallStreamObserver<LockCalls> s) {
                  o[0] = s;
                }

                @Override
                public void onNext(LockCallResults r) {
                  messages++;
                  r.getResultsList().forEach(x -> answers.put(x.getCallId(), x));
                }

                @Override
                public void onError(Throwable t) {
                  error = t;
                }

                @Override
                public void onCompleted() {
                  completed = true;
                }
              });
      out = o[0];
    }

    void send(LockCall... calls) {
      out.onNext(LockCalls.newBuilder().addAllCalls(java.util.List.of(calls)).build());
    }

    LockCallResult answer(long id) {
      await().until(() -> answers.containsKey(id));
      return answers.get(id);
    }
  }

  private LockCall acquire(long id, DlmSession s, String resource, boolean noqueue) {
    return LockCall.newBuilder()
        .setCallId(id)
        .setAcquire(
            AcquireRequest.newBuilder()
                .setRequestId("req-" + id + "-" + resource)
                .setOwner(owner(s))
                .setSessionId(s.id())
                .setLockspace("ls")
                .setResource(resource)
                .setMode(Mode.EX)
                .setNoqueue(noqueue))
        .build();
  }

  private static Owner owner(DlmSession s) {
    return Owner.newBuilder().setNode(s.node()).setIncarnation(s.incarnation()).build();
  }

  private int waiting(String resource) {
    return client.locks("ls").stream()
        .filter(r -> r.getResource().equals(resource))
        .mapToInt(ResourceInfo::getWaitingCount)
        .sum();
  }

  /**
   * A refusal names a few of the holders in the way, not all: a resource can have thousands of
   * shared holders, and the description travels as a status trailer (8 KiB by default).
   */
  @Test
  void aRefusalNamesAFewOfManyHolders() {
    for (int i = 0; i < 300; i++) {
      holder.lock("ls", "wide", LockMode.PR);
    }
    Stream s = new Stream();
    s.send(acquire(1, asker, "wide", true));

    String d = s.answer(1).getFailure().getDescription();
    assertThat(s.answer(1).getFailure().getOutcome()).isEqualTo(Outcome.WOULD_BLOCK);
    assertThat(d).contains("held by node1/").endsWith(" and 292 more").hasSizeLessThan(1_000);
  }

  @Test
  void callsInOneMessageAreEachAnsweredUnderTheirIds() {
    holder.lock("ls", "held", LockMode.EX);
    Stream s = new Stream();
    s.send(
        acquire(1, asker, "a", false),
        acquire(2, asker, "b", false),
        acquire(3, asker, "held", true),
        LockCall.newBuilder()
            .setCallId(4)
            .setRelease(
                ReleaseRequest.newBuilder()
                    .setRequestId("rel-4")
                    .setOwner(owner(asker))
                    .setLockId(987654))
            .build());

    assertThat(s.answer(1).getLock().getResource()).isEqualTo("a");
    assertThat(s.answer(2).getLock().getResource()).isEqualTo("b");
    assertThat(s.answer(1).getLock().getLockId()).isNotEqualTo(s.answer(2).getLock().getLockId());
    // A refusal carries what the unary call's status and trailer would.
    assertThat(s.answer(3).getFailure().getCode()).isEqualTo(Status.Code.ABORTED.value());
    assertThat(s.answer(3).getFailure().getOutcome()).isEqualTo(Outcome.WOULD_BLOCK);
    assertThat(s.answer(3).getFailure().getDescription()).contains("would block");
    assertThat(s.answer(4).getFailure().getCode()).isEqualTo(Status.Code.NOT_FOUND.value());

    long lockA = s.answer(1).getLock().getLockId();
    s.send(
        LockCall.newBuilder()
            .setCallId(5)
            .setRelease(
                ReleaseRequest.newBuilder()
                    .setRequestId("rel-5")
                    .setOwner(owner(asker))
                    .setLockId(lockA))
            .build());
    assertThat(s.answer(5).hasReleased()).isTrue();
    assertThat(client.locks("ls")).noneMatch(r -> r.getResource().equals("a"));
  }

  @Test
  void withdrawnCallAndEndedStreamLeaveTheQueue() {
    holder.lock("ls", "r", LockMode.EX);
    Stream s = new Stream();
    s.send(acquire(1, asker, "r", false));
    await().until(() -> waiting("r") == 1);
    s.send(
        LockCall.newBuilder().setCallId(1).setWithdraw(WithdrawCall.getDefaultInstance()).build());
    await().until(() -> waiting("r") == 0);

    s.send(acquire(2, asker, "r", false));
    await().until(() -> waiting("r") == 1);
    s.out.cancel("test ends the stream", null);
    await().until(() -> waiting("r") == 0);
    // A withdrawn call is not answered: its caller already has its answer (deadline, cancel).
    assertThat(s.answers).doesNotContainKeys(1L, 2L);
  }

  /**
   * A client that sends its calls and then half-closes, as command-line gRPC tools do, still gets
   * every answer, the grant of a call that waited included; then the stream ends. Before, the
   * half-close withdrew the calls still open.
   */
  @Test
  void aHalfClosedStreamAnswersItsOpenCallsAndThenEnds() {
    io.clusterlvm.dlm.client.Lock held = holder.lock("ls", "r", LockMode.EX);
    Stream s = new Stream();
    s.send(acquire(1, asker, "free", false), acquire(2, asker, "r", false));
    s.out.onCompleted();

    assertThat(s.answer(1).getLock().getResource()).isEqualTo("free");
    await().until(() -> waiting("r") == 1);
    assertThat(s.completed).isFalse();
    holder.unlock(held);
    assertThat(s.answer(2).getLock().getResource()).isEqualTo("r");
    await().until(() -> s.completed);
    assertThat(client.locks("ls"))
        .filteredOn(r -> r.getResource().equals("r"))
        .singleElement()
        .satisfies(r -> assertThat(r.getGranted(0).getOwner().getNode()).isEqualTo("node2"));
  }

  /**
   * A half-closed stream with nothing open ends at once; one cancelled later withdraws its calls.
   */
  @Test
  void aHalfClosedStreamThatIsCancelledWithdrawsItsCalls() {
    Stream idle = new Stream();
    idle.out.onCompleted();
    await().until(() -> idle.completed);

    holder.lock("ls", "r", LockMode.EX);
    Stream s = new Stream();
    s.send(acquire(1, asker, "r", false));
    s.out.onCompleted();
    await().until(() -> waiting("r") == 1);
    s.out.cancel("the client gives up", null);
    await().until(() -> waiting("r") == 0);
  }

  @Test
  void anEmptyCallIsRefused() {
    Stream s = new Stream();
    s.send(LockCall.newBuilder().setCallId(7).build());
    assertThat(s.answer(7).getFailure().getDescription()).contains("carries no request");
  }

  /**
   * A call id reused while its call is open is a client bug that ends the stream, withdrawing its
   * calls. Until 2026-12-08 the refusal went out under that id, where it read as the answer of the
   * call still open, whose request went on waiting without its caller.
   */
  @Test
  void aCallIdReusedWhileOpenEndsTheStreamAndWithdrawsItsCalls() {
    holder.lock("ls", "r", LockMode.EX);
    Stream s = new Stream();
    s.send(acquire(1, asker, "r", false));
    await().until(() -> waiting("r") == 1);
    s.send(acquire(1, asker, "other", false), acquire(2, asker, "third", false));
    await().until(() -> s.error != null);
    assertThat(Status.fromThrowable(s.error).getCode()).isEqualTo(Status.Code.INVALID_ARGUMENT);
    assertThat(Status.fromThrowable(s.error).getDescription()).contains("already in use");
    assertThat(s.answers).isEmpty();
    await().until(() -> waiting("r") == 0);
    // Neither the reused call nor the one after it ran.
    assertThat(client.locks("ls"))
        .noneMatch(r -> r.getResource().equals("other") || r.getResource().equals("third"));
  }

  /**
   * A client that sends calls and never reads the answers must not make the server buffer them
   * without bound: once the answers back up, the server reads no more calls, so the client's sends
   * back up in turn. Once it reads, every call is answered. The channel's flow-control window is
   * small so that the answers back up after a few hundred calls.
   */
  @Test
  void aClientThatDoesNotReadItsAnswersIsNotReadFrom() throws Exception {
    ManagedChannel tight = tightChannel();
    try {
      AtomicLong answered = new AtomicLong();
      AtomicLong refused = new AtomicLong();
      CompletableFuture<Status> closed = new CompletableFuture<>();
      Semaphore drained = new Semaphore(0); // a permit each time the client may send again
      ClientCall<LockCalls, LockCallResults> call =
          tight.newCall(DlmGrpc.getLockStreamMethod(), CallOptions.DEFAULT);
      call.start(
          new ClientCall.Listener<>() {
            @Override
            public void onMessage(LockCallResults r) {
              for (LockCallResult x : r.getResultsList()) {
                answered.incrementAndGet();
                if (x.getFailure().getDescription().contains("carries no request")) {
                  refused.incrementAndGet();
                }
              }
            }

            @Override
            public void onClose(Status status, Metadata trailers) {
              closed.complete(status);
            }

            @Override
            public void onReady() {
              drained.release();
            }
          },
          new Metadata());
      // No call.request(): the answers are not read. A call without a request is answered at
      // once, on the transport thread, with a short refusal; each carries 1 kB the server skips
      // (a field it does not know), so the server's inbound window, up to 8 MiB with gRPC's window
      // tuning, holds at most about 8,000 of them. Without flow control the server would read on
      // and hold every refusal.
      ByteString padding = ByteString.copyFrom(new byte[1000]);
      LockCall padded =
          LockCall.newBuilder()
              .setUnknownFields(
                  UnknownFieldSet.newBuilder()
                      .addField(
                          1000,
                          UnknownFieldSet.Field.newBuilder().addLengthDelimited(padding).build())
                      .build())
              .build();
      int perMessage = 10;
      int most = 20_000; // messages: 200 MB of calls
      int sent = 0;
      while (sent < most) {
        if (call.isReady()) {
          LockCalls.Builder b = LockCalls.newBuilder();
          for (int i = 0; i < perMessage; i++) {
            b.addCalls(padded.toBuilder().setCallId((long) sent * perMessage + i));
          }
          call.sendMessage(b.build());
          sent++;
        } else if (!drained.tryAcquire(3, TimeUnit.SECONDS) && !call.isReady()) {
          break; // not drained for 3 s: the server stopped reading
        }
      }
      // About 1,000 calls answered before the answers back up, 8,000 in the server's window at
      // most, a few in the client's buffer: under 1,000 messages.
      assertThat(sent).as("messages sent before the server stopped reading").isLessThan(2_000);

      System.out.println("sent " + sent + " messages before the server stopped reading");
      call.request(Integer.MAX_VALUE);
      long calls = (long) sent * perMessage;
      await().atMost(30, TimeUnit.SECONDS).until(() -> answered.get() == calls);
      assertThat(refused.get()).isEqualTo(calls);
      call.halfClose();
      assertThat(closed.get(10, TimeUnit.SECONDS).getCode()).isEqualTo(Status.Code.OK);
    } finally {
      tight.shutdownNow();
    }
  }

  /**
   * A session whose client does not read its stream must not make the server buffer blocking
   * notifications without bound: once the stream's buffer is full, the server holds back one per
   * lock, the most restrictive blocked mode, as the Linux DLM coalesces basts. When the client
   * reads again, it hears that one.
   */
  @Test
  void aSessionThatDoesNotReadHearsOneHeldBackNotificationPerLock() throws Exception {
    ManagedChannel tight = tightChannel();
    try {
      java.util.List<SessionEvent> events = new java.util.concurrent.CopyOnWriteArrayList<>();
      ClientCall<OpenSessionRequest, SessionEvent> session =
          tight.newCall(DlmGrpc.getOpenSessionMethod(), CallOptions.DEFAULT);
      session.start(
          new ClientCall.Listener<>() {
            @Override
            public void onMessage(SessionEvent e) {
              events.add(e);
            }
          },
          new Metadata());
      session.sendMessage(
          OpenSessionRequest.newBuilder().setOwner(owner(holder)).setClientName("slow").build());
      session.halfClose();
      session.request(1); // the opened event only; nothing more is read for now
      await().until(() -> !events.isEmpty());
      long sessionId = events.get(0).getOpened().getSessionId();

      Stream s = new Stream();
      long wide = slowHolderLock(s, 1, sessionId, LONG_NAME);
      long other = slowHolderLock(s, 2, sessionId, "other");
      long gone = slowHolderLock(s, 3, sessionId, "gone");

      // Each queued request blocked by the lock is one notification to its holder, about 100
      // bytes: far more than the stream's windows and gRPC's 32 KiB buffer hold (about 350). The
      // last ones ask for less than the first.
      int waiters = 800;
      LockCall[] calls = new LockCall[700];
      for (int i = 0; i < calls.length; i++) {
        calls[i] = acquire(100 + i, asker, LONG_NAME, false);
      }
      s.send(calls);
      await().atMost(30, TimeUnit.SECONDS).until(() -> waiting(LONG_NAME) == calls.length);
      LockCall[] weaker = new LockCall[waiters - calls.length];
      for (int i = 0; i < weaker.length; i++) {
        LockCall c = acquire(1000 + i, asker, LONG_NAME, false);
        weaker[i] = c.toBuilder().setAcquire(c.getAcquire().toBuilder().setMode(Mode.PR)).build();
      }
      s.send(weaker);
      await().atMost(30, TimeUnit.SECONDS).until(() -> waiting(LONG_NAME) == waiters);
      s.send(acquire(5000, asker, "other", false));
      await().until(() -> waiting("other") == 1);
      // A notification held back for a lock released meanwhile is not sent: nothing to give way.
      s.send(acquire(5001, asker, "gone", false));
      await().until(() -> waiting("gone") == 1);
      s.send(
          LockCall.newBuilder()
              .setCallId(4)
              .setRelease(
                  ReleaseRequest.newBuilder()
                      .setRequestId("slow-release")
                      .setOwner(owner(holder))
                      .setLockId(gone))
              .build());
      assertThat(s.answer(5001).hasLock()).isTrue();

      session.request(Integer.MAX_VALUE);
      await()
          .atMost(10, TimeUnit.SECONDS)
          .until(() -> events.stream().anyMatch(e -> e.getBlocking().getLockId() == other));
      // What was held back goes out in the order it was held: wide's before other's, which the
      // client has now heard.
      java.util.List<BlockingNotification> heard =
          events.stream().filter(SessionEvent::hasBlocking).map(SessionEvent::getBlocking).toList();
      java.util.List<BlockingNotification> ofWide =
          heard.stream().filter(b -> b.getLockId() == wide).toList();
      System.out.println("heard " + ofWide.size() + " of " + waiters + " notifications");
      assertThat(ofWide.size()).isLessThan(600);
      // The one held back says how far to give way: the most restrictive mode asked, not the last.
      assertThat(ofWide.get(ofWide.size() - 1).getBlockedMode()).isEqualTo(Mode.EX);
      assertThat(heard).filteredOn(b -> b.getLockId() == other).hasSize(1);
      assertThat(heard).noneMatch(b -> b.getLockId() == gone);
      session.cancel("done", null);
    } finally {
      tight.shutdownNow();
    }
  }

  /** An EX lock with notify_blocking for a session opened by hand; returns its id. */
  private long slowHolderLock(Stream s, long callId, long sessionId, String resource) {
    s.send(
        LockCall.newBuilder()
            .setCallId(callId)
            .setAcquire(
                AcquireRequest.newBuilder()
                    .setRequestId("slow-holder-" + resource)
                    .setOwner(owner(holder))
                    .setSessionId(sessionId)
                    .setLockspace("ls")
                    .setResource(resource)
                    .setMode(Mode.EX)
                    .setNotifyBlocking(true))
            .build());
    return s.answer(callId).getLock().getLockId();
  }

  /**
   * A channel whose flow-control window is 1 KiB: what the client does not read backs up after a
   * few hundred answers instead of thousands.
   */
  private ManagedChannel tightChannel() {
    return NettyChannelBuilder.forAddress("127.0.0.1", server.port())
        .usePlaintext()
        .flowControlWindow(1024)
        .build();
  }

  /** A resource name of the longest allowed, so that each notification is large. */
  private static final String LONG_NAME = "r".repeat(64);
}
