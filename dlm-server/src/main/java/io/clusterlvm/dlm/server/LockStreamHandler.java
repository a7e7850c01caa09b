package io.clusterlvm.dlm.server;

import io.clusterlvm.dlm.proto.AbandonResponse;
import io.clusterlvm.dlm.proto.CallFailure;
import io.clusterlvm.dlm.proto.LockCall;
import io.clusterlvm.dlm.proto.LockCallResult;
import io.clusterlvm.dlm.proto.LockCallResults;
import io.clusterlvm.dlm.proto.LockCalls;
import io.clusterlvm.dlm.proto.LockReply;
import io.clusterlvm.dlm.proto.Outcome;
import io.clusterlvm.dlm.proto.ReleaseResponse;
import io.grpc.Metadata;
import io.grpc.Status;
import io.grpc.stub.ServerCallStreamObserver;
import io.grpc.stub.StreamObserver;
import java.util.Map;
import java.util.Queue;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.ConcurrentLinkedQueue;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.function.BiConsumer;
import java.util.function.Supplier;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * One client's LockStream: runs each call it carries through the same handler as the unary Acquire,
 * Convert, Release or Abandon, and sends the answers back under their call ids.
 *
 * <p>Each call gets a {@link StreamedCall}, which looks to the handler like the call of a unary RPC
 * (answer, fail, cancelled, cancel handler), so the lock path is the same code either way. The
 * engine thread answers a whole group commit at once; what it answers for one stream then goes out
 * as one message.
 *
 * <p>Calls are read one message at a time, and only while the answers are read: a client that sends
 * calls and does not read their answers (a bug, or a process stopped under a debugger) would
 * otherwise make the server run its calls and buffer the answers without bound. Once gRPC's
 * outbound buffer for the stream is full ({@code isReady()} false), the next message is requested
 * only when it drains; the client's sends then wait in its own flow-control window.
 */
final class LockStreamHandler implements StreamObserver<LockCalls> {
  private static final Logger LOG = LoggerFactory.getLogger(LockStreamHandler.class);

  /**
   * Answers per message at most: failing every waiter at once (a lost write) can answer thousands
   * of one client's calls in one pass, which in one message could pass gRPC's size limit.
   */
  private static final int MAX_PER_MESSAGE = 256;

  private final DlmGrpcService service;
  private final ServerCallStreamObserver<LockCallResults> out;
  private final Map<Long, StreamedCall<?>> open = new ConcurrentHashMap<>();
  private final Queue<LockCallResult> answers = new ConcurrentLinkedQueue<>();
  private final AtomicBoolean sendScheduled = new AtomicBoolean();

  /** Set once the stream ended either way; {@link #out} is used under this object's monitor. */
  private volatile boolean ended;

  /**
   * The client half-closed: no more calls come; the stream ends once every open one is answered.
   */
  private volatile boolean halfClosed;

  /**
   * Calls taken out of {@link #open} whose answer is not queued yet. A call leaves {@link #open}
   * before its answer is queued, so that a client may reuse its id once answered; the stream may
   * only end after a half-close when this is 0 too.
   */
  private final AtomicInteger answering = new AtomicInteger();

  private final Runnable onEnd;

  /**
   * No message is requested because the answers are not being read; the ready handler requests the
   * next one. gRPC runs {@link #onNext} and the ready handler one at a time for a stream.
   */
  private boolean readPaused;

  LockStreamHandler(
      DlmGrpcService service, ServerCallStreamObserver<LockCallResults> out, Runnable onEnd) {
    this.service = service;
    this.out = out;
    this.onEnd = onEnd;
    // A client that half-closed and then cancels gets no onError (gRPC calls it only before a
    // half-close), so its open calls are withdrawn from here.
    out.setOnCancelHandler(this::end);
    out.disableAutoRequest();
    out.setOnReadyHandler(this::answersDrained);
    out.request(1);
  }

  /** Requests the next message if the answers are read, else pauses until they are. */
  private void requestNext() {
    if (ended) {
      return;
    }
    if (out.isReady()) {
      out.request(1);
    } else {
      readPaused = true;
      LOG.debug(
          "lock stream: its answers are not being read; reading no more calls until they are");
    }
  }

  private void answersDrained() {
    if (readPaused && out.isReady()) {
      readPaused = false;
      out.request(1);
    }
  }

  @Override
  public void onNext(LockCalls calls) {
    for (LockCall c : calls.getCallsList()) {
      if (ended) {
        return; // ended by a call of this message that broke the protocol
      }
      long id = c.getCallId();
      switch (c.getOpCase()) {
        case ACQUIRE -> {
          StreamedCall<LockReply> call = start(id, LockStreamHandler::lock);
          if (call != null) {
            service.acquire(c.getAcquire(), call);
          }
        }
        case CONVERT -> {
          StreamedCall<LockReply> call = start(id, LockStreamHandler::lock);
          if (call != null) {
            service.convert(c.getConvert(), call);
          }
        }
        case RELEASE -> {
          StreamedCall<ReleaseResponse> call = start(id, LockStreamHandler::released);
          if (call != null) {
            service.release(c.getRelease(), call);
          }
        }
        case ABANDON -> {
          StreamedCall<AbandonResponse> call = start(id, LockCallResult.Builder::setAbandoned);
          if (call != null) {
            service.abandon(c.getAbandon(), call);
          }
        }
        case WITHDRAW -> {
          StreamedCall<?> call = open.get(id);
          if (call != null) {
            call.cancel();
          }
        }
        default ->
            answer(
                failure(
                    id,
                    Status.INVALID_ARGUMENT.withDescription(
                        "lock call " + id + " carries no request (a newer client?)"),
                    null));
      }
    }
    requestNext();
  }

  /**
   * A new call, or null if its id is taken by a call still open: a client bug, which ends the
   * stream. Running the call would answer two calls under one id, and a refusal under that id would
   * read as the answer of the call still open, whose request would go on without its caller.
   */
  private <T> StreamedCall<T> start(long id, BiConsumer<LockCallResult.Builder, T> put) {
    StreamedCall<T> call = new StreamedCall<>(id, put);
    if (open.putIfAbsent(id, call) != null) {
      LOG.warn("lock stream: a client reused call id {} while its call was open; ending it", id);
      close(
          Status.INVALID_ARGUMENT.withDescription(
              "call id "
                  + id
                  + " is already in use on this stream (a client bug); the stream's open calls"
                  + " are withdrawn"));
      end();
      return null;
    }
    return call;
  }

  private static void lock(LockCallResult.Builder b, LockReply r) {
    b.setLock(r);
  }

  private static void released(LockCallResult.Builder b, ReleaseResponse r) {
    b.setReleased(r);
  }

  /** The client went away: withdraw what still waits, as for cancelled unary calls. */
  @Override
  public void onError(Throwable t) {
    end();
  }

  /**
   * The client half-closed: it sends no more calls but still reads the answers (a client that sends
   * one message and closes its side, as command-line gRPC tools do). The calls still open are
   * answered as usual, then the stream ends. Before, a half-close withdrew them, and a grant whose
   * write was under way then reached nobody.
   */
  @Override
  public void onCompleted() {
    halfClosed = true;
    finishIfDone();
  }

  /** After a half-close, once no call is open: sends what is queued, then ends the stream. */
  private void finishIfDone() {
    if (halfClosed && open.isEmpty() && !ended) {
      // Through the same path as an answer, so that answers queued for the end of the engine's
      // pass go out first.
      if (sendScheduled.compareAndSet(false, true) && !AnswerBatch.sendAtClose(this::sendAnswers)) {
        sendAnswers();
      }
    }
  }

  private void end() {
    ended = true;
    onEnd.run();
    for (StreamedCall<?> c : open.values()) {
      c.cancel();
    }
    open.clear();
  }

  /** The server is stopping: sends what is answered, then ends the stream (clients retry). */
  void close(Status status) {
    sendAnswers();
    synchronized (this) {
      if (ended) {
        return;
      }
      ended = true;
      try {
        out.onError(status.asRuntimeException());
      } catch (RuntimeException e) {
        LOG.debug("lock stream already closed: {}", e.toString());
      }
    }
  }

  /**
   * Queues an answer. The first one queued sends, at once or, on the engine thread, when it has
   * answered all it is answering now (see {@link AnswerBatch}): then the rest go with it.
   */
  private void answer(LockCallResult r) {
    answers.add(r);
    if (sendScheduled.compareAndSet(false, true) && !AnswerBatch.sendAtClose(this::sendAnswers)) {
      sendAnswers();
    }
  }

  private void sendAnswers() {
    sendScheduled.set(false); // answers queued from now on send again
    synchronized (this) {
      LockCallResults.Builder b = LockCallResults.newBuilder();
      LockCallResult r;
      while ((r = answers.poll()) != null) {
        b.addResults(r);
        if (b.getResultsCount() == MAX_PER_MESSAGE) {
          sendNow(b);
          b = LockCallResults.newBuilder();
        }
      }
      sendNow(b);
      // In this order: a call leaves open, then is counted out of answering once its answer is
      // queued, so an answer not yet in answers is seen in one of the first two.
      if (halfClosed && open.isEmpty() && answering.get() == 0 && answers.isEmpty() && !ended) {
        ended = true;
        onEnd.run();
        try {
          out.onCompleted();
        } catch (RuntimeException e) {
          LOG.debug("lock stream already closed: {}", e.toString());
        }
      }
    }
  }

  /** Under this object's monitor. */
  private void sendNow(LockCallResults.Builder b) {
    if (b.getResultsCount() == 0 || ended) {
      return;
    }
    try {
      out.onNext(b.build());
    } catch (RuntimeException e) {
      LOG.debug("lock stream closed before its answers went out: {}", e.toString());
    }
  }

  private static LockCallResult failure(long id, Status s, Metadata trailers) {
    CallFailure.Builder f = CallFailure.newBuilder().setCode(s.getCode().value());
    if (s.getDescription() != null) {
      f.setDescription(s.getDescription());
    }
    String outcome = trailers == null ? null : trailers.get(GrpcStatuses.OUTCOME);
    if (outcome != null) {
      f.setOutcome(Outcome.valueOf(outcome));
    }
    return LockCallResult.newBuilder().setCallId(id).setFailure(f).build();
  }

  /**
   * One call on the stream, seen by the handler as a unary call. Answered once: by {@link
   * #onCompleted} after {@link #onNext}, or by {@link #onError}; an answer after the call was
   * withdrawn is dropped, as gRPC drops one for a cancelled call.
   */
  private final class StreamedCall<T> extends ServerCallStreamObserver<T> {
    private final long id;
    private final BiConsumer<LockCallResult.Builder, T> put;
    private final AtomicBoolean answered = new AtomicBoolean();
    private volatile T value;
    private volatile boolean cancelled;
    private volatile Runnable onCancel;

    StreamedCall(long id, BiConsumer<LockCallResult.Builder, T> put) {
      this.id = id;
      this.put = put;
    }

    @Override
    public void onNext(T v) {
      value = v;
    }

    @Override
    public void onCompleted() {
      if (answered.compareAndSet(false, true)) {
        deliver(
            () -> {
              LockCallResult.Builder b = LockCallResult.newBuilder().setCallId(id);
              put.accept(b, value);
              return b.build();
            });
      }
    }

    @Override
    public void onError(Throwable t) {
      if (answered.compareAndSet(false, true)) {
        deliver(() -> failure(id, Status.fromThrowable(t), Status.trailersFromThrowable(t)));
      }
    }

    /**
     * Takes the call out of {@link #open} before its answer is queued (so that the client may use
     * its id again once answered), counted in {@link #answering} meanwhile.
     */
    private void deliver(Supplier<LockCallResult> result) {
      answering.incrementAndGet();
      open.remove(id, this);
      try {
        answer(result.get());
      } finally {
        answering.decrementAndGet();
      }
      finishIfDone();
    }

    /** The caller gave up or went away: like a cancelled unary call. */
    void cancel() {
      if (cancelled || !answered.compareAndSet(false, true)) {
        return;
      }
      cancelled = true;
      open.remove(id, this);
      Runnable r = onCancel;
      if (r != null) {
        r.run();
      }
      finishIfDone();
    }

    @Override
    public boolean isCancelled() {
      return cancelled;
    }

    @Override
    public void setOnCancelHandler(Runnable handler) {
      onCancel = handler;
    }

    @Override
    public void setCompression(String compression) {}

    @Override
    public boolean isReady() {
      return true;
    }

    @Override
    public void setOnReadyHandler(Runnable handler) {}

    @Override
    public void disableAutoInboundFlowControl() {}

    @Override
    public void request(int count) {}

    @Override
    public void setMessageCompression(boolean enable) {}
  }
}
