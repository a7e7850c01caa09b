package io.clusterlvm.dlm.client;

import com.google.protobuf.ByteString;
import io.clusterlvm.dlm.proto.AbandonRequest;
import io.clusterlvm.dlm.proto.AcquireRequest;
import io.clusterlvm.dlm.proto.BlockingNotification;
import io.clusterlvm.dlm.proto.CloseSessionRequest;
import io.clusterlvm.dlm.proto.ConvertRequest;
import io.clusterlvm.dlm.proto.DlmGrpc;
import io.clusterlvm.dlm.proto.LockCall;
import io.clusterlvm.dlm.proto.LockCallResult;
import io.clusterlvm.dlm.proto.LockReply;
import io.clusterlvm.dlm.proto.LockState;
import io.clusterlvm.dlm.proto.OpenSessionRequest;
import io.clusterlvm.dlm.proto.Owner;
import io.clusterlvm.dlm.proto.ReadValueBlockRequest;
import io.clusterlvm.dlm.proto.ReleaseRequest;
import io.clusterlvm.dlm.proto.SessionEvent;
import io.clusterlvm.dlm.proto.WriteValueBlockRequest;
import io.grpc.Status;
import io.grpc.stub.ClientCallStreamObserver;
import io.grpc.stub.ClientResponseObserver;
import java.time.Duration;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.UUID;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.CopyOnWriteArrayList;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicReference;
import java.util.function.Consumer;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * A client session: one process on one node, holding locks. It lives while its event stream to the
 * server is open; when the process exits (or {@link #close()} is called) the server releases the
 * session's locks that were not taken {@link LockOptions#withPersistent() persistent}.
 *
 * <p>If the stream breaks because the server restarted or the leader changed, the session resumes
 * on the new leader within the client's retry window and keeps its locks. If it cannot (the window
 * passed, or the server had already ended it), the session is <em>lost</em>: its non-persistent
 * locks must be assumed gone, and {@link #onLost} listeners are told. A {@link
 * DlmClient#openLeaseBoundSession lease-bound} session has no window: the server keeps it for as
 * long as its node's lease lives, so it keeps resuming until the server says it has ended.
 *
 * <p>Blocking methods wait for the grant; their {@code Async} forms return futures. Thread-safe.
 */
public final class DlmSession implements AutoCloseable {
  private static final Logger LOG = LoggerFactory.getLogger(DlmSession.class);

  /** Extra client deadline beyond a lock timeout, so the server's own timeout answers first. */
  private static final Duration TIMEOUT_MARGIN = Duration.ofSeconds(10);

  /**
   * How long an abandon is retried while no server answers, longer than the client's retry window:
   * it runs in the background, and the lock it would release blocks everyone else meanwhile (a
   * persistent one, which outlives its session, for good).
   */
  static final Duration ABANDON_RETRY_WINDOW = Duration.ofMinutes(10);

  /**
   * The retry window of a lease-bound session's releases and abandons whose answers were lost:
   * without end, in practice (the server keeps the session's locks while the lease lives).
   */
  static final Duration UNTIL_HEARD = Duration.ofDays(3650);

  /** Pause between resumes of a stream broken for longer than the retry window. */
  private static final long LONG_OUTAGE_RESUME_MS = 2000;

  private final DlmClient client;
  private final Owner owner;
  private final String clientName;
  private final boolean leaseBound;
  private final List<Consumer<BlockingNotification>> blockingListeners =
      new CopyOnWriteArrayList<>();
  private final List<Runnable> lostListeners = new CopyOnWriteArrayList<>();

  /**
   * Ids of the session's granted non-persistent locks not released yet: a resume names them, so
   * that a leader that never heard of the session's end (an earlier leader ended it) can tell.
   */
  private final Set<Long> heldLocks = ConcurrentHashMap.newKeySet();

  /** This session's releases not settled yet, by lock id (see {@link #releasesBefore}). */
  private final Map<Long, Releasing> releasing = new ConcurrentHashMap<>();

  /**
   * A release not settled yet: {@code retriesBefore} is the client's count of retried attempts when
   * it was made; {@code settled} completes once no attempt of it is on its way any more.
   */
  private record Releasing(
      String lockspace, String resource, long retriesBefore, CompletableFuture<Void> settled) {}

  private final Object lock = new Object();
  private volatile long id;
  private CompletableFuture<Long> attached = new CompletableFuture<>();
  private ClientCallStreamObserver<OpenSessionRequest> stream;
  private long brokenSince;
  private boolean toldLongOutage;
  private volatile boolean closed;
  private volatile boolean lost;

  DlmSession(DlmClient client, Owner owner, String clientName, boolean leaseBound) {
    this.client = client;
    this.owner = owner;
    this.clientName = clientName;
    this.leaseBound = leaseBound;
  }

  void open() {
    startStream(0);
    try {
      attachedFuture().get(client.callDeadline().toMillis(), TimeUnit.MILLISECONDS);
    } catch (TimeoutException e) {
      close();
      throw new DlmClientException(
          Status.Code.DEADLINE_EXCEEDED,
          null,
          "no dlm-server opened the session within " + Durations.format(client.callDeadline()),
          e);
    } catch (Exception e) {
      close();
      throw DlmClient.unwrap(e);
    }
  }

  public long id() {
    return id;
  }

  public String node() {
    return owner.getNode();
  }

  public long incarnation() {
    return owner.getIncarnation();
  }

  /** True once the session could not be resumed: its non-persistent locks are gone. */
  public boolean isLost() {
    return lost;
  }

  /**
   * Called (on a gRPC thread) when a lock of this session, taken with notify-blocking, blocks
   * someone else's request. The server sends it after the grant of the lock it names, so normally
   * that grant has reached its caller when the listener runs. Not always: the two travel on
   * different streams, and a {@link #lockAsync} future completes on the client's callback threads.
   * A listener that looks the lock up by id should allow for one it does not know yet.
   */
  public void onBlocking(Consumer<BlockingNotification> listener) {
    blockingListeners.add(listener);
  }

  /**
   * Called once if the session is lost; at once, on the caller's thread, if it is lost already (a
   * session can be lost before its owner gets to register). Otherwise it runs on a transport
   * thread, with the session's state locked: it must not wait for a call of this session. A grant
   * that crosses the loss may still reach its caller just after the listener ran (the two travel on
   * different streams): check {@link #isLost} after a grant where that matters.
   */
  public void onLost(Runnable listener) {
    AtomicBoolean ran = new AtomicBoolean();
    Runnable once =
        () -> {
          if (ran.compareAndSet(false, true)) {
            listener.run();
          }
        };
    lostListeners.add(once);
    if (lost) {
      once.run(); // markLost may also have seen it; it runs once all the same
    }
  }

  // ---------------------------------------------------------------- locks

  public Lock lock(String lockspace, String resource, LockMode mode) {
    return lock(lockspace, resource, mode, LockOptions.DEFAULT);
  }

  /**
   * Requests a lock and waits for the grant. Throws {@link DlmClientException} with {@code
   * wouldBlock()} for a NOQUEUE request that can't be granted now, {@code timedOut()} when the wait
   * times out (the request is withdrawn), and a clear message for every refusal.
   */
  public Lock lock(String lockspace, String resource, LockMode mode, LockOptions options) {
    return DlmClient.await(lockAsync(lockspace, resource, mode, options, true));
  }

  public CompletableFuture<Lock> lockAsync(
      String lockspace, String resource, LockMode mode, LockOptions options) {
    return lockAsync(lockspace, resource, mode, options, false);
  }

  /**
   * {@code blocking}: the caller only waits for the result (see {@link DlmClient#blockingCall}).
   *
   * <p>A NOQUEUE request refused while this session was releasing a lock on the same resource is
   * asked once more when those releases are settled. Normally a release goes out ahead of the
   * session's next call and the server applies it first; but when the stream breaks, the release is
   * retried after a back-off, while a request made meanwhile goes out on the new stream at once and
   * could be refused against the session's own lock, which it had given up.
   */
  private CompletableFuture<Lock> lockAsync(
      String lockspace, String resource, LockMode mode, LockOptions options, boolean blocking) {
    List<Releasing> releases = options.noqueue() ? releasesBefore(lockspace, resource) : List.of();
    CompletableFuture<Lock> first = acquire(lockspace, resource, mode, options, blocking);
    if (releases.isEmpty()) {
      return first;
    }
    CompletableFuture<Lock> result = new CompletableFuture<>();
    AtomicReference<CompletableFuture<Lock>> current = new AtomicReference<>(first);
    first.whenComplete(
        (l, e) -> {
          // Unless a call was retried since the releases were made, they went out ahead of this
          // request and the refusal is real.
          long retries = client.retries();
          if (e == null
              || !DlmClient.unwrap(e).wouldBlock()
              || releases.stream().noneMatch(r -> retries > r.retriesBefore())) {
            deliver(result, l, e);
            return;
          }
          LOG.debug(
              "NOQUEUE request for {}/{} refused while this session released a lock on it;"
                  + " asking again once the release is settled",
              lockspace,
              resource);
          CompletableFuture.allOf(
                  releases.stream().map(Releasing::settled).toArray(CompletableFuture[]::new))
              .handle((v, x) -> null) // a failed release is the release's caller's to hear
              .thenCompose(
                  x -> {
                    CompletableFuture<Lock> again =
                        acquire(lockspace, resource, mode, options, false);
                    current.set(again);
                    if (result.isDone()) {
                      again.cancel(true);
                    }
                    return again;
                  })
              .whenComplete((l2, e2) -> deliver(result, l2, e2));
        });
    // However the caller stopped waiting (a cancel, or a time-out of its own such as orTimeout),
    // the request still open is withdrawn. (A plain acquire's caller that times out leaves its
    // request queued until it is granted, then given back; here the re-ask may not even have gone
    // out yet.) A no-op once the result came from it.
    result.whenComplete((v, e) -> current.get().cancel(true));
    return result;
  }

  /**
   * Completes {@code f} with the outcome of an acquire; a grant that {@code f} can no longer take
   * (its caller stopped waiting as it came) is released, or nobody would know the lock is held.
   */
  private void deliver(CompletableFuture<Lock> f, Lock granted, Throwable e) {
    if (e == null) {
      if (!f.complete(granted)) {
        LOG.debug("lock {} granted after its caller stopped waiting; releasing it", granted.id());
        unlockAsync(granted, null);
      }
    } else {
      f.completeExceptionally(
          e instanceof java.util.concurrent.CompletionException && e.getCause() != null
              ? e.getCause()
              : e);
    }
  }

  /** This session's releases of locks on {@code resource} not settled yet. */
  private List<Releasing> releasesBefore(String lockspace, String resource) {
    if (releasing.isEmpty()) {
      return List.of();
    }
    return releasing.values().stream()
        .filter(r -> r.resource().equals(resource) && r.lockspace().equals(lockspace))
        .toList();
  }

  private CompletableFuture<Lock> acquire(
      String lockspace, String resource, LockMode mode, LockOptions options, boolean blocking) {
    String requestId = UUID.randomUUID().toString();
    AcquireRequest.Builder b =
        AcquireRequest.newBuilder()
            .setRequestId(requestId)
            .setOwner(owner)
            .setLockspace(lockspace)
            .setResource(resource)
            .setMode(mode.proto())
            .setNoqueue(options.noqueue())
            .setPersistent(options.persistent())
            .setNotifyBlocking(options.notifyBlocking());
    if (options.timeout() != null) {
      b.setTimeout(proto(options.timeout()));
    }
    CompletableFuture<Lock> result = new CompletableFuture<>();
    AtomicReference<CompletableFuture<LockReply>> call = new AtomicReference<>();
    attachedForCall()
        .whenComplete(
            (sid, err) -> {
              if (err != null) {
                result.completeExceptionally(DlmClient.unwrap(err));
                return;
              }
              AcquireRequest req = b.setSessionId(sid).build();
              CompletableFuture<LockReply> c =
                  client.repeatableCall(
                      s ->
                          client.onLockStream(
                              s, LockCall.newBuilder().setAcquire(req), LockCallResult::getLock),
                      waitDeadline(options),
                      this::sessionReattaching,
                      blocking);
              call.set(c);
              // Settled once the acquire's end is known here and any abandon it needs has been
              // answered: the client's close waits for that (a while), as for releases.
              CompletableFuture<Object> settled = client.mustDeliver(new CompletableFuture<>());
              c.whenComplete(
                  (r, e) -> {
                    if (e != null) {
                      if (unanswered(e) || (options.persistent() && retriedUnanswered(e))) {
                        settleAfter(
                            settled, abandon(c, lockspace, requestId, options.persistent()));
                      } else {
                        settled.complete(null);
                      }
                      result.completeExceptionally(DlmClient.unwrap(e));
                    } else {
                      Lock granted = lockOf(r);
                      if (!options.persistent()) {
                        heldLocks.add(granted.id());
                        if (lost) {
                          // Answered on the transport thread after the session was declared
                          // lost (its listeners have run, without this lock): the lock ends
                          // with the session on the server, so no caller may take it for held.
                          heldLocks.remove(granted.id());
                          result.completeExceptionally(
                              new DlmClientException(
                                  Status.Code.ABORTED,
                                  null,
                                  "session "
                                      + id
                                      + " was lost as lock "
                                      + granted.id()
                                      + " on "
                                      + lockspace
                                      + "/"
                                      + resource
                                      + " was granted: it is not held",
                                  null));
                          settled.complete(null);
                          return;
                        }
                      }
                      if (!result.complete(granted)) {
                        // The caller cancelled as the grant came: nobody will hear of the lock.
                        heldLocks.remove(granted.id());
                        settleAfter(
                            settled, abandon(c, lockspace, requestId, options.persistent()));
                      } else {
                        settled.complete(null);
                      }
                    }
                  });
              if (result.isCancelled()) {
                c.cancel(true); // cancelled before the call existed
              }
            });
    // Cancelling the returned future withdraws the request on the server.
    result.whenComplete(
        (v, e) -> {
          CompletableFuture<LockReply> c = call.get();
          if (result.isCancelled() && c != null) {
            c.cancel(true);
          }
        });
    return result;
  }

  /**
   * The request was sent, perhaps more than once, but its caller stopped waiting before any server
   * said how it ended: the client's deadline passed (a server that stopped answering), the caller
   * cancelled, or no server answered within the retry window. A failure the server gave stands.
   */
  private static boolean unanswered(Throwable e) {
    Throwable t = e instanceof java.util.concurrent.CompletionException ? e.getCause() : e;
    if (t instanceof java.util.concurrent.CancellationException) {
      return true;
    }
    DlmClientException d = DlmClient.unwrap(t);
    return !d.hasOutcome()
        && (d.code() == Status.Code.DEADLINE_EXCEEDED
            || d.code() == Status.Code.CANCELLED
            || d.code() == Status.Code.UNAVAILABLE);
  }

  /**
   * Whether a request sent more than once failed without the lock engine's own answer (would block,
   * timed out, deadlock): the failure may be of a later attempt only, while an earlier one was
   * granted. A retry refused because the session is not open any more (it ended while the answer to
   * the first was lost) says nothing of the lock the first may hold; a persistent one outlives the
   * session, so it is abandoned (the abandon finds nothing if there is nothing). A first attempt's
   * refusal (not a member, a bad name) stands.
   */
  private static boolean retriedUnanswered(Throwable e) {
    Throwable t = e instanceof java.util.concurrent.CompletionException ? e.getCause() : e;
    return t instanceof DlmClient.AttemptFailed a && a.attempt > 1 && !a.failure().hasOutcome();
  }

  /**
   * Abandons the acquire sent with {@code requestId} whose caller will not hear how it ended (see
   * {@link #unanswered}; or its grant came as the caller cancelled): it may have reached a leader,
   * which may have granted it or may grant it later, and then nobody would know they hold the lock,
   * which would block everyone else until this session ends (a persistent one, for good). The
   * stream's withdraw of a call given up on does not cover this when the stream is dead (a server
   * cut off the network, or a leader that lost its leadership: the new leader loaded the request
   * from ZooKeeper), and the abandon also releases a grant that crossed the withdraw. Retried like
   * any call, but for {@link #ABANDON_RETRY_WINDOW}.
   */
  private CompletableFuture<?> abandon(
      CompletableFuture<LockReply> call, String lockspace, String requestId, boolean persistent) {
    if (lost && !persistent) {
      // The server ends the session's requests with it; a persistent lock outlives it.
      return CompletableFuture.completedFuture(null);
    }
    return sendAbandon(
            call,
            AbandonRequest.newBuilder()
                .setOwner(owner)
                .setLockspace(lockspace)
                .setRequestId(requestId)
                .build())
        .whenComplete(
            (r, e) -> {
              if (e != null) {
                DlmClientException d = DlmClient.unwrap(e);
                if (closed || lost || d.code() == Status.Code.CANCELLED) {
                  // The session or the client is closing: the session's end releases the rest.
                  LOG.debug("abandoning request {}: {}", requestId, d.getMessage());
                } else {
                  LOG.warn(
                      "could not abandon request {} in {}; a lock granted for it stays until the"
                          + " session ends: {}",
                      requestId,
                      lockspace,
                      d.getMessage());
                }
              } else if (r.getFound() != LockState.LOCK_STATE_UNSPECIFIED) {
                LOG.info(
                    "request {} in {} was abandoned after its caller stopped waiting (found {})",
                    requestId,
                    lockspace,
                    r.getFound());
              }
            });
  }

  /**
   * Sends {@code abandon} for the request {@code call} made, once no copy of that request can go
   * out after it; retried in the background past the retry window (a lease-bound session's until
   * heard).
   */
  private CompletableFuture<io.clusterlvm.dlm.proto.AbandonResponse> sendAbandon(
      CompletableFuture<LockReply> call, AbandonRequest abandon) {
    DlmClient.awaitLastAttemptSent(call);
    return client.mustDeliver(
        client
            .withRetryWindow(leaseBound ? UNTIL_HEARD : ABANDON_RETRY_WINDOW)
            .repeatableCall(
                s ->
                    client.onLockStream(
                        s, LockCall.newBuilder().setAbandon(abandon), LockCallResult::getAbandoned),
                client.callDeadline(),
                null,
                false));
  }

  public Lock convert(Lock held, LockMode mode, LockOptions options) {
    return DlmClient.await(convertAsync(held, mode, options, null, true));
  }

  /**
   * Converts {@code held}; {@code valueBlock} non-null writes it on a down-conversion from PW/EX.
   */
  public CompletableFuture<Lock> convertAsync(
      Lock held, LockMode mode, LockOptions options, byte[] valueBlock) {
    return convertAsync(held, mode, options, valueBlock, false);
  }

  private CompletableFuture<Lock> convertAsync(
      Lock held, LockMode mode, LockOptions options, byte[] valueBlock, boolean blocking) {
    ConvertRequest.Builder b =
        ConvertRequest.newBuilder()
            .setRequestId(UUID.randomUUID().toString())
            .setOwner(owner)
            .setLockId(held.id())
            .setMode(mode.proto())
            .setNoqueue(options.noqueue());
    if (options.timeout() != null) {
      b.setTimeout(proto(options.timeout()));
    }
    if (valueBlock != null) {
      b.setValueBlock(ByteString.copyFrom(valueBlock));
    }
    ConvertRequest req = b.build();
    CompletableFuture<Lock> result = new CompletableFuture<>();
    CompletableFuture<LockReply> call =
        client.call(
            s ->
                client.onLockStream(
                    s, LockCall.newBuilder().setConvert(req), LockCallResult::getLock),
            waitDeadline(options),
            this::sessionReattaching,
            blocking);
    // Settled once the conversion's end is known and any abandon it needs has been answered: the
    // client's close waits for that, as for an acquire.
    CompletableFuture<Object> settled = client.mustDeliver(new CompletableFuture<>());
    call.whenComplete(
        (r, e) -> {
          if (e != null) {
            if (unanswered(e)) {
              settleAfter(settled, abandonConversion(call, held, req));
            } else {
              settled.complete(null);
            }
            result.completeExceptionally(DlmClient.unwrap(e));
          } else if (!result.complete(lockOf(r))) {
            // The caller cancelled as the answer came.
            settleAfter(settled, abandonConversion(call, held, req));
          } else {
            settled.complete(null);
          }
        });
    result.whenComplete(
        (v, e) -> {
          if (result.isCancelled()) {
            call.cancel(true);
          }
        });
    return result;
  }

  /** Completes {@code settled} once {@code abandon} has ended, however it ended. */
  private static void settleAfter(CompletableFuture<Object> settled, CompletableFuture<?> abandon) {
    abandon.whenComplete((v, e) -> settled.complete(null));
  }

  /**
   * Abandons the conversion {@code req} of {@code held} whose caller will not hear how it ended,
   * and so believes the lock still holds {@code held.mode()}: the server cancels it if it waits, or
   * converts back a granted up-conversion, which would otherwise hold the lock in a stronger mode
   * than anyone knows (blocking others until it is converted again or released). A granted
   * down-conversion stays; the log says which mode the lock holds. Retried like an acquire's
   * abandon.
   */
  private CompletableFuture<?> abandonConversion(
      CompletableFuture<LockReply> call, Lock held, ConvertRequest req) {
    // Also once the session is lost or closed: a persistent lock outlives it, and the conversion
    // with it. For any other lock the server finds nothing to do.
    return sendAbandon(
            call,
            AbandonRequest.newBuilder()
                .setOwner(owner)
                .setLockspace(held.lockspace())
                .setRequestId(req.getRequestId())
                .setLockId(held.id())
                .build())
        .whenComplete(
            (r, e) -> {
              if (e != null) {
                if (!closed && !lost && DlmClient.unwrap(e).code() != Status.Code.CANCELLED) {
                  LOG.warn(
                      "could not abandon the conversion of lock {} to {}; the lock may hold"
                          + " either mode: {}",
                      held.id(),
                      req.getMode(),
                      DlmClient.unwrap(e).getMessage());
                }
              } else if (r.getReverted()) {
                LOG.info(
                    "conversion of lock {} to {} was given up on and undone; the lock holds {}",
                    held.id(),
                    req.getMode(),
                    r.getMode());
              } else if (r.getFound() != LockState.LOCK_STATE_UNSPECIFIED
                  && r.getMode() != held.mode().proto()) {
                LOG.warn(
                    "conversion of lock {} was given up on and could not be undone: the lock"
                        + " holds {}, not {}",
                    held.id(),
                    r.getMode(),
                    held.mode());
              }
            });
  }

  public void unlock(Lock held) {
    DlmClient.await(unlockAsync(held, null, true));
  }

  /** Releases {@code held}, writing {@code valueBlock} (if non-null) when it is held PW/EX. */
  public void unlock(Lock held, byte[] valueBlock) {
    DlmClient.await(unlockAsync(held, valueBlock, true));
  }

  /**
   * Releases {@code held} without waiting, like the Linux DLM's dlm_unlock: returns at once; the
   * future completes when the release is durable. The release is applied before this session's
   * later requests on the same connection, it is durable before anyone else can be granted what it
   * frees, and it is retried across a leader change like any call.
   *
   * <p>Because nobody waits for it, it is not sent on its own: it goes out with this client's next
   * call, or at once when the server says that someone waits for the lock, and within 50 ms at the
   * latest (system property {@code dlm.client.release-hold-ms}; 0 sends it at once). The server in
   * turn may hold its write for up to a millisecond to commit it with the next change. So the
   * future may complete that much later than {@link #unlock} would; closing the session or the
   * client sends held releases first.
   */
  public CompletableFuture<Void> unlockAsync(Lock held, byte[] valueBlock) {
    return unlockAsync(held, valueBlock, false);
  }

  private CompletableFuture<Void> unlockAsync(Lock held, byte[] valueBlock, boolean blocking) {
    boolean wasHeld = heldLocks.remove(held.id());
    ReleaseRequest.Builder b =
        ReleaseRequest.newBuilder()
            .setRequestId(UUID.randomUUID().toString())
            .setOwner(owner)
            .setLockId(held.id())
            // Nobody waits for an asynchronous unlock: the server may commit it together with
            // this session's next request.
            .setDeferrable(!blocking);
    if (valueBlock != null) {
      b.setValueBlock(ByteString.copyFrom(valueBlock));
    }
    ReleaseRequest req = b.build();
    CompletableFuture<Void> out = new CompletableFuture<>();
    CompletableFuture<Void> settled = new CompletableFuture<>();
    Releasing r = new Releasing(held.lockspace(), held.resource(), client.retries(), settled);
    releasing.put(held.id(), r);
    settled.whenComplete((v, e) -> releasing.remove(held.id(), r));
    client
        .mustDeliver(
            client.repeatableCall(
                s ->
                    client.onLockStream(
                        s, LockCall.newBuilder().setRelease(req), LockCallResult::getReleased),
                client.callDeadline(),
                this::sessionReattaching,
                blocking))
        .whenComplete(
            (v, e) -> {
              if (e == null) {
                settled.complete(null);
                out.complete(null);
                return;
              }
              // A retried release that finds no lock: the first attempt did release it (its
              // answer was lost with the old leader). Anything else is a real failure.
              Throwable cause =
                  e instanceof java.util.concurrent.CompletionException ? e.getCause() : e;
              if (cause instanceof DlmClient.AttemptFailed a
                  && a.attempt > 1
                  && a.failure().code() == Status.Code.NOT_FOUND) {
                settled.complete(null);
                out.complete(null);
              } else {
                DlmClientException failure = DlmClient.unwrap(e);
                if (wasHeld && refusedKeepingTheLock(failure.code())) {
                  heldLocks.add(held.id()); // still held: a resume must name it
                }
                if (leaseBound && unanswered(e)) {
                  // Still on its way: a NOQUEUE request may still overtake it.
                  releaseUntilHeard(req).whenComplete((x, y) -> settled.complete(null));
                } else {
                  settled.complete(null);
                }
                out.completeExceptionally(failure);
              }
            });
    return out;
  }

  /**
   * A lease-bound session's release whose answer was lost: the lock may still be held, and the
   * server keeps it for as long as the lease lives (the session does not end), so it is sent again
   * (the same request: a repeat that finds no lock is done) until a server answers, the session
   * ends, or the client closes.
   */
  private CompletableFuture<?> releaseUntilHeard(ReleaseRequest req) {
    if (closed || lost) {
      return CompletableFuture.completedFuture(null);
    }
    LOG.warn(
        "release of lock {} (session {}) not answered; sending it again until the lock service"
            + " answers",
        req.getLockId(),
        id);
    return client
        .mustDeliver(
            client
                .withRetryWindow(UNTIL_HEARD)
                .repeatableCall(
                    s ->
                        client.onLockStream(
                            s,
                            LockCall.newBuilder().setRelease(req.toBuilder().setDeferrable(false)),
                            LockCallResult::getReleased),
                    client.callDeadline(),
                    this::sessionReattaching,
                    false))
        .whenComplete(
            (v, e) -> {
              if (e == null) {
                LOG.info("lock {} released after its first answer was lost", req.getLockId());
                return;
              }
              DlmClientException d = DlmClient.unwrap(e);
              if (d.code() == Status.Code.NOT_FOUND) {
                LOG.info("lock {} was released by the first attempt", req.getLockId());
              } else if (!closed && !lost && d.code() != Status.Code.CANCELLED) {
                LOG.warn("could not release lock {}: {}", req.getLockId(), d.getMessage());
              }
            });
  }

  /** A release the server refused, leaving the lock as it was (a bad value block, say). */
  private static boolean refusedKeepingTheLock(Status.Code code) {
    return code == Status.Code.INVALID_ARGUMENT
        || code == Status.Code.FAILED_PRECONDITION
        || code == Status.Code.PERMISSION_DENIED
        || code == Status.Code.OUT_OF_RANGE;
  }

  /** The value block of a lock held at PR or above. */
  public byte[] readValueBlock(Lock held) {
    ReadValueBlockRequest req =
        ReadValueBlockRequest.newBuilder().setOwner(owner).setLockId(held.id()).build();
    return DlmClient.await(
            client.repeatableCall(s -> s.readValueBlock(req), client.callDeadline(), null, true))
        .getValueBlock()
        .toByteArray();
  }

  /** Writes the value block of a lock held at PW or EX (at most 32 bytes). */
  public void writeValueBlock(Lock held, byte[] valueBlock) {
    WriteValueBlockRequest req =
        WriteValueBlockRequest.newBuilder()
            .setOwner(owner)
            .setLockId(held.id())
            .setValueBlock(ByteString.copyFrom(valueBlock))
            .build();
    DlmClient.await(client.blockingCall(s -> s.writeValueBlock(req), client.callDeadline(), null));
  }

  private Duration waitDeadline(LockOptions options) {
    if (options.noqueue()) {
      return client.callDeadline();
    }
    if (options.timeout() == null || options.timeout().isZero()) {
      return null; // wait as long as it takes; keepalives notice a dead server
    }
    return options.timeout().plus(TIMEOUT_MARGIN);
  }

  /** After a fail-over, a session without locks is unknown until it has resumed: retry then. */
  private boolean sessionReattaching(Status s) {
    return !lost
        && !closed
        && s.getCode() == Status.Code.FAILED_PRECONDITION
        && s.getDescription() != null
        && s.getDescription().startsWith("session ")
        && s.getDescription().contains("is not open");
  }

  private static Lock lockOf(LockReply r) {
    return new Lock(
        r.getLockId(),
        r.getLockspace(),
        r.getResource(),
        LockMode.of(r.getMode()),
        r.getFencingToken(),
        r.getValueBlock().toByteArray(),
        r.getValueBlockValid());
  }

  private static com.google.protobuf.Duration proto(Duration d) {
    return com.google.protobuf.Duration.newBuilder()
        .setSeconds(d.getSeconds())
        .setNanos(d.getNano())
        .build();
  }

  // ---------------------------------------------------------------- the session stream

  /**
   * The session id once the session is open, for a call made now: a call made while the stream is
   * broken waits for the resume. A lease-bound session resumes for as long as it takes, so the call
   * waits for it only as long as the retry window, then fails UNAVAILABLE.
   */
  private CompletableFuture<Long> attachedForCall() {
    CompletableFuture<Long> att = attachedFuture();
    if (!leaseBound || att.isDone()) {
      return att;
    }
    Duration window = client.retryWindow();
    CompletableFuture<Long> bounded = att.copy(); // failing it leaves the session's own alone
    try {
      java.util.concurrent.ScheduledFuture<?> timer =
          client
              .scheduler()
              .schedule(
                  () ->
                      client.offTheRetryThread(
                          () ->
                              bounded.completeExceptionally(
                                  new DlmClientException(
                                      Status.Code.UNAVAILABLE,
                                      null,
                                      "session "
                                          + id
                                          + " is cut off from the lock service and resuming; not"
                                          + " reached within "
                                          + Durations.format(window),
                                      null))),
                  window.toNanos(),
                  TimeUnit.NANOSECONDS);
      bounded.whenComplete((v, e) -> timer.cancel(false));
    } catch (java.util.concurrent.RejectedExecutionException closing) {
      return att; // the client is closing: its close fails the wait
    }
    return bounded;
  }

  private CompletableFuture<Long> attachedFuture() {
    synchronized (lock) {
      return attached;
    }
  }

  private void startStream(long resumeId) {
    if (resumeId != 0 && (closed || lost)) {
      return; // closed while the resume waited: the server's grace ends the session
    }
    OpenSessionRequest req =
        OpenSessionRequest.newBuilder()
            .setOwner(owner)
            .setClientName(clientName)
            .setResumeSessionId(resumeId)
            .addAllHeldLockIds(resumeId != 0 ? List.copyOf(heldLocks) : List.of())
            .build();
    io.grpc.Channel used = client.servers().current();
    DlmGrpc.newStub(used)
        .openSession(
            req,
            new ClientResponseObserver<OpenSessionRequest, SessionEvent>() {
              private ClientCallStreamObserver<OpenSessionRequest> mine;

              @Override
              public void beforeStart(ClientCallStreamObserver<OpenSessionRequest> s) {
                mine = s;
                synchronized (lock) {
                  stream = s;
                }
              }

              @Override
              public void onNext(SessionEvent e) {
                switch (e.getEventCase()) {
                  case OPENED -> {
                    if (closed) {
                      // Closed while this stream was opening (a resume, or an open that timed
                      // out): end it, rather than keep a session nobody will close.
                      mine.cancel("session closed by the client", null);
                      return;
                    }
                    id = e.getOpened().getSessionId();
                    synchronized (lock) {
                      if (toldLongOutage) {
                        LOG.info("session {} of node {} resumed", id, owner.getNode());
                      }
                      brokenSince = 0;
                      toldLongOutage = false;
                      attached.complete(id);
                    }
                  }
                  case BLOCKING -> {
                    client.contended(e.getBlocking().getLockId());
                    if (e.getBlocking().getHintOnly()) {
                      return; // for the client library only: the lock was not asked to be told
                    }
                    for (Consumer<BlockingNotification> l : blockingListeners) {
                      try {
                        l.accept(e.getBlocking());
                      } catch (RuntimeException ex) {
                        LOG.warn("blocking listener failed", ex);
                      }
                    }
                  }
                  default -> {}
                }
              }

              @Override
              public void onError(Throwable t) {
                streamBroke(mine, used, Status.fromThrowable(t), t);
              }

              @Override
              public void onCompleted() {
                streamBroke(
                    mine,
                    used,
                    Status.UNAVAILABLE.withDescription("server ended the stream"),
                    null);
              }
            });
  }

  private void streamBroke(
      ClientCallStreamObserver<OpenSessionRequest> which,
      io.grpc.Channel used,
      Status status,
      Throwable t) {
    long resumeId;
    long now = System.nanoTime();
    long delayMs = 200;
    boolean firstBreak;
    synchronized (lock) {
      if (closed || lost || which != stream) {
        return;
      }
      // A stream that broke for a reason of the transport (a reset, a protocol error) says
      // nothing about the session; the resume will. The server's own refusals stand.
      boolean retryable =
          status.getCode() == Status.Code.UNAVAILABLE
              || status.getCode() == Status.Code.INTERNAL
              || status.getCode() == Status.Code.UNKNOWN
              // A lease-bound session is kept by the server while the lease lives: only the
              // server saying it is gone or not this client's ends it here.
              || (leaseBound && !endsSession(status.getCode()));
      firstBreak = brokenSince == 0;
      if (firstBreak) {
        brokenSince = now;
      }
      boolean windowOpen = now - brokenSince < client.retryWindow().toNanos();
      if (leaseBound && retryable && !windowOpen) {
        windowOpen = true; // the server keeps it while the lease lives: resume until told
        delayMs = LONG_OUTAGE_RESUME_MS;
        if (!toldLongOutage) {
          toldLongOutage = true;
          LOG.warn(
              "session {} of node {} cannot reach the lock service for {}; it is bound to the"
                  + " node's lease, so the lock service keeps its locks while the lease lives,"
                  + " and it keeps resuming",
              id,
              owner.getNode(),
              Durations.format(Duration.ofNanos(now - brokenSince)));
        }
      }
      if (!retryable || !windowOpen) {
        if (id == 0) {
          // never opened: open() reports this failure
          lost = true;
          attached.completeExceptionally(
              DlmClientException.of(t != null ? t : status.asRuntimeException()));
          return;
        }
        markLost(status);
        return;
      }
      if (attached.isDone() && !attached.isCompletedExceptionally()) {
        attached = new CompletableFuture<>();
      }
      resumeId = id;
      if (status.getCode() == Status.Code.UNAVAILABLE) {
        client.servers().failed(used, status);
      }
    }
    if (firstBreak) {
      LOG.info(
          "session {} of node {} broke ({}); resuming",
          resumeId,
          owner.getNode(),
          status.getDescription() != null ? status.getDescription() : status.getCode());
    } else {
      LOG.debug("session {} not resumed yet: {}", resumeId, status);
    }
    try {
      client.scheduler().schedule(() -> startStream(resumeId), delayMs, TimeUnit.MILLISECONDS);
    } catch (java.util.concurrent.RejectedExecutionException e) {
      // The client is closed (its channels' shutdown is what broke the stream): the session is
      // done with it. Calls made from now on, which would wait for this resume, fail instead.
      LOG.debug("session {} not resumed: the client is closed", resumeId);
      synchronized (lock) {
        markClosed("the client of session " + resumeId + " is closed");
      }
    }
  }

  /** What a server answers a resume with when the session cannot be resumed, ever. */
  private static boolean endsSession(Status.Code code) {
    return code == Status.Code.NOT_FOUND
        || code == Status.Code.PERMISSION_DENIED
        || code == Status.Code.FAILED_PRECONDITION
        || code == Status.Code.INVALID_ARGUMENT
        || code == Status.Code.UNAUTHENTICATED
        || code == Status.Code.UNIMPLEMENTED;
  }

  private void markLost(Status status) {
    lost = true;
    DlmClientException why =
        new DlmClientException(
            Status.Code.ABORTED,
            null,
            "session " + id + " was lost: " + status.getDescription(),
            null);
    CompletableFuture<Long> pending = attached;
    attached = CompletableFuture.failedFuture(why);
    // Calls made while the stream was broken wait for the resume on this one.
    pending.completeExceptionally(why);
    LOG.warn("session {} of node {} is lost: {}", id, owner.getNode(), status);
    for (Runnable r : lostListeners) {
      try {
        r.run();
      } catch (RuntimeException e) {
        LOG.warn("lost listener failed", e);
      }
    }
  }

  /**
   * Ends the session. The server releases its locks that were not taken persistent. Does not wait
   * for that; release locks explicitly first where the order matters.
   */
  @Override
  public void close() {
    ClientCallStreamObserver<OpenSessionRequest> s;
    synchronized (lock) {
      if (closed) {
        return;
      }
      s = markClosed("session closed");
    }
    if (id != 0 && !lost) {
      // Releases this session's closing would overtake (held back, or on their way) go first.
      client.flushReleases(LockStream.CLOSE_RELEASE_WAIT_MS);
      // Say so explicitly: a stream that merely breaks could be a dead host, whose locks the
      // server must keep frozen; a clean close releases them at once.
      try {
        DlmClient.await(
            client
                .withRetryWindow(Duration.ofSeconds(2))
                .call(
                    st ->
                        st.closeSession(
                            CloseSessionRequest.newBuilder()
                                .setOwner(owner)
                                .setSessionId(id)
                                .build()),
                    Duration.ofSeconds(5),
                    null));
      } catch (DlmClientException e) {
        LOG.debug("session {} close: {}", id, e.getMessage());
      }
    }
    cancel(s, "session closed by the client");
  }

  /**
   * Stops using the session without ending it: no CloseSession is sent, the stream is cancelled,
   * and the server decides as for any break of the stream (for a node whose lease is gone: its
   * locks stay frozen until the node is fenced and purged). For a process that must not let the
   * locks go, such as an agent whose lvm may still write under them.
   */
  public void drop() {
    ClientCallStreamObserver<OpenSessionRequest> s;
    synchronized (lock) {
      if (closed) {
        return;
      }
      s = markClosed("session dropped");
    }
    LOG.warn("session {} of node {} dropped without closing it", id, owner.getNode());
    cancel(s, "session dropped by the client");
  }

  /** Under {@code lock}: no call or resume uses the session any more; returns its stream. */
  private ClientCallStreamObserver<OpenSessionRequest> markClosed(String why) {
    closed = true;
    if (!attached.isDone()) {
      attached.completeExceptionally(
          new DlmClientException(Status.Code.CANCELLED, null, why, null));
    }
    return stream;
  }

  private void cancel(ClientCallStreamObserver<OpenSessionRequest> s, String why) {
    if (s != null) {
      try {
        s.cancel(why, null);
      } catch (RuntimeException e) {
        // A call that already ended (e.g. it failed to open) may throw on cancel in grpc-java;
        // there is nothing left to cancel then.
        LOG.debug("session {} stream cancel: {}", id, e.toString());
      }
    }
  }
}
