package io.clusterlvm.dlm.client;

import com.google.common.util.concurrent.FutureCallback;
import com.google.common.util.concurrent.Futures;
import com.google.common.util.concurrent.ListenableFuture;
import com.google.common.util.concurrent.MoreExecutors;
import io.clusterlvm.dlm.proto.DlmGrpc;
import io.clusterlvm.dlm.proto.JoinRequest;
import io.clusterlvm.dlm.proto.LeaveRequest;
import io.clusterlvm.dlm.proto.LeaveResponse;
import io.clusterlvm.dlm.proto.ListLocksRequest;
import io.clusterlvm.dlm.proto.ListLocksResponse;
import io.clusterlvm.dlm.proto.ListLockspacesRequest;
import io.clusterlvm.dlm.proto.ListNodesRequest;
import io.clusterlvm.dlm.proto.LockCall;
import io.clusterlvm.dlm.proto.LockCallResult;
import io.clusterlvm.dlm.proto.LockInfo;
import io.clusterlvm.dlm.proto.LockspaceInfo;
import io.clusterlvm.dlm.proto.NodeInfo;
import io.clusterlvm.dlm.proto.Owner;
import io.clusterlvm.dlm.proto.PurgeRequest;
import io.clusterlvm.dlm.proto.PurgeResponse;
import io.clusterlvm.dlm.proto.ResourceInfo;
import io.clusterlvm.dlm.proto.ServerStatusRequest;
import io.clusterlvm.dlm.proto.ServerStatusResponse;
import io.grpc.Channel;
import io.grpc.Status;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.concurrent.CancellationException;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CompletionException;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.Executor;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.RejectedExecutionException;
import java.util.concurrent.ScheduledExecutorService;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;
import java.util.concurrent.atomic.AtomicLong;
import java.util.concurrent.atomic.AtomicReference;
import java.util.function.Function;
import java.util.function.Predicate;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * The Java client of the lock service.
 *
 * <p>Create one per process with {@link #connect(String)} (a list of dlm-servers; the client
 * follows the leader) or {@link #forChannel(Channel)}. Locks are taken through a {@link
 * DlmSession}, which is what a process holds them with.
 *
 * <p>Every call has a deadline ({@link #withCallDeadline}), for each attempt; calls that fail
 * because no leader is reachable (UNAVAILABLE), and lock calls and reads that get no answer within
 * the deadline, are retried with back-off for {@link #withRetryWindow the retry window} from the
 * moment the leader went away (however long the call had been waiting before), with the same
 * request id, so a retry never creates a second lock. Thread-safe.
 */
public final class DlmClient implements AutoCloseable {
  private static final Logger LOG = LoggerFactory.getLogger(DlmClient.class);

  private final ServerList servers;
  private final ScheduledExecutorService scheduler;
  private final boolean ownsScheduler;
  private final Duration callDeadline;
  private final Duration retryWindow;

  /** Lock calls go over one {@link LockStream} per server channel; shared by the copies. */
  private final Map<Channel, LockStream> lockStreams;

  /** Attempts of this client's calls that failed and were scheduled again, so far. */
  private final AtomicLong retries;

  /** Completes the calls whose callers do not block on them (they may chain their own code). */
  private final ExecutorService callbacks;

  /** Blocking hints, shared by the lock streams (and the copies). */
  private final ContendedLocks contended;

  /**
   * Releases and abandons still being tried (shared with the views): {@link #close} lets them get
   * through, within a bound, before it stops the retries. A release dropped at close leaves a
   * persistent lock held until its node leaves or is purged.
   */
  private final Set<CompletableFuture<?>> undelivered;

  private DlmClient(
      ServerList servers,
      ScheduledExecutorService scheduler,
      boolean ownsScheduler,
      Duration callDeadline,
      Duration retryWindow,
      Map<Channel, LockStream> lockStreams,
      ExecutorService callbacks,
      ContendedLocks contended,
      Set<CompletableFuture<?>> undelivered,
      AtomicLong retries) {
    this.servers = servers;
    this.scheduler = scheduler;
    this.ownsScheduler = ownsScheduler;
    this.callDeadline = callDeadline;
    this.retryWindow = retryWindow;
    this.lockStreams = lockStreams;
    this.callbacks = callbacks;
    this.contended = contended;
    this.undelivered = undelivered;
    this.retries = retries;
  }

  private DlmClient(ServerList servers) {
    this(
        servers,
        newScheduler(),
        true,
        Duration.ofSeconds(10),
        Duration.ofSeconds(30),
        new ConcurrentHashMap<>(),
        Executors.newCachedThreadPool(
            r -> {
              Thread t = new Thread(ownThread(r), "dlm-client-callbacks");
              t.setDaemon(true);
              return t;
            }),
        new ContendedLocks(),
        ConcurrentHashMap.newKeySet(),
        new AtomicLong());
  }

  /** Set on the threads of clients' own pools, which run the callbacks of their calls. */
  private static final ThreadLocal<Boolean> CLIENT_THREAD = ThreadLocal.withInitial(() -> false);

  private static Runnable ownThread(Runnable r) {
    return () -> {
      CLIENT_THREAD.set(true);
      r.run();
    };
  }

  private static ScheduledExecutorService newScheduler() {
    return Executors.newSingleThreadScheduledExecutor(
        r -> {
          Thread t = new Thread(ownThread(r), "dlm-client-retry");
          t.setDaemon(true);
          return t;
        });
  }

  /** Connects to "host:port[,host:port...]": the dlm-servers of one cluster. */
  public static DlmClient connect(String targets) {
    return connect(targets, null);
  }

  /**
   * Connects over TLS ({@code tls} null: in plain text, as {@link #connect(String)}). A server
   * whose certificate the CA did not sign, or that does not name the host connected to, fails the
   * calls with UNAVAILABLE, as an unreachable server does.
   */
  public static DlmClient connect(String targets, TlsFiles tls) {
    return new DlmClient(new ServerList(targets, TlsFiles.channelCredentials(tls)));
  }

  /** Uses one given channel (e.g. in-process); the caller keeps ownership of the channel. */
  public static DlmClient forChannel(Channel channel) {
    return new DlmClient(new ServerList(channel));
  }

  /**
   * Deadline of each attempt of a non-waiting call (listings, release, join...); a release or a
   * listing that gets no answer within it is retried at another server, within the retry window.
   * Default 10 s. Returns a view that shares this client's connections: closing the view does
   * nothing; close this client.
   */
  public DlmClient withCallDeadline(Duration d) {
    return new DlmClient(
        servers,
        scheduler,
        false,
        d,
        retryWindow,
        lockStreams,
        callbacks,
        contended,
        undelivered,
        retries);
  }

  /**
   * How long to keep retrying while no leader is reachable, counted from the failure. Default 30 s.
   * Returns a view, like {@link #withCallDeadline}.
   */
  public DlmClient withRetryWindow(Duration d) {
    return new DlmClient(
        servers,
        scheduler,
        false,
        callDeadline,
        d,
        lockStreams,
        callbacks,
        contended,
        undelivered,
        retries);
  }

  /**
   * How many attempts of this client's calls failed and were scheduled again so far: a retried call
   * goes out after a back-off (a broken stream, a leader that stepped down, a failed write), so
   * calls made meanwhile may overtake it.
   */
  long retries() {
    return retries.get();
  }

  Duration callDeadline() {
    return callDeadline;
  }

  Duration retryWindow() {
    return retryWindow;
  }

  ServerList servers() {
    return servers;
  }

  ScheduledExecutorService scheduler() {
    return scheduler;
  }

  /**
   * Runs {@code r} on the callback pool, or here once the client is closed. For work the scheduler
   * fires: whatever completes a caller's future there would run the caller's chained code on the
   * client's one retry thread, and code that blocks on another call of this client would then wait
   * for ever for retries that thread can no longer run.
   */
  void offTheRetryThread(Runnable r) {
    try {
      callbacks.execute(r);
    } catch (RejectedExecutionException closed) {
      r.run();
    }
  }

  // ---------------------------------------------------------------- membership and admin

  /** Joins {@code node} to the cluster; returns its new incarnation. */
  public long join(String node, String bootId) {
    return await(
            blockingCall(
                s -> s.join(JoinRequest.newBuilder().setNode(node).setBootId(bootId).build()),
                callDeadline,
                null))
        .getIncarnation();
  }

  /**
   * A clean leave: releases every lock of that incarnation. Asking again for an incarnation that
   * has already left (or was purged) succeeds with {@code already_left} set, so a leave whose
   * answer was lost can simply be asked again.
   */
  public LeaveResponse leave(String node, long incarnation) {
    return await(
        blockingCall(
            s -> s.leave(LeaveRequest.newBuilder().setOwner(owner(node, incarnation)).build()),
            callDeadline,
            null));
  }

  /**
   * Drops every lock of (node, incarnation): only after the node is known to be off. The answer
   * says how many, and whether the incarnation was already gone (left or purged before), so that of
   * two that purge one incarnation, the one that found nothing knows the other did it.
   */
  public PurgeResponse purge(String node, long incarnation, String reason) {
    return await(
        blockingCall(
            s ->
                s.purge(
                    PurgeRequest.newBuilder()
                        .setOwner(owner(node, incarnation))
                        .setReason(reason)
                        .build()),
            callDeadline,
            null));
  }

  /** Opens a session for a process on {@code node} (which must have joined). Blocks until open. */
  public DlmSession openSession(String node, long incarnation, String clientName) {
    DlmSession s = new DlmSession(this, owner(node, incarnation), clientName, false);
    s.open();
    return s;
  }

  /**
   * Opens the session of the process that holds {@code node}'s membership lease (its agent), to be
   * bound to that lease ({@code NodeMembership.bindSession}) before any lock is taken under it.
   * While the lease lives the server keeps a bound session's locks over any break of its stream
   * (the lease proves this process alive, so a break is a lost connection), and so this session
   * never gives up resuming, and a release or abandon whose answer was lost is sent again until one
   * is heard: its locks would otherwise stay held for as long as the lease lives.
   */
  public DlmSession openLeaseBoundSession(String node, long incarnation, String clientName) {
    DlmSession s = new DlmSession(this, owner(node, incarnation), clientName, true);
    s.open();
    return s;
  }

  public List<LockspaceInfo> lockspaces() {
    return await(
            repeatableCall(
                s -> s.listLockspaces(ListLockspacesRequest.getDefaultInstance()),
                callDeadline,
                null,
                true))
        .getLockspacesList();
  }

  /** Resources per page of a listing (without a size, a server answers in one message). */
  private static final int LISTING_PAGE_SIZE = 1_000;

  /** Every resource with its granted, converting and waiting locks; null lockspace for all. */
  public List<ResourceInfo> locks(String lockspace) {
    return locks(lockspace, null, 0);
  }

  /**
   * The resources on which {@code node} (every node if null) holds or asks a lock, in {@code
   * incarnation} (any if 0), with only those locks; null lockspace for all. Read a page at a time,
   * each page a call of its own (retried like any listing), so the result is not one snapshot: each
   * resource is as it was when its page was read.
   */
  public List<ResourceInfo> locks(String lockspace, String node, long incarnation) {
    ListLocksRequest.Builder req =
        ListLocksRequest.newBuilder()
            .setLockspace(lockspace == null ? "" : lockspace)
            .setNode(node == null ? "" : node)
            .setIncarnation(incarnation)
            .setPageSize(LISTING_PAGE_SIZE);
    List<ResourceInfo> all = new ArrayList<>();
    while (true) {
      ListLocksRequest page = req.build();
      ListLocksResponse r = await(repeatableCall(s -> s.listLocks(page), callDeadline, null, true));
      for (ResourceInfo resource : r.getResourcesList()) {
        // A server older than paging (a page asked of it during an upgrade) starts over.
        if (!all.isEmpty() && !after(resource, all.get(all.size() - 1))) {
          continue;
        }
        // A server older than the node filter lists every node's locks.
        ResourceInfo shown = node == null ? resource : onlyOf(resource, node, incarnation);
        if (shown != null) {
          all.add(shown);
        }
      }
      if (r.getNextPageToken().isEmpty()) {
        return all;
      }
      req.setPageToken(r.getNextPageToken());
    }
  }

  /** Whether {@code r} comes after {@code last} in a listing's order: lockspace, then resource. */
  private static boolean after(ResourceInfo r, ResourceInfo last) {
    int byLockspace = r.getLockspace().compareTo(last.getLockspace());
    return byLockspace > 0
        || (byLockspace == 0 && r.getResource().compareTo(last.getResource()) > 0);
  }

  /**
   * {@code r} with only the locks of {@code node} in {@code incarnation} (any if 0); null if none.
   */
  private static ResourceInfo onlyOf(ResourceInfo r, String node, long incarnation) {
    Predicate<LockInfo> of =
        l ->
            l.getOwner().getNode().equals(node)
                && (incarnation == 0 || l.getOwner().getIncarnation() == incarnation);
    ResourceInfo.Builder b =
        r.toBuilder()
            .clearGranted()
            .addAllGranted(r.getGrantedList().stream().filter(of).toList())
            .clearConverting()
            .addAllConverting(r.getConvertingList().stream().filter(of).toList())
            .clearWaiting()
            .addAllWaiting(r.getWaitingList().stream().filter(of).toList());
    return b.getGrantedCount() + b.getConvertingCount() + b.getWaitingCount() == 0
        ? null
        : b.build();
  }

  public List<NodeInfo> nodes() {
    return await(
            repeatableCall(
                s -> s.listNodes(ListNodesRequest.getDefaultInstance()), callDeadline, null, true))
        .getNodesList();
  }

  /** The status of the server this client talks to now (no retry, no leader needed). */
  public ServerStatusResponse status() {
    try {
      return DlmGrpc.newBlockingStub(servers.current())
          .withDeadlineAfter(callDeadline.toMillis(), TimeUnit.MILLISECONDS)
          .serverStatus(ServerStatusRequest.getDefaultInstance());
    } catch (RuntimeException e) {
      throw DlmClientException.of(e);
    }
  }

  /** Current node record, or null if the node never joined. */
  public NodeInfo node(String node) {
    for (NodeInfo n : nodes()) {
      if (n.getNode().equals(node)) {
        return n;
      }
    }
    return null;
  }

  static Owner owner(String node, long incarnation) {
    return Owner.newBuilder().setNode(node).setIncarnation(incarnation).build();
  }

  // ---------------------------------------------------------------- calls with retry

  /**
   * Runs {@code rpc} against the current server, retrying UNAVAILABLE (and whatever {@code
   * retryAlso} accepts) with back-off within the retry window. {@code deadline} null: no deadline
   * (a lock wait with no timeout; keepalives detect a dead server). A call that gets no answer
   * within its deadline fails: use {@link #repeatableCall} where a second copy does no harm.
   */
  <T> CompletableFuture<T> call(
      Function<DlmGrpc.DlmFutureStub, ListenableFuture<T>> rpc,
      Duration deadline,
      Predicate<Status> retryAlso) {
    return call(rpc, deadline, retryAlso, false);
  }

  /**
   * Like {@link #call}, for a caller that blocks on the result: the answer completes the future on
   * the transport thread, which wakes the caller directly instead of through the channel's executor
   * (a thread hand-off that costs as much as the rest of the call on a small machine). Only for
   * futures that no caller's code is chained to.
   */
  <T> CompletableFuture<T> blockingCall(
      Function<DlmGrpc.DlmFutureStub, ListenableFuture<T>> rpc,
      Duration deadline,
      Predicate<Status> retryAlso) {
    return call(rpc, deadline, retryAlso, true);
  }

  /** {@link #blockingCall} if {@code blocking}, else {@link #call}. */
  <T> CompletableFuture<T> call(
      Function<DlmGrpc.DlmFutureStub, ListenableFuture<T>> rpc,
      Duration deadline,
      Predicate<Status> retryAlso,
      boolean blocking) {
    return start(rpc, deadline, retryAlso, blocking, false);
  }

  /**
   * Like {@link #call}, and a call that gets no answer within its deadline is also retried, at the
   * next server: its server stopped answering (its host dropped off the network, and the connection
   * has not noticed yet: keepalives take up to 15 s), which is as gone as a server that refused.
   * Only for calls of which a second copy does no harm: lock calls with request ids (acquire,
   * release, abandon) and reads. Not join (a second incarnation), leave or purge (the second copy
   * fails though the first worked), nor a conversion that writes a value block.
   */
  <T> CompletableFuture<T> repeatableCall(
      Function<DlmGrpc.DlmFutureStub, ListenableFuture<T>> rpc,
      Duration deadline,
      Predicate<Status> retryAlso,
      boolean blocking) {
    return start(rpc, deadline, retryAlso, blocking, true);
  }

  private <T> CompletableFuture<T> start(
      Function<DlmGrpc.DlmFutureStub, ListenableFuture<T>> rpc,
      Duration deadline,
      Predicate<Status> retryAlso,
      boolean blocking,
      boolean repeatable) {
    CompletableFuture<T> out = new CompletableFuture<>();
    Executor callbacks = blocking ? MoreExecutors.directExecutor() : null;
    Call<T> call =
        new Call<>(rpc, deadline, retryAlso, callbacks, repeatable, out, new AtomicReference<>());
    // Once per call, not per attempt: a call retried through a long outage would pile them up.
    out.whenComplete(
        (v, e) -> {
          ListenableFuture<T> current = call.current().get();
          if (out.isCancelled() && current != null) {
            current.cancel(true);
          }
        });
    attempt(call, 0, false, 1, 25);
    return out;
  }

  /**
   * Returns once no attempt of {@code call} (a future from {@link #call} or {@link
   * #repeatableCall}) is being sent, and none will be: for {@code call} done, its attempts are sent
   * under its monitor after checking that it is not done ({@link #attempt}).
   */
  static void awaitLastAttemptSent(CompletableFuture<?> call) {
    synchronized (call) {
      // nothing: holding the monitor once is the wait
    }
  }

  /** What stays the same across the attempts of one call. */
  private record Call<T>(
      Function<DlmGrpc.DlmFutureStub, ListenableFuture<T>> rpc,
      Duration deadline,
      Predicate<Status> retryAlso,
      Executor callbacks,
      boolean repeatable,
      CompletableFuture<T> out,
      AtomicReference<ListenableFuture<T>> current) {}

  /** The longest pause between two attempts. */
  private static final long MAX_BACKOFF_MS = 1000;

  /**
   * Attempt number {@code n} of a call; the result says which attempt succeeded. {@code giveUpAt}
   * is the end of the retry window of the current outage (0: no attempt failed yet); {@code
   * silent}: an attempt in this outage got no answer within its deadline.
   *
   * <p>The attempt is sent under {@code out}'s monitor, and only if {@code out} is not done: see
   * {@link #awaitLastAttemptSent}.
   */
  private <T> void attempt(Call<T> call, long giveUpAt, boolean silent, int n, long backoffMs) {
    CompletableFuture<T> out = call.out();
    long started = System.nanoTime();
    Channel ch;
    ListenableFuture<T> f;
    synchronized (out) {
      if (out.isDone()) {
        return;
      }
      ch = servers.current();
      DlmGrpc.DlmFutureStub stub = DlmGrpc.newFutureStub(ch);
      if (call.deadline() != null) {
        stub = stub.withDeadlineAfter(call.deadline().toNanos(), TimeUnit.NANOSECONDS);
      }
      if (call.callbacks() != null) {
        stub = stub.withExecutor(call.callbacks());
      }
      try {
        f = call.rpc().apply(stub.withOption(ATTEMPT, n));
      } catch (RuntimeException e) {
        out.completeExceptionally(DlmClientException.of(e));
        return;
      }
    }
    call.current().set(f);
    if (out.isCancelled()) {
      f.cancel(true); // cancelled before the attempt was set: the cancel did not see it
    }
    Futures.addCallback(
        f,
        new FutureCallback<T>() {
          @Override
          public void onSuccess(T result) {
            out.complete(result);
          }

          @Override
          public void onFailure(Throwable t) {
            Status s = Status.fromThrowable(t);
            // A deadline the server answered with (a lock wait that timed out) carries an
            // outcome and stands.
            boolean unanswered =
                s.getCode() == Status.Code.DEADLINE_EXCEEDED
                    && !DlmClientException.of(t).hasOutcome();
            boolean retryable =
                s.getCode() == Status.Code.UNAVAILABLE
                    || (unanswered && call.repeatable())
                    || (call.retryAlso() != null && call.retryAlso().test(s));
            // The window counts from when the service went away, not from when the call began:
            // a lock wait may have been parked for longer than the window when its leader dies.
            // An attempt that lasted longer than the longest back-off was being served, so its
            // failure starts a new outage; not once an attempt of this outage went unanswered:
            // a leader this client cannot reach, which the others name, would be retried for
            // ever (each attempt there fails only when the connection gives up, after seconds).
            long now = System.nanoTime();
            boolean newOutage =
                giveUpAt == 0
                    || (!silent
                        && !unanswered
                        && now - started > TimeUnit.MILLISECONDS.toNanos(MAX_BACKOFF_MS));
            long until = newOutage ? now + retryWindow.toNanos() : giveUpAt;
            boolean silentNow = (!newOutage && silent) || unanswered;
            if (retryable && now < until && !out.isDone()) {
              if (s.getCode() == Status.Code.UNAVAILABLE || unanswered) {
                servers.failed(ch, s);
              }
              long next = Math.min(backoffMs * 2, MAX_BACKOFF_MS);
              retries.incrementAndGet();
              try {
                scheduler.schedule(
                    () -> offTheRetryThread(() -> attempt(call, until, silentNow, n + 1, next)),
                    backoffMs,
                    TimeUnit.MILLISECONDS);
              } catch (RejectedExecutionException closed) {
                out.completeExceptionally(new AttemptFailed(n, DlmClientException.of(t)));
              }
            } else {
              out.completeExceptionally(new AttemptFailed(n, DlmClientException.of(t)));
            }
          }
        },
        MoreExecutors.directExecutor());
  }

  /**
   * Starts a lock call ({@code op}: acquire, convert or release) on the lock stream of the stub's
   * channel, with the stub's deadline and executor; for {@link #call}'s {@code rpc}, in place of
   * the unary RPC. {@code result} takes the answer out of a success.
   */
  <T> ListenableFuture<T> onLockStream(
      DlmGrpc.DlmFutureStub stub, LockCall.Builder op, Function<LockCallResult, T> result) {
    Channel ch = stub.getChannel();
    LockStream s = lockStreams.get(ch);
    if (s == null || s.isBroken()) {
      synchronized (lockStreams) {
        if (scheduler.isShutdown()) {
          return Futures.immediateFailedFuture(
              Status.CANCELLED.withDescription("client closed").asRuntimeException());
        }
        s = lockStreams.get(ch);
        if (s == null || s.isBroken()) {
          // A broken stream failed its calls, which retry: on a new stream, perhaps elsewhere.
          s = new LockStream(ch, scheduler, callbacks, contended, retries);
          lockStreams.put(ch, s);
        }
      }
    }
    return s.call(op, result, stub.getCallOptions());
  }

  /** The server says someone waits for {@code lockId}: a held-back release of it goes out now. */
  void contended(long lockId) {
    contended.add(lockId);
    // Marked first: a release queued meanwhile either finds the mark or is sent by this.
    lockStreams.values().forEach(LockStream::flush);
  }

  /** Sends held-back releases and waits (up to {@code timeoutMillis}) for open releases. */
  void flushReleases(long timeoutMillis) {
    flushReleasesUntil(System.nanoTime() + TimeUnit.MILLISECONDS.toNanos(timeoutMillis));
  }

  private void flushReleasesUntil(long until) {
    lockStreams.values().forEach(s -> s.flushReleases(until));
  }

  /** Marks which attempt of a call a stub is for (visible to interceptors; used in tests). */
  static final io.grpc.CallOptions.Key<Integer> ATTEMPT =
      io.grpc.CallOptions.Key.createWithDefault("dlm-attempt", 1);

  /**
   * A failure of attempt {@code attempt}; lets a caller see that an earlier attempt may have
   * worked.
   */
  static final class AttemptFailed extends RuntimeException {
    final int attempt;

    AttemptFailed(int attempt, DlmClientException cause) {
      super(cause.getMessage(), cause, false, false);
      this.attempt = attempt;
    }

    DlmClientException failure() {
      return (DlmClientException) getCause();
    }
  }

  /** Waits for a call and unwraps its failure into a {@link DlmClientException}. */
  static <T> T await(CompletableFuture<T> f) {
    try {
      return f.get();
    } catch (InterruptedException e) {
      Thread.currentThread().interrupt();
      if (!f.cancel(true)) {
        // It completed as the interrupt came: what it did stands (a lock granted is held, and
        // only its caller can release it), so that is the answer; the interrupt stays set.
        try {
          return f.join();
        } catch (CompletionException done) {
          throw unwrap(done);
        } catch (CancellationException done) {
          throw new DlmClientException(Status.Code.CANCELLED, null, "cancelled", done);
        }
      }
      throw new DlmClientException(Status.Code.CANCELLED, null, "interrupted", e);
    } catch (ExecutionException e) {
      throw unwrap(e.getCause());
    } catch (CancellationException e) {
      throw new DlmClientException(Status.Code.CANCELLED, null, "cancelled", e);
    }
  }

  static DlmClientException unwrap(Throwable t) {
    while ((t instanceof CompletionException || t instanceof ExecutionException)
        && t.getCause() != null) {
      t = t.getCause();
    }
    if (t instanceof AttemptFailed a) {
      return a.failure();
    }
    return DlmClientException.of(t);
  }

  /**
   * Tracks {@code call}, a release or an abandon, until it ends: {@link #close} waits for it (a
   * while) before it stops retrying. Returns {@code call}.
   */
  <T> CompletableFuture<T> mustDeliver(CompletableFuture<T> call) {
    undelivered.add(call);
    call.whenComplete((v, e) -> undelivered.remove(call));
    return call;
  }

  /**
   * Waits until {@code until} ({@link System#nanoTime}) for the releases and abandons still being
   * retried (a leader change, say), with the retries still running; logs those that did not get
   * through.
   */
  private void awaitUndelivered(long until) {
    List<CompletableFuture<?>> open = List.copyOf(undelivered);
    if (open.isEmpty()) {
      return;
    }
    try {
      CompletableFuture.allOf(
              open.stream().map(f -> f.handle((v, e) -> null)).toArray(CompletableFuture[]::new))
          .get(Math.max(0, until - System.nanoTime()), TimeUnit.NANOSECONDS);
    } catch (TimeoutException e) {
      LOG.warn(
          "closing with {} release(s) or abandon(s) not yet answered after {} ms; locks they"
              + " name may stay held until the session ends (persistent ones until the node"
              + " leaves or is purged)",
          undelivered.size(),
          CLOSE_DELIVERY_WAIT_MS);
    } catch (InterruptedException e) {
      Thread.currentThread().interrupt();
    } catch (ExecutionException e) {
      throw new IllegalStateException(e); // handle() completes normally
    }
  }

  /**
   * How long {@link #close} waits in all for the releases held back or open, and for releases and
   * abandons still being retried.
   */
  static final long CLOSE_DELIVERY_WAIT_MS = 3 * MAX_BACKOFF_MS;

  /**
   * Sends the releases held back and waits for them, ends the open acquires and conversions
   * (abandoning those a server may have granted), and waits for releases and abandons still being
   * retried, up to 3 s in all; then closes the channels this client opened and its retry thread.
   *
   * <p>Called on a thread of a client's own (a callback of one of its calls, say), it returns at
   * once and closes on a thread of its own: what it waits for includes the call whose callback is
   * running, which is settled only once that returns.
   */
  @Override
  public void close() {
    if (ownsScheduler && CLIENT_THREAD.get()) {
      // Not a daemon: the JVM waits for the releases it delivers (3 s at most).
      Thread closing = new Thread(this::closeNow, "dlm-client-close");
      closing.start();
      return;
    }
    closeNow();
  }

  private void closeNow() {
    if (ownsScheduler) {
      // Releases held back or on their way go first, then what failed on its way: one deadline
      // for all of it.
      long until = System.nanoTime() + TimeUnit.MILLISECONDS.toNanos(CLOSE_DELIVERY_WAIT_MS);
      flushReleasesUntil(until);
      // Acquires and conversions still open end now rather than at the very end, so that the
      // abandons they send (a leader may have granted one whose answer never came: a persistent
      // lock would stay held for good) get through with the releases, on new streams.
      List<LockStream> open;
      synchronized (lockStreams) {
        open = List.copyOf(lockStreams.values());
      }
      open.forEach(LockStream::close);
      awaitUndelivered(until);
      // Retries waiting out their back-off run now rather than vanish with the queue (a caller
      // waiting for one would wait for ever); run after the shutdown, a lock call finds the
      // client closed and fails. The back-off is at most MAX_BACKOFF_MS.
      scheduler.shutdown();
      try {
        scheduler.awaitTermination(MAX_BACKOFF_MS + 500, TimeUnit.MILLISECONDS);
      } catch (InterruptedException e) {
        Thread.currentThread().interrupt();
      }
      // Under the map's lock, so that no stream is opened after the last is closed.
      synchronized (lockStreams) {
        scheduler.shutdownNow();
        lockStreams.values().forEach(LockStream::close);
      }
      servers.close();
      callbacks.shutdown();
    }
  }
}
