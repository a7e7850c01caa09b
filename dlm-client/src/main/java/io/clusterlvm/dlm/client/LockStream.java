package io.clusterlvm.dlm.client;

import com.google.common.util.concurrent.AbstractFuture;
import com.google.common.util.concurrent.ListenableFuture;
import com.google.common.util.concurrent.MoreExecutors;
import io.clusterlvm.dlm.proto.CallFailure;
import io.clusterlvm.dlm.proto.DlmGrpc;
import io.clusterlvm.dlm.proto.LockCall;
import io.clusterlvm.dlm.proto.LockCallResult;
import io.clusterlvm.dlm.proto.LockCallResults;
import io.clusterlvm.dlm.proto.LockCalls;
import io.clusterlvm.dlm.proto.Outcome;
import io.clusterlvm.dlm.proto.WithdrawCall;
import io.grpc.CallOptions;
import io.grpc.Channel;
import io.grpc.Deadline;
import io.grpc.Metadata;
import io.grpc.Status;
import io.grpc.stub.ClientCallStreamObserver;
import io.grpc.stub.ClientResponseObserver;
import java.util.Map;
import java.util.Queue;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.ConcurrentLinkedQueue;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.Executor;
import java.util.concurrent.RejectedExecutionException;
import java.util.concurrent.ScheduledExecutorService;
import java.util.concurrent.ScheduledFuture;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicLong;
import java.util.function.Function;

/**
 * The LockStream of one channel: acquire, convert and release calls of every session of the client
 * that talk to that server go over it as messages, instead of as one gRPC call each. A call here
 * behaves like its unary RPC towards {@link DlmClient}'s retries: it fails with the status the
 * server gave (with the dlm-outcome trailer), with DEADLINE_EXCEEDED at its deadline, and with the
 * stream's status (UNAVAILABLE when the server went away) if the stream breaks while it is open;
 * cancelling it withdraws the request on the server. Calls queued while one thread sends go out
 * with it, in one message, in the order they were made.
 *
 * <p>An asynchronous release ({@code deferrable}) is held back: it goes out with the next call on
 * the stream, so that a lock-unlock-lock loop costs one message each way per lock instead of two
 * out. Nobody waits for it unless someone else wants the lock, and then the server says so (a
 * blocking hint for that lock, {@link ContendedLocks}), which sends it at once; else it goes out
 * within {@link #RELEASE_HOLD_PROPERTY} milliseconds (default 50; 0 sends every release at once).
 * GFS2's and Lustre's lock caches keep locks until asked for them the same way; here only the
 * release's message waits, the caller has given the lock up.
 */
final class LockStream {
  private static final Metadata.Key<String> OUTCOME =
      Metadata.Key.of("dlm-outcome", Metadata.ASCII_STRING_MARSHALLER);

  /** How often deadlines are checked: a call fails at most this much after its deadline. */
  private static final long DEADLINE_TICK_MS = 50;

  /**
   * System property: how long an asynchronous release may be held back at most, in milliseconds.
   * Read when a stream opens.
   */
  static final String RELEASE_HOLD_PROPERTY = "dlm.client.release-hold-ms";

  private static final long DEFAULT_RELEASE_HOLD_MS = 50;

  /** Calls per message at most, so that a burst stays far below gRPC's message size limit. */
  private static final int MAX_PER_MESSAGE = 256;

  /** How long closing waits for the releases still open, so that they are not cut off. */
  static final long CLOSE_RELEASE_WAIT_MS = 2000;

  /** Checks deadlines and sends held-back releases; one timer per stream. */
  private final ScheduledFuture<?> ticks;

  /** How long a release may be held back; 0: releases are not held back. */
  private final long holdNanos;

  private long lastHoldFlushNanos = System.nanoTime(); // on the timer thread only
  private final Executor callbacks;
  private final Map<Long, Call<?>> open = new ConcurrentHashMap<>();

  private final Queue<LockCall> toSend = new ConcurrentLinkedQueue<>();

  /** Locks someone waits for (the client's, shared by its streams). */
  private final ContendedLocks contended;

  /**
   * The client's count of retried attempts ({@link DlmClient#retries}), counted here too when the
   * stream breaks: the failed calls' own retries are counted on the callback pool, later, and a
   * NOQUEUE request sent on the next stream meanwhile must already see that a release of its
   * session may come after it.
   */
  private final AtomicLong retries;

  private final AtomicBoolean sending = new AtomicBoolean();
  private final AtomicLong nextId = new AtomicLong();
  private ClientCallStreamObserver<LockCalls> out; // set in beforeStart, before any send
  private volatile Status broken;

  /**
   * Opens the stream on {@code channel}. {@code callbacks} completes the calls of callers that do
   * not block on them (the callers that block are woken from the transport thread).
   */
  LockStream(
      Channel channel,
      ScheduledExecutorService timers,
      Executor callbacks,
      ContendedLocks contended,
      AtomicLong retries) {
    this.callbacks = callbacks;
    this.contended = contended;
    this.retries = retries;
    // One timer per stream rather than one per call: setting and cancelling a timer for each of
    // thousands of calls a second cost more than the calls' own sending.
    long hold = Math.max(0, Long.getLong(RELEASE_HOLD_PROPERTY, DEFAULT_RELEASE_HOLD_MS));
    this.holdNanos = TimeUnit.MILLISECONDS.toNanos(hold);
    long tick = hold > 0 ? Math.min(hold, DEADLINE_TICK_MS) : DEADLINE_TICK_MS;
    this.ticks = timers.scheduleWithFixedDelay(this::tick, tick, tick, TimeUnit.MILLISECONDS);
    DlmGrpc.newStub(channel)
        .withExecutor(MoreExecutors.directExecutor())
        .lockStream(
            new ClientResponseObserver<LockCalls, LockCallResults>() {
              @Override
              public void beforeStart(ClientCallStreamObserver<LockCalls> s) {
                out = s;
              }

              @Override
              public void onNext(LockCallResults results) {
                for (LockCallResult r : results.getResultsList()) {
                  // An answer for a call given up on (deadline, cancel) finds none and is dropped:
                  // DlmSession abandons an acquire given up on, which releases a crossing grant.
                  Call<?> c = open.remove(r.getCallId());
                  if (c != null) {
                    c.answered(r);
                  }
                }
              }

              @Override
              public void onError(Throwable t) {
                Status s = Status.fromThrowable(t);
                if (closing) {
                  s = Status.CANCELLED.withDescription("client closed");
                } else if (s.getCode() != Status.Code.UNAVAILABLE) {
                  // However the stream broke (a message too large, a protocol error, a reset
                  // that gRPC reports as CANCELLED: a server's shutdownNow, a proxy), whether
                  // its open calls took effect is unknown: they are retried, with their request
                  // ids. Only this client's own close ends them for good.
                  s = Status.UNAVAILABLE.withDescription("lock stream broke: " + s).withCause(t);
                }
                broke(s);
              }

              @Override
              public void onCompleted() {
                broke(Status.UNAVAILABLE.withDescription("the server ended the lock stream"));
              }
            });
  }

  /** Set by {@link #close}: the stream's end is this client's doing, not the server's. */
  private volatile boolean closing;

  boolean isBroken() {
    return broken != null;
  }

  /**
   * Starts a call: {@code op} carries the request, {@code result} takes the answer out of a
   * success. {@code options} gives its deadline and, if set, the executor that completes it.
   */
  <T> ListenableFuture<T> call(
      LockCall.Builder op, Function<LockCallResult, T> result, CallOptions options) {
    long id = nextId.incrementAndGet();
    Deadline deadline = options.getDeadline();
    LockCall request = op.setCallId(id).build();
    Call<T> c = new Call<>(request, result, options.getExecutor(), deadline);
    open.put(id, c);
    Status s = broken;
    if (s != null) {
      open.remove(id);
      c.fail(s, null);
      return c;
    }
    toSend.add(request);
    // Checked after queueing: a hint that marks the lock meanwhile finds the release queued.
    boolean someoneWaits = request.hasRelease() && contended.take(request.getRelease().getLockId());
    c.someoneWaits = someoneWaits;
    boolean hold =
        holdNanos > 0
            && request.hasRelease()
            && request.getRelease().getDeferrable()
            && !someoneWaits;
    if (!hold) {
      flush();
    }
    if (broken != null && open.remove(id) != null) {
      c.fail(broken, null); // broke while it was being sent; it failed nothing that is open
    }
    return c;
  }

  /**
   * Sends the held-back releases and waits, until {@code until} ({@link System#nanoTime}) at most,
   * until every release open on this stream is answered: a session that closes must not overtake
   * its own releases.
   */
  void flushReleases(long until) {
    flush();
    for (Call<?> c : open.values()) {
      if (c.request.hasRelease()) {
        try {
          c.get(Math.max(0, until - System.nanoTime()), TimeUnit.NANOSECONDS);
        } catch (ExecutionException | TimeoutException e) {
          // its caller hears of it; a release still open is the session's to end
        } catch (InterruptedException e) {
          Thread.currentThread().interrupt();
          return;
        }
      }
    }
  }

  private void send(LockCall call) {
    toSend.add(call);
    flush();
  }

  /**
   * Sends what is queued, held-back releases included; also called when the server says someone
   * waits for a lock ({@link ContendedLocks}, marked before this is called).
   */
  void flush() {
    // Whoever holds "sending" sends everything queued, its own call and those that came meanwhile.
    while (!toSend.isEmpty() && sending.compareAndSet(false, true)) {
      try {
        LockCalls.Builder b = LockCalls.newBuilder();
        LockCall c;
        while ((c = toSend.poll()) != null) {
          b.addCalls(c);
          if (b.getCallsCount() == MAX_PER_MESSAGE) {
            sendNow(b);
            b = LockCalls.newBuilder();
          }
        }
        sendNow(b);
      } catch (RuntimeException e) {
        broke(Status.UNAVAILABLE.withDescription("lock stream send failed: " + e).withCause(e));
      } finally {
        sending.set(false);
      }
    }
  }

  private void sendNow(LockCalls.Builder b) {
    if (b.getCallsCount() > 0 && broken == null) {
      out.onNext(b.build());
    }
  }

  /**
   * Ends the stream (client closing). Open calls fail with CANCELLED; the client has sent the
   * held-back releases and waited for them first ({@link DlmClient#close}).
   */
  void close() {
    closing = true;
    if (broken == null) {
      try {
        out.cancel("client closed", null);
      } catch (RuntimeException e) {
        // already ended
      }
    }
    broke(Status.CANCELLED.withDescription("client closed"));
  }

  private void tick() {
    long now = System.nanoTime();
    if (holdNanos > 0 && now - lastHoldFlushNanos >= holdNanos) {
      lastHoldFlushNanos = now;
      flush(); // the releases held back since the last call
    }
    expireOverdue();
  }

  private void expireOverdue() {
    for (Call<?> c : open.values()) {
      if (c.deadline != null && c.deadline.isExpired() && giveUp(c)) {
        c.fail(
            Status.DEADLINE_EXCEEDED.withDescription("no answer within the call's deadline"), null);
      }
    }
  }

  /**
   * Takes {@code c} out of the open calls and withdraws it on the server, as cancelling a unary
   * call would; false if an answer (or the stream's end) took it first, which then stands. Taking
   * it out first is what makes the two exclusive: an answer that arrives later finds no call and is
   * dropped, and the server drops an answer that crosses the withdraw.
   */
  private boolean giveUp(Call<?> c) {
    if (!open.remove(c.id, c)) {
      return false;
    }
    if (broken == null) {
      send(
          LockCall.newBuilder()
              .setCallId(c.id)
              .setWithdraw(WithdrawCall.getDefaultInstance())
              .build());
    }
    return true;
  }

  private void broke(Status status) {
    synchronized (this) {
      if (broken != null) {
        return;
      }
      // Before the stream counts as broken: a call that then opens the next stream must find
      // this break counted already.
      if (!open.isEmpty()) {
        retries.incrementAndGet();
      }
      broken = status;
    }
    ticks.cancel(false);
    for (Call<?> c : open.values()) {
      if (open.remove(c.id) != null) {
        if (c.someoneWaits) {
          // Its retry goes out on another stream, and must not be held back there either.
          contended.add(c.request.getRelease().getLockId());
        }
        c.fail(status, null);
      }
    }
  }

  /** One call on the stream. */
  private final class Call<T> extends AbstractFuture<T> {
    final long id;
    final LockCall request;
    private final Function<LockCallResult, T> result;
    private final Executor executor;
    final Deadline deadline;

    /** A release the server said someone waits for (its mark was taken from the set). */
    volatile boolean someoneWaits;

    Call(
        LockCall request,
        Function<LockCallResult, T> result,
        Executor executor,
        Deadline deadline) {
      this.id = request.getCallId();
      this.request = request;
      this.result = result;
      this.executor = executor;
      this.deadline = deadline;
    }

    void answered(LockCallResult r) {
      if (r.hasFailure()) {
        CallFailure f = r.getFailure();
        Metadata trailers = new Metadata();
        if (f.getOutcome() != Outcome.OUTCOME_UNSPECIFIED) {
          trailers.put(OUTCOME, f.getOutcome().name());
        }
        fail(
            Status.fromCodeValue(f.getCode())
                .withDescription(f.getDescription().isEmpty() ? null : f.getDescription()),
            trailers);
        return;
      }
      T value;
      try {
        value = result.apply(r);
      } catch (RuntimeException e) {
        fail(Status.INTERNAL.withDescription("bad answer from the server: " + e), null);
        return;
      }
      complete(() -> set(value));
    }

    void fail(Status s, Metadata trailers) {
      complete(() -> setException(s.asRuntimeException(trailers)));
    }

    /** On the caller's executor if it gave one; else on the client's callback executor. */
    private void complete(Runnable r) {
      Executor e = executor != null ? executor : callbacks;
      try {
        e.execute(r);
      } catch (RejectedExecutionException closed) {
        r.run();
      }
    }

    @Override
    protected void afterDone() {
      if (isCancelled()) {
        giveUp(this); // the caller cancelled before an answer came
      }
    }
  }
}
