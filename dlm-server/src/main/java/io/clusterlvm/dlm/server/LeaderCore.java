package io.clusterlvm.dlm.server;

import com.google.common.util.concurrent.Futures;
import io.clusterlvm.dlm.engine.BlockingEvent;
import io.clusterlvm.dlm.engine.DlmException;
import io.clusterlvm.dlm.engine.Effects;
import io.clusterlvm.dlm.engine.EndedRequest;
import io.clusterlvm.dlm.engine.Grant;
import io.clusterlvm.dlm.engine.LockEngine;
import io.clusterlvm.dlm.engine.LockView;
import io.clusterlvm.dlm.engine.Owner;
import io.clusterlvm.dlm.engine.QueueState;
import io.clusterlvm.dlm.engine.ResourceKey;
import io.clusterlvm.dlm.engine.ResourceView;
import io.clusterlvm.dlm.proto.BlockingNotification;
import io.clusterlvm.dlm.proto.SessionEvent;
import io.grpc.Status;
import io.grpc.stub.ServerCallStreamObserver;
import io.grpc.stub.StreamObserver;
import java.time.Clock;
import java.time.Duration;
import java.util.ArrayDeque;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.Set;
import java.util.concurrent.BlockingQueue;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.LinkedBlockingQueue;
import java.util.concurrent.ScheduledExecutorService;
import java.util.concurrent.ScheduledFuture;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicLong;
import java.util.concurrent.atomic.AtomicReference;
import java.util.function.Consumer;
import java.util.stream.Stream;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * The leader's lock service: one thread ({@code dlm-engine}) owns the {@link LockEngine}, applies
 * requests in arrival order, writes what they changed to ZooKeeper in one transaction per batch
 * (group commit), and only then answers the callers and wakes the waiters that were granted.
 *
 * <p>Up to {@link #MAX_WRITES_IN_FLIGHT} batches are written at a time: while ZooKeeper commits
 * one, the engine applies the next. Batches are answered strictly in the order they were applied
 * (ZooKeeper commits one session's writes in order), and a batch that needs no write waits for the
 * writes ahead of it, so no answer ever shows a state that is not yet durable. The one exception is
 * a blocking hint ({@link #sendHints}): it only makes a holder send a release it has made, so it
 * goes out when its request is applied.
 *
 * <p>Everything in this class except {@link #submit} and {@link #close} runs on that thread, so
 * none of the maps need locks.
 *
 * <p>If a write fails, nothing of that batch or of any batch applied after it is acknowledged:
 * their callers and every parked waiter get UNAVAILABLE, and the table is reloaded from ZooKeeper
 * (the truth) under a new epoch. Clients retry with the same request ids, which makes the retry
 * land on the lock the first attempt may have created.
 */
final class LeaderCore implements AutoCloseable {
  private static final Logger LOG = LoggerFactory.getLogger(LeaderCore.class);
  private static final int MAX_BATCH = 512;

  /**
   * Batches being written at once. A few are enough to keep ZooKeeper's own group commit busy; more
   * would only make each batch smaller (8 measured slower than 4 at 64 clients; 2 the same). At
   * least 2: a batch of deferred releases sits last in flight until the next batch carries its
   * write, and with a single slot the engine would wait for it instead of taking that next batch.
   */
  static final int MAX_WRITES_IN_FLIGHT = 4;

  /** Queued when a write completes, to wake the engine thread; runs nothing. */
  private static final Submitted WRITE_DONE = new Submitted(null, null, false, Needs.LOADER);

  /**
   * How long the write of a batch of deferrable releases may wait for the next batch, to be
   * committed with it. A client that unlocks asynchronously usually sends its next request within a
   * round trip; one millisecond covers that on a loaded machine and adds at most that much to an
   * answer nobody waits for.
   */
  static final long DEFER_NANOS = TimeUnit.MILLISECONDS.toNanos(1);

  private long deferNanos = DEFER_NANOS;

  /** Work for the engine thread. Returns what to send once the batch is durable, or null. */
  @FunctionalInterface
  interface Task {
    Runnable apply(LockEngine engine, Effects fx);
  }

  /**
   * What a task needs of the table while a new leader is still loading it ({@link TableLoader}): a
   * task runs as soon as that part is in, and waits (in arrival order) until then.
   */
  record Needs(Kind kind, String lockspace, long id, String node, List<Long> lockIds) {
    enum Kind {
      /** Nothing: the loader's own work, and a write's completion. */
      LOADER,
      /** Node records only, which are read before serving starts: join, a new session. */
      NODES,
      /** One lockspace: a lock request on a resource in it. */
      LOCKSPACE,
      /**
       * The lock with this id, in a lockspace read to the end: a conversion, release or cancel. A
       * lock not read yet waits until it is (looked at again as each lockspace comes in).
       */
      LOCK,
      /**
       * A session to resume: waits for all if this leader ended it (its locks may be back), or
       * until the locks the client says it holds ({@code lockIds}) are read, or if one is not
       * there, for all.
       */
      RESUME,
      /** Everything: listings, ending sessions, leave, purge, liveness decisions. */
      TABLE
    }

    /** Needs that name no locks of a client's (all but a resume's). */
    Needs(Kind kind, String lockspace, long id, String node) {
      this(kind, lockspace, id, node, List.of());
    }

    static final Needs LOADER = new Needs(Kind.LOADER, null, 0, null);
    static final Needs NODES = new Needs(Kind.NODES, null, 0, null);
    static final Needs TABLE = new Needs(Kind.TABLE, null, 0, null);

    /**
     * A request of {@code node} on a resource in {@code lockspace}. While the table loads, a node's
     * requests run in the order they came: one that waits holds back the node's later ones.
     */
    static Needs lockspace(String lockspace, String node) {
      return new Needs(Kind.LOCKSPACE, lockspace, 0, node);
    }

    /** A request of {@code node} (or null: the server's own) on lock {@code lockId}. */
    static Needs lock(long lockId, String node) {
      return new Needs(Kind.LOCK, null, lockId, node);
    }

    static Needs resume(long sessionId, List<Long> heldLockIds) {
      return new Needs(Kind.RESUME, null, sessionId, null, List.copyOf(heldLockIds));
    }
  }

  /** {@code deferrable}: a release whose caller does not wait for the answer. */
  private record Submitted(StreamObserver<?> caller, Task task, boolean deferrable, Needs needs) {}

  /** An answer to send once its batch is durable. */
  private record Pending(StreamObserver<?> caller, Runnable send) {}

  /**
   * An applied batch: answered once its write (if any) and every write before it are durable.
   * {@code batch}: the number of the batch that applied it ({@link #batchNumber}).
   */
  private record Applied(
      CompletableFuture<Void> write, List<Pending> replies, Effects fx, long batch) {}

  /** A caller parked until its lock is granted or its request ends. */
  static final class Waiter {
    final StreamObserver<io.clusterlvm.dlm.proto.LockReply> caller;
    final long lockId;
    final Duration timeout;
    final boolean conversion;
    ScheduledFuture<?> timer;
    boolean timedOut;

    /**
     * A retry of this request was told it holds the lock while this call still waits for the
     * grant's write: this call going away must not give the lock back.
     */
    boolean claimed;

    /**
     * Where it was parked: the batch, and how many grants and ended requests that batch had
     * already. Only what happens to the lock after that concerns this waiter; a conversion reuses
     * its lock's id, and an earlier request's grant or end may still be on its way to durable.
     */
    long batch;

    int grantsBefore;
    int endedBefore;

    Waiter(
        StreamObserver<io.clusterlvm.dlm.proto.LockReply> caller,
        long lockId,
        Duration timeout,
        boolean conversion) {
      this.caller = caller;
      this.lockId = lockId;
      this.timeout = timeout;
      this.conversion = conversion;
    }
  }

  private static final int PRUNE_HELD_BACK_AT = 64;

  /** A hold with this many notifications held back is logged at INFO. */
  private static final int LOG_HELD_BACK_AT = 100;

  /** A client session: a process on a node, alive while its event stream is open. */
  static final class Session {
    final long id;
    final Owner owner;
    final String clientName;
    StreamObserver<SessionEvent> stream; // null while orphaned (after a restart, until resumed)
    ScheduledFuture<?> graceTimer;

    /**
     * What the latest liveness decision of its broken stream found, null while it is open or
     * undecided: GONE (its node shows no sign of life: its locks wait for the fence) or CUT_OFF
     * (bound to its node's live lease: they wait for it to come back). Logged when it changes.
     */
    NodeLiveness.Verdict verdict;

    int breaks; // the decision of the latest break (or orphaning) is the one that counts

    /**
     * Blocking notifications held back, by lock id, while the stream's outbound buffer is full (its
     * client does not read): one per lock, so that a stuck client costs the server at most one
     * event per lock it holds ({@link #holdBack}). Sent in order once the stream drains.
     */
    final Map<Long, SessionEvent> heldBack = new LinkedHashMap<>();

    /**
     * Something is held back: the stream's ready handler then asks the engine thread to send it
     * (read off the engine thread; a healthy stream that drains costs no task).
     */
    volatile boolean holding;

    /** When {@link #heldBack} reaches this size, entries of locks gone are dropped. */
    int pruneAt = PRUNE_HELD_BACK_AT;

    /** This hold was logged at INFO (it grew large); its end is too. */
    boolean holdLogged;

    void dropHeldBack() {
      heldBack.clear();
      holding = false;
      holdLogged = false;
      pruneAt = PRUNE_HELD_BACK_AT;
    }

    Session(long id, Owner owner, String clientName) {
      this.id = id;
      this.owner = owner;
      this.clientName = clientName;
    }
  }

  private final LockStore store;
  private final String serverId;
  private final Clock clock;
  private final Duration sessionGrace;
  private final Duration abruptEndGrace;
  private final NodeLiveness liveness;
  private final ScheduledExecutorService timers;
  private final Consumer<Throwable> fatal;

  private final BlockingQueue<Submitted> queue = new LinkedBlockingQueue<>();
  private final Thread thread;
  private final AtomicReference<State> state = new AtomicReference<>(State.LATENT);

  // engine-thread state
  private LockEngine engine;
  private final Map<Long, List<Waiter>> parked = new HashMap<>();

  /**
   * New locks granted at once whose answer waits for their write, by lock id; true once a retry of
   * the same request was told of the lock. Engine thread only.
   */
  private final Map<Long, Boolean> unheardGrants = new HashMap<>();

  private final Map<Long, Session> sessions = new HashMap<>();
  private final LinkedHashSet<Long> endedSessions = new LinkedHashSet<>();
  private long batchNumber;
  private final ArrayDeque<Applied> inFlight = new ArrayDeque<>();

  /**
   * An applied batch of deferrable releases that woke nobody, not yet written: its dirty records
   * are written with the next batch (or alone once {@link #DEFER_NANOS} have passed). Its Applied
   * entry is already last in {@link #inFlight}, with a write that never completes until that entry
   * is replaced by one with the real write.
   */
  private Effects deferredFx;

  private long deferredUntil;

  /**
   * Lockspaces listed at takeover whose records are not all in the engine yet; null once the whole
   * table is loaded.
   */
  private Set<String> unloaded;

  /**
   * Lockspaces of the current load that hold a corrupt record (the loader reads them again), with
   * what the clients that need them are told ({@link #lockspaceFailed}).
   */
  private final Map<String, Unreadable> unreadable = new HashMap<>();

  /** A lockspace with a corrupt record: what its clients are told, and the record's problem. */
  private record Unreadable(Status status, String why) {}

  /** Tasks that arrived before the part of the table they need; in arrival order. */
  private final ArrayDeque<Submitted> waitingForLoad = new ArrayDeque<>();

  /** Waiting tasks whose part of the table just came in; run before the rest of the batch. */
  private final List<Submitted> nowReady = new ArrayList<>();

  private volatile TableLoader loader; // read by close() after the engine thread

  /** How many tasks of each node wait in {@link #waitingForLoad}. */
  private final Map<String, Integer> waitingNodes = new HashMap<>();

  private long loadNumber;

  /**
   * Background loads that failed in a row (engine thread), leaving the engine with part of what it
   * read (a record the engine could not restore, an Error while reading). Each reload takes a new
   * epoch and fails every waiter and session stream, so they must not come back to back: {@link
   * #recover} waits longer after each (up to 5 s). A lockspace that merely can't be read is read
   * again by the loader, without a reload ({@link TableLoader}).
   */
  private int failedLoads;

  private long loadStartedNanos;

  // read from other threads for status
  private final AtomicLong epoch = new AtomicLong();
  private volatile int lockCount;
  private volatile int resourceCount;
  private volatile boolean tableLoading;
  private volatile List<String> unreadableNow = List.of();

  /**
   * Ids an epoch keeps in reserve: far more than one batch can take ({@link #MAX_BATCH} tasks of a
   * few ids each), so the renewal never runs short while it waits for writes in flight.
   */
  static final long ID_MARGIN = 1L << 24;

  private volatile long renewEpochBelow = ID_MARGIN;

  /** Set by the engine thread as it ends, for whatever reason; {@link #submit} refuses then. */
  private volatile boolean engineEnded;

  private enum State {
    LATENT,
    STARTED,
    CLOSED
  }

  LeaderCore(
      LockStore store,
      String serverId,
      Clock clock,
      Duration sessionGrace,
      Duration abruptEndGrace,
      NodeLiveness liveness,
      ScheduledExecutorService timers,
      Consumer<Throwable> fatal) {
    this.abruptEndGrace = abruptEndGrace;
    this.liveness = liveness;
    this.store = store;
    this.serverId = serverId;
    this.clock = clock;
    this.sessionGrace = sessionGrace;
    this.timers = timers;
    this.fatal = fatal;
    this.thread = new Thread(this::run, "dlm-engine");
    thread.setUncaughtExceptionHandler((t, e) -> fatal.accept(e));
  }

  /**
   * Takes over (new epoch), reads the node records and starts serving; the lock table is read in
   * the background ({@link TableLoader}).
   */
  void start() throws Exception {
    if (!state.compareAndSet(State.LATENT, State.STARTED)) {
      throw new IllegalStateException("already started");
    }
    loadTable();
    thread.start();
  }

  /** Tests: how long deferrable releases wait for company (default {@link #DEFER_NANOS}). */
  void deferReleasesFor(Duration d) {
    if (state.get() != State.LATENT) {
      throw new IllegalStateException("set before start");
    }
    deferNanos = d.toNanos();
  }

  long epoch() {
    return epoch.get();
  }

  int lockCount() {
    return lockCount;
  }

  int resourceCount() {
    return resourceCount;
  }

  /** Still reading the table after taking over (see {@link TableLoader}). */
  boolean tableLoading() {
    return tableLoading;
  }

  /** The lockspaces this leader can't read, each as "LOCKSPACE: why" (ServerStatus). */
  List<String> unreadableLockspaces() {
    return unreadableNow;
  }

  /** Queues a task; {@code caller} gets UNAVAILABLE if the batch that runs it cannot be written. */
  void submit(StreamObserver<?> caller, Task task) {
    submit(caller, Needs.TABLE, false, task);
  }

  void submit(StreamObserver<?> caller, Needs needs, Task task) {
    submit(caller, needs, false, task);
  }

  /**
   * Queues a task; {@code deferrable}: it is a release whose caller does not wait for the answer,
   * so its write may wait a little for company (see {@link #DEFER_NANOS}).
   */
  void submit(StreamObserver<?> caller, Needs needs, boolean deferrable, Task task) {
    if (state.get() != State.STARTED || engineEnded) {
      fail(caller, SHUTTING_DOWN);
      return;
    }
    Submitted s = new Submitted(caller, task, deferrable, needs);
    queue.add(s);
    // The engine thread may have ended (stepping down) between the check and the add; it drains
    // the queue once, after setting engineEnded, so a task it did not take is failed here.
    if (engineEnded && queue.remove(s)) {
      fail(caller, SHUTTING_DOWN);
    }
  }

  @Override
  public void close() {
    if (state.getAndSet(State.CLOSED) != State.STARTED) {
      return;
    }
    thread.interrupt();
    try {
      thread.join(TimeUnit.SECONDS.toMillis(10));
      TableLoader l = loader; // the engine thread has ended, or gave up within 10 s
      if (l != null) {
        l.close();
      }
    } catch (InterruptedException e) {
      Thread.currentThread().interrupt();
    }
  }

  // ---------------------------------------------------------------- engine thread

  private void run() {
    List<Submitted> batch = new ArrayList<>(MAX_BATCH);
    try {
      while (state.get() == State.STARTED) {
        answerDurable();
        if (engine.idsLeft() < renewEpochBelow) {
          renewEpoch();
          continue;
        }
        if (inFlight.size() >= MAX_WRITES_IN_FLIGHT) {
          awaitOldestWrite();
          continue;
        }
        batch.clear();
        if (deferredFx == null) {
          batch.add(queue.take());
        } else {
          Submitted next = queue.poll(deferredUntil - System.nanoTime(), TimeUnit.NANOSECONDS);
          if (next == null) {
            flushDeferred(); // nothing came to share the write with
            continue;
          }
          if (next == WRITE_DONE) {
            continue; // answers what that write made durable, and keeps waiting
          }
          batch.add(next);
        }
        queue.drainTo(batch, MAX_BATCH - 1);
        runBatch(batch);
      }
    } catch (InterruptedException e) {
      // closing, or stepping down after a write found another leader
    } finally {
      // Before the drain: the core stays installed until the server hears of the step-down, and
      // a task queued after the drain would never be answered (a lock wait without a timeout
      // would hang for good).
      engineEnded = true;
      shutdownCleanly();
    }
  }

  private void runBatch(List<Submitted> batch) throws InterruptedException {
    Effects fx = new Effects();
    long number = ++batchNumber;
    List<Pending> replies = new ArrayList<>(batch.size());
    boolean corrupt = false;
    boolean deferrable = true;
    ArrayDeque<Submitted> work = new ArrayDeque<>(batch);
    // Waiting tasks that readyAfterLoad let go, in its order: they arrived before the rest of this
    // batch, so they run first. They are not checked again: a node's task let go while a later
    // one of the same node still waits would otherwise queue up behind that later one.
    ArrayDeque<Submitted> letGo = new ArrayDeque<>();
    while (!letGo.isEmpty() || !work.isEmpty()) {
      boolean waited = !letGo.isEmpty();
      Submitted s = waited ? letGo.poll() : work.poll();
      if (s.task() == null) {
        continue; // WRITE_DONE
      }
      if (corrupt) {
        fail(s.caller(), RELOADING); // not applied: the engine is about to be reloaded
        continue;
      }
      String node = s.needs().node();
      if (!waited && (!loaded(s.needs()) || (node != null && waitingNodes.containsKey(node)))) {
        Status refused = unreadableFor(s);
        if (refused != null) {
          fail(s.caller(), refused); // nothing applied: a node's earlier tasks keep their order
          continue;
        }
        waitingForLoad.add(s);
        if (node != null) {
          waitingNodes.merge(node, 1, Integer::sum);
        }
        if (s.needs().kind() == Needs.Kind.LOCKSPACE && !loaded(s.needs())) {
          loader.prioritize(s.needs().lockspace());
        }
        continue;
      }
      deferrable &= s.deferrable();
      try {
        Runnable send = s.task().apply(engine, fx);
        if (send != null) {
          replies.add(new Pending(s.caller(), send));
        }
        letGo.addAll(nowReady);
        nowReady.clear();
      } catch (LoadFailed e) {
        failedLoads++;
        LOG.warn(
            "loading the lock table failed ({}; {} time(s) in a row); reloading",
            e.getCause().toString(),
            failedLoads);
        corrupt = true;
      } catch (DlmException e) {
        Status status = GrpcStatuses.of(e);
        replies.add(new Pending(s.caller(), () -> fail(s.caller(), status)));
      } catch (RuntimeException e) {
        letGo.addAll(nowReady); // failed below with the rest of the batch
        nowReady.clear();
        // A bug in the engine: its state can no longer be trusted, so reload it below.
        LOG.error("internal error while applying a request; reloading the lock table", e);
        fail(s.caller(), Status.INTERNAL.withDescription("internal error; see the server log"));
        corrupt = true;
      }
    }
    if (corrupt) {
      // Nothing of this batch is written, so none of its answers may say it happened: the
      // requests that were applied get UNAVAILABLE (their clients retry on the reloaded table).
      for (Pending p : replies) {
        fail(p.caller(), RELOADING);
      }
      // Answer what is already durable (or fail it), then reload. Deferred releases are not
      // written from an engine that can no longer be trusted: their callers retry.
      dropDeferred();
      boolean reloaded = false;
      while (!inFlight.isEmpty() && !reloaded) {
        awaitOldestWrite();
        reloaded = answerDurable(); // a failed write reloads there
      }
      if (!reloaded) {
        recover();
      }
      return;
    }
    sendHints(fx);
    if (deferrable
        && deferredFx == null
        && fx.needsWrite()
        && fx.grants().isEmpty()
        && fx.ended().isEmpty()
        && fx.blocking().isEmpty()) {
      // Releases nobody waits for, that woke nobody: hold the write for the next batch.
      deferredFx = fx;
      deferredUntil = System.nanoTime() + deferNanos;
      inFlight.add(new Applied(new CompletableFuture<>(), replies, fx, number));
      publishCounts();
      return;
    }
    boolean carries = deferredFx != null;
    if (carries) {
      fx.carryWritesOf(deferredFx);
      deferredFx = null;
    }
    CompletableFuture<Void> write;
    try {
      write = write(fx);
    } catch (RuntimeException e) {
      LOG.error("internal error while writing a batch; reloading the lock table", e);
      write =
          CompletableFuture.failedFuture(
              new LockStore.StoreUnavailableException("internal error: " + e, e));
    }
    if (carries) {
      // The deferred batch (last in flight) is durable when this write is.
      Applied d = inFlight.pollLast();
      inFlight.add(new Applied(write, d.replies(), d.fx(), d.batch()));
    }
    inFlight.add(new Applied(write, replies, fx, number));
    publishCounts();
    answerDurable();
  }

  /**
   * Starts the next epoch, as a new leader would, because this one's ids are running out ({@link
   * LockEngine#nextId}): what is in flight is made durable and answered first; then the table is
   * reloaded under the next epoch, and waiters and sessions are told to retry and resume, as after
   * a fail-over. At the default margin this happens once per about four billion ids.
   */
  private void renewEpoch() throws InterruptedException {
    flushDeferred();
    while (!inFlight.isEmpty()) {
      awaitOldestWrite();
      if (answerDurable()) {
        return; // the write failed, and the reload that followed started a new epoch
      }
    }
    LOG.warn(
        "epoch {} has {} ids left (of 2^32); starting the next epoch: the lock table is reloaded,"
            + " waiters retry and sessions resume, as after a fail-over",
        epoch.get(),
        engine.idsLeft());
    recover();
  }

  /** Tests: start a new epoch once fewer than {@code ids} are left (default {@link #ID_MARGIN}). */
  void renewEpochBelow(long ids) {
    renewEpochBelow = ids;
  }

  /** Writes the deferred releases now, on their own. */
  private void flushDeferred() throws InterruptedException {
    if (deferredFx != null) {
      runBatch(List.of());
    }
  }

  /** Fails the deferred releases (last in {@link #inFlight}) unwritten: their callers retry. */
  private void dropDeferred() {
    if (deferredFx != null) {
      deferredFx = null;
      for (Pending p : inFlight.pollLast().replies()) {
        fail(p.caller(), RELOADING);
      }
    }
  }

  /**
   * Starts writing what {@code fx} changed (if anything); completes when it is durable. Always
   * asynchronous, even when nothing else is in flight: a synchronous write would answer one caller
   * a thread hand-off sooner, but requests that arrive meanwhile would wait for it instead of being
   * applied and written in the next batch (docs/design-notes.md, "The lock path"). The exception is
   * a batch too big for one transaction, whose parts but the last are waited for here (see {@link
   * LockStore#writeAsync}).
   */
  private CompletableFuture<Void> write(Effects fx) {
    if (!fx.needsWrite()) {
      return CompletableFuture.completedFuture(null);
    }
    CompletableFuture<Void> write = store.writeAsync(fx, engine);
    write.whenComplete((v, e) -> queue.add(WRITE_DONE));
    return write;
  }

  private static final Status RELOADING =
      Status.UNAVAILABLE.withDescription("lock table reloaded; retry");

  private static final Status SHUTTING_DOWN =
      Status.UNAVAILABLE.withDescription("dlm-server is shutting down; retry");

  /** Waits until the oldest write in flight completes, either way. */
  private void awaitOldestWrite() throws InterruptedException {
    try {
      inFlight.peek().write().get();
    } catch (ExecutionException e) {
      // answerDurable deals with it
    }
  }

  /**
   * Answers the applied batches whose writes are durable, oldest first, stopping at the first one
   * still in flight. A failed write fails its batch and every later one and reloads the table;
   * returns whether it did.
   */
  private boolean answerDurable() throws InterruptedException {
    FailedWrite failed;
    // The answers of this pass go out together when it ends; the failure handling waits on
    // ZooKeeper, so it runs after them.
    try (AnswerBatch answers = AnswerBatch.open()) {
      failed = answerWritten();
    }
    if (failed == null) {
      return false;
    }
    failWrite(failed.batch(), failed.cause());
    return true;
  }

  /** A batch whose write failed, and why. */
  private record FailedWrite(Applied batch, Throwable cause) {}

  /** Fails {@code a}'s callers and every later batch's, then reloads the table. */
  private void failWrite(Applied a, Throwable failed) throws InterruptedException {
    List<Pending> lost = new ArrayList<>(a.replies());
    dropDeferred(); // it could only be written with a later batch, and none will be
    // Later batches were applied on top of this one: none of them may be acknowledged. Their
    // writes may still commit; wait for them so that the reload sees the final state. They stay
    // in inFlight meanwhile, so that a shutdown during the wait fails their callers.
    try {
      for (Applied later : inFlight) {
        try {
          later.write().get();
        } catch (ExecutionException ignored) {
          // failed too, or not: either way the reload shows what ZooKeeper holds
        }
      }
    } catch (InterruptedException e) {
      for (Pending p : lost) {
        fail(p.caller(), SHUTTING_DOWN);
      }
      throw e;
    }
    for (Applied later : inFlight) {
      lost.addAll(later.replies());
    }
    inFlight.clear();
    if (failed instanceof LockStore.NotLeaderException) {
      LOG.error("stepping down: {}", failed.getMessage());
      failAll(lost, Status.UNAVAILABLE.withDescription("this dlm-server lost leadership"));
      fatal.accept(failed);
      throw new InterruptedException("lost leadership");
    }
    LOG.warn(
        "ZooKeeper write failed ({}); failing {} requests and reloading",
        failed.getMessage(),
        lost.size());
    failAll(lost, Status.UNAVAILABLE.withDescription("ZooKeeper write failed; retry"));
    recover();
  }

  /**
   * Answers the batches whose writes succeeded, oldest first, up to the first still in flight or
   * the first that failed, which it takes out of {@link #inFlight} and returns (else null).
   */
  private FailedWrite answerWritten() {
    while (!inFlight.isEmpty() && inFlight.peek().write().isDone()) {
      Applied a = inFlight.poll();
      try {
        Futures.getDone(a.write());
      } catch (ExecutionException e) {
        return new FailedWrite(a, e.getCause());
      }
      for (Pending p : a.replies()) {
        p.send().run();
      }
      dispatch(a.fx(), a.batch());
    }
    return null;
  }

  /**
   * Answers the waiters that batch {@code batch} granted or whose requests it ended, and sends
   * blocking events.
   */
  private void dispatch(Effects fx, long batch) {
    List<Grant> grants = fx.grants();
    for (int i = 0; i < grants.size(); i++) {
      Grant g = grants.get(i);
      for (Waiter w : unpark(g.lock().lockId(), batch, i, true)) {
        cancelTimer(w);
        reply(w.caller, GrpcStatuses.lockReply(g));
      }
    }
    List<EndedRequest> ended = fx.ended();
    for (int i = 0; i < ended.size(); i++) {
      EndedRequest e = ended.get(i);
      for (Waiter w : unpark(e.lock().lockId(), batch, i, false)) {
        cancelTimer(w);
        fail(w.caller, endedStatus(e, w));
      }
    }
    for (BlockingEvent b : fx.blocking()) {
      // After this pass's answers, which go out when its answer batch closes: the holder's grant
      // may be one of them, and its listener must hear of the grant before the notification.
      if (b.holder().notifyBlocking() && !AnswerBatch.sendAtClose(() -> sendBlocking(b))) {
        sendBlocking(b);
      }
    }
  }

  /**
   * Sends the blocking hints of a batch just applied, before its write is durable. A hint only
   * makes its holder send a release it has already made (or makes later) at once instead of holding
   * it back, so it may run ahead of the write: were the write lost, the holder would merely have
   * sent its release early. Sent after the write instead, a release made meanwhile waited for the
   * waiter's own write (about one hand-off in five in dlm-bench). Holders that asked to be told in
   * full hear after the write ({@link #dispatch}), so that their listener never hears of a lock
   * whose grant has not reached them.
   */
  private void sendHints(Effects fx) {
    for (BlockingEvent b : fx.blocking()) {
      if (!b.holder().notifyBlocking()) {
        sendBlocking(b);
      }
    }
  }

  private void sendBlocking(BlockingEvent b) {
    Session s = sessions.get(b.holder().sessionId());
    if (s != null && s.stream != null) {
      send(s, GrpcStatuses.blockingEvent(b));
    }
  }

  private Status endedStatus(EndedRequest e, Waiter w) {
    LockView l = e.lock();
    if (w.timedOut) {
      return GrpcStatuses.withOutcome(
          Status.DEADLINE_EXCEEDED.withDescription(
              "timed out after "
                  + GrpcStatuses.format(w.timeout)
                  + " waiting for "
                  + l.requestedMode()
                  + " on "
                  + l.resource()
                  + "; "
                  + holders(l.resource())),
          io.clusterlvm.dlm.proto.Outcome.TIMED_OUT);
    }
    return switch (e.reason()) {
      case CANCELLED ->
          GrpcStatuses.withOutcome(
              Status.CANCELLED.withDescription("request for " + l.resource() + " was cancelled"),
              io.clusterlvm.dlm.proto.Outcome.CANCELLED);
      case PURGED ->
          Status.ABORTED.withDescription(
              "request for "
                  + l.resource()
                  + " ended: its owner "
                  + l.owner()
                  + " was purged or left");
      case SESSION_ENDED ->
          Status.ABORTED.withDescription(
              "request for " + l.resource() + " ended with its client session " + l.sessionId());
    };
  }

  static final int HOLDERS_NAMED = 8;

  /**
   * "held by node2/3 in EX (lock 42)", for messages that tell an operator who is in the way. Names
   * at most {@link #HOLDERS_NAMED}: a resource can have thousands of shared holders, and the
   * message goes into a status description (a trailer, a few KiB at most) and is built on the
   * engine thread.
   */
  String holders(ResourceKey key) {
    return engine
        .resource(key)
        .map(
            r -> {
              int count = r.granted().size() + r.converting().size();
              if (count == 0) {
                return "no holder";
              }
              List<String> named =
                  Stream.concat(r.granted().stream(), r.converting().stream())
                      .limit(HOLDERS_NAMED)
                      .map(h -> h.owner() + " in " + h.grantedMode() + " (lock " + h.lockId() + ")")
                      .toList();
              String more = count > named.size() ? " and " + (count - named.size()) + " more" : "";
              return "held by " + String.join(", ", named) + more;
            })
        .orElse("no holder");
  }

  // ---------------------------------------------------------------- waiting

  /**
   * Removes and returns the waiters on {@code lockId} that the {@code index}th grant (or ended
   * request) of batch {@code batch} answers: those parked before it.
   */
  private List<Waiter> unpark(long lockId, long batch, int index, boolean grant) {
    List<Waiter> ws = parked.get(lockId);
    if (ws == null) {
      return List.of();
    }
    List<Waiter> answered = new ArrayList<>(ws.size());
    for (java.util.Iterator<Waiter> it = ws.iterator(); it.hasNext(); ) {
      Waiter w = it.next();
      if (answers(w, batch, index, grant)) {
        it.remove();
        answered.add(w);
      }
    }
    if (ws.isEmpty()) {
      parked.remove(lockId);
    }
    return answered;
  }

  private static boolean answers(Waiter w, long batch, int index, boolean grant) {
    return w.batch < batch
        || (w.batch == batch && index >= (grant ? w.grantsBefore : w.endedBefore));
  }

  /** Parks a caller until lock {@code lockId} is granted or ends; engine thread only. */
  void park(Waiter w, Effects fx) {
    w.batch = batchNumber;
    w.grantsBefore = fx.grants().size();
    w.endedBefore = fx.ended().size();
    parked.computeIfAbsent(w.lockId, k -> new ArrayList<>()).add(w);
    if (w.timeout != null && !w.timeout.isZero()) {
      w.timer =
          timers.schedule(
              () -> submit(null, Needs.lock(w.lockId, null), (e, later) -> timeOut(w, e, later)),
              w.timeout.toNanos(),
              TimeUnit.NANOSECONDS);
    }
  }

  /**
   * The wait timed out. A request that a batch still being written granted or ended is left to that
   * batch's answer: the grant wins, as in the Linux DLM when a cancel crosses a grant.
   */
  private Runnable timeOut(Waiter w, LockEngine e, Effects fx) {
    List<Waiter> ws = parked.get(w.lockId);
    if (ws == null || !ws.contains(w)) {
      return null;
    }
    Optional<LockView> l = e.lock(w.lockId);
    if (l.isEmpty() || l.get().state() == QueueState.GRANTED) {
      return null;
    }
    w.timedOut = true;
    e.cancel(null, w.lockId, fx);
    return null;
  }

  /**
   * The caller went away (deadline, cancel, disconnect): withdraw its request if nobody else waits.
   */
  Runnable callerGone(Waiter w, LockEngine e, Effects fx) {
    List<Waiter> ws = parked.get(w.lockId);
    if (ws == null || !ws.remove(w)) {
      return null;
    }
    cancelTimer(w);
    if (ws.isEmpty()) {
      parked.remove(w.lockId);
      Optional<LockView> l = e.lock(w.lockId);
      if (l.isEmpty()) {
        return null;
      }
      if (l.get().state() != QueueState.GRANTED) {
        e.cancel(null, w.lockId, fx);
      } else if (!w.conversion && !w.claimed) {
        // Granted by a batch still being written. (A conversion granted this way stays: its
        // holder still knows the lock, at its old mode. So does a lock a retry of the same
        // request was told it holds.)
        releaseUnclaimed(l.get(), e, fx);
      }
    }
    return null;
  }

  /**
   * A new lock was granted but its caller went away before hearing of it: give it back rather than
   * leave a lock that no process knows it holds.
   */
  static void releaseUnclaimed(LockView l, LockEngine e, Effects fx) {
    LOG.info(
        "[node={}] lock {} on {} was granted as its caller went away; releasing it",
        l.owner().node(),
        l.lockId(),
        l.resource());
    e.release(l.owner(), l.lockId(), null, fx);
  }

  /**
   * A retry of the request that made lock {@code lockId} is being told it holds the lock, while the
   * first call still waits for the grant's write: should that one go away, the lock is not
   * unclaimed. Engine thread only; the mark goes with the waiters when the grant is dispatched.
   */
  void claim(long lockId) {
    for (Waiter w : parked.getOrDefault(lockId, List.of())) {
      w.claimed = true;
    }
    unheardGrants.computeIfPresent(lockId, (id, claimed) -> true);
  }

  /** Lock {@code lockId} was granted at once; its answer waits for the write. Engine thread. */
  void grantAwaitsAnswer(long lockId) {
    unheardGrants.put(lockId, false);
  }

  /** The answer to the grant of {@code lockId} went out. Engine thread. */
  void grantHeard(long lockId) {
    unheardGrants.remove(lockId);
  }

  /**
   * The caller of lock {@code lockId}'s grant went away before its answer went out: gives the lock
   * back, unless the answer went out first or a retry was told of it. Before 2026-12-07 only a
   * waiter's grant was given back this way; a lock granted at once stayed with nobody knowing of
   * it, unless the client abandoned it (ours does; a client that only withdraws did not).
   */
  void grantUnheard(long lockId, LockEngine e, Effects fx) {
    Boolean claimed = unheardGrants.remove(lockId);
    if (claimed == null || claimed) {
      return;
    }
    e.lock(lockId)
        .filter(l -> l.state() == QueueState.GRANTED)
        .ifPresent(l -> releaseUnclaimed(l, e, fx));
  }

  private static void cancelTimer(Waiter w) {
    if (w.timer != null) {
      w.timer.cancel(false);
    }
  }

  // ---------------------------------------------------------------- sessions

  /**
   * Opens or resumes a session for {@code stream}; on a resume, {@code heldLockIds} are the
   * session's locks the client believes it holds, not persistent. Engine thread only.
   */
  Session openSession(
      Owner owner,
      String clientName,
      long resumeId,
      List<Long> heldLockIds,
      StreamObserver<SessionEvent> stream) {
    engine.requireMember(owner);
    Session s;
    if (resumeId != 0) {
      if (endedSessions.contains(resumeId)) {
        throw new DlmException(
            DlmException.Code.NOT_FOUND,
            "session " + resumeId + " has ended and its locks were released; open a new one");
      }
      // endedSessions is this leader's memory only: a session an earlier leader ended (its locks
      // released, perhaps granted to others since) looks here like one not resumed yet. What the
      // client holds tells them apart.
      for (long lockId : heldLockIds) {
        Optional<LockView> held = engine.lock(lockId);
        if (held.isPresent()
            && held.get().sessionId() == resumeId
            && !held.get().owner().equals(owner)) {
          // Checked here too: while the table loads, the session itself is not known yet.
          throw new DlmException(
              DlmException.Code.PERMISSION_DENIED,
              "session " + resumeId + " belongs to " + held.get().owner() + ", not " + owner);
        }
        if (held.filter(l -> l.sessionId() == resumeId).isEmpty()) {
          LOG.warn(
              "[node={}] session {} cannot be resumed: its lock {} is gone",
              owner.node(),
              resumeId,
              lockId);
          throw new DlmException(
              DlmException.Code.NOT_FOUND,
              "session "
                  + resumeId
                  + " has ended: its lock "
                  + lockId
                  + " was released; open a new one");
        }
      }
      s = sessions.get(resumeId);
      if (s != null && !s.owner.equals(owner)) {
        throw new DlmException(
            DlmException.Code.PERMISSION_DENIED,
            "session " + resumeId + " belongs to " + s.owner + ", not " + owner);
      }
      if (s == null) {
        s = new Session(resumeId, owner, clientName);
        sessions.put(resumeId, s);
      }
      if (s.stream != null && s.stream != stream) {
        // The old stream is dead but its end has not been seen yet; the new one replaces it.
        StreamObserver<SessionEvent> old = s.stream;
        s.stream = null;
        fail(old, Status.CANCELLED.withDescription("session resumed on another stream"));
      }
      if (s.graceTimer != null) {
        s.graceTimer.cancel(false);
        s.graceTimer = null;
      }
      s.verdict = null;
      LOG.info("[node={}] session {} resumed by {}", owner.node(), resumeId, clientName);
    } else {
      s = new Session(engine.nextId(), owner, clientName);
      sessions.put(s.id, s);
      LOG.debug("[node={}] session {} opened by {}", owner.node(), s.id, clientName);
    }
    if (s.stream != stream) {
      s.dropHeldBack(); // the open tells it whom its locks block now
    }
    s.stream = stream;
    return s;
  }

  /**
   * The session's stream broke without a CloseSession. If the node holds no lease, the process is
   * gone and its non-persistent locks go now. Otherwise the break is ambiguous (a dead process on a
   * live node, or a dead node): the locks wait while the node's lease has time to expire, then go
   * only if the node is still alive; a node that lost its lease keeps them frozen until it is
   * fenced and purged.
   */
  Runnable streamEnded(
      long sessionId, StreamObserver<SessionEvent> stream, LockEngine e, Effects fx) {
    Session s = sessions.get(sessionId);
    if (s == null || s.stream != stream) {
      return null; // already resumed on another stream, or already ended
    }
    s.stream = null;
    s.dropHeldBack(); // a resume tells it again whom its locks block now
    decideLater(s, Duration.ZERO, "its client went away", NOT_YET, ++s.breaks);
    return null;
  }

  /** No heartbeat seen yet for this decision. */
  private static final long NOT_YET = Long.MIN_VALUE;

  /**
   * Reads the node's lease heartbeat off the engine thread; after {@code abruptEndGrace}, reads it
   * again: a heartbeat written meanwhile proves the node alive, and the session ends, unless it is
   * the session bound to the lease (the agent's), whose process the heartbeat proves alive: that
   * one was cut off, and keeps its locks. Otherwise its locks stay frozen. Either way they are
   * looked at again each grace period (the node may have been only slow, or the lease may go).
   */
  private void decideLater(Session s, Duration delay, String why, long before, int breakNo) {
    timers.schedule(
        () -> {
          NodeLiveness.Lease lease;
          try {
            lease = liveness.lease(s.owner);
          } catch (RuntimeException e) {
            LOG.warn(
                "[node={}] cannot tell whether the node is alive ({}); asking again in {}",
                s.owner.node(),
                e.toString(),
                GrpcStatuses.format(abruptEndGrace));
            decideLater(s, abruptEndGrace, why, before, breakNo);
            return;
          }
          long hb = lease.heartbeat();
          NodeLiveness.Verdict v;
          if (hb == NodeLiveness.UNTRACKED) {
            v = NodeLiveness.Verdict.UNTRACKED;
          } else if (hb == NodeLiveness.NO_LEASE) {
            v = NodeLiveness.Verdict.GONE;
          } else if (before == NOT_YET) {
            LOG.info(
                "[node={}] session {} ({}) broke; its locks wait {} for a heartbeat of node {}",
                s.owner.node(),
                s.id,
                s.clientName,
                GrpcStatuses.format(abruptEndGrace),
                s.owner.node());
            decideLater(s, abruptEndGrace, why, hb, breakNo);
            return;
          } else if (hb <= before) {
            v = NodeLiveness.Verdict.GONE;
          } else {
            v =
                lease.boundSessionId() == s.id
                    ? NodeLiveness.Verdict.CUT_OFF
                    : NodeLiveness.Verdict.ALIVE;
          }
          submit(null, (e, fx) -> decided(s, v, hb, why, breakNo, e, fx));
        },
        delay.toNanos(),
        TimeUnit.NANOSECONDS);
  }

  private Runnable decided(
      Session s,
      NodeLiveness.Verdict v,
      long hb,
      String why,
      int breakNo,
      LockEngine e,
      Effects fx) {
    if (sessions.get(s.id) != s || s.stream != null || breakNo != s.breaks) {
      // Resumed meanwhile, or already ended; or resumed and broken again, which started its own
      // decision: without this, each break of a flapping connection added a chain of reads.
      return null;
    }
    if (v == NodeLiveness.Verdict.GONE
        && hb == NodeLiveness.NO_LEASE
        && e.sessionLocks(s.id).isEmpty()) {
      // Nothing to freeze for the fence, and no lease that a live process may still hold (the
      // session of a node that left, whose process exited without closing it): kept, it stayed
      // until the next leader change. A lease whose heartbeat stalled may yet prove its process
      // alive and cut off, whose session is kept.
      endSession(s, e, fx, why + "; it holds no locks");
      return null;
    }
    if (v == NodeLiveness.Verdict.GONE) {
      if (s.verdict != NodeLiveness.Verdict.GONE) {
        s.verdict = NodeLiveness.Verdict.GONE;
        LOG.warn(
            "[node={}] session {} ({}) ended and node {} shows no sign of life: its {} locks stay"
                + " frozen until the node is fenced",
            s.owner.node(),
            s.id,
            s.clientName,
            s.owner.node(),
            e.sessionLocks(s.id).size());
      }
      if (hb != NodeLiveness.NO_LEASE) {
        decideLater(s, abruptEndGrace, why, hb, breakNo); // the lease is there: maybe only slow
      }
      return null;
    }
    if (v == NodeLiveness.Verdict.CUT_OFF) {
      // The lease's holder runs this session and is alive: it lost its connection to us (a
      // partition between it and the dlm-servers, not ZooKeeper). Its locks guard work that may
      // still run there, so nobody else gets them until it resumes or closes the session, or the
      // lease goes (then the fence decides, as for any node that failed).
      if (s.verdict != NodeLiveness.Verdict.CUT_OFF) {
        s.verdict = NodeLiveness.Verdict.CUT_OFF;
        LOG.warn(
            "[node={}] session {} ({}) broke, but it is bound to node {}'s lease, which lives: the"
                + " process is alive and cut off from this server; its {} locks stay until it"
                + " resumes or closes the session, or the lease goes",
            s.owner.node(),
            s.id,
            s.clientName,
            s.owner.node(),
            e.sessionLocks(s.id).size());
      }
      decideLater(s, abruptEndGrace, why, hb, breakNo);
      return null;
    }
    endSession(s, e, fx, why);
    return null;
  }

  /**
   * After a purge of {@code owner}: its sessions still open end, and their clients hear why. Their
   * locks are gone, and a client that went on believing it held them (a {@code dlmctl lock} running
   * its command, an agent) would use what they guard without them; a purge of a host that still
   * runs comes from an operator's mistaken ack or a forced purge (found in review: the sessions
   * stayed open, unaware). Engine thread.
   */
  void endOpenSessionsOf(Owner owner, LockEngine e, Effects fx, String reason) {
    List<Session> open = new ArrayList<>();
    for (Session s : sessions.values()) {
      if (s.owner.equals(owner) && s.stream != null) {
        open.add(s);
      }
    }
    for (Session s : open) {
      StreamObserver<SessionEvent> stream = s.stream;
      endSession(s, e, fx, "its node was purged (" + reason + ")");
      try {
        stream.onError(
            Status.FAILED_PRECONDITION
                .withDescription(
                    "node "
                        + owner.node()
                        + " incarnation "
                        + owner.incarnation()
                        + " was purged ("
                        + reason
                        + "): its locks are gone")
                .asRuntimeException());
      } catch (RuntimeException gone) {
        LOG.debug("session {} stream already ended: {}", s.id, gone.toString());
      }
    }
  }

  /**
   * After a purge or leave of {@code owner}: its sessions whose streams are gone (those frozen
   * waiting for the fence, or for a liveness verdict) have nothing left to wait for. Without this
   * they stayed until the next leader change, one per session of every host that died.
   */
  void forgetSessionsOf(Owner owner) {
    int n = 0;
    for (java.util.Iterator<Session> it = sessions.values().iterator(); it.hasNext(); ) {
      Session s = it.next();
      if (s.owner.equals(owner) && s.stream == null) {
        it.remove();
        if (s.graceTimer != null) {
          s.graceTimer.cancel(false);
        }
        endedSessions.add(s.id);
        n++;
      }
    }
    if (n > 0) {
      LOG.info(
          "[node={}] forgot {} sessions of incarnation {}", owner.node(), n, owner.incarnation());
    }
  }

  /** Tests: the sessions frozen for the fence. */
  long frozenSessions() {
    return sessions.values().stream().filter(x -> x.verdict == NodeLiveness.Verdict.GONE).count();
  }

  /** Tests: the sessions this leader keeps, open or not. */
  int sessionCount() {
    return sessions.size();
  }

  /** CloseSession: the client ends its session on purpose; non-persistent locks go at once. */
  int closeSession(long sessionId, Owner owner, LockEngine e, Effects fx) {
    checkSession(sessionId, owner);
    Session s = sessions.get(sessionId);
    int n = e.sessionLocks(sessionId).size();
    endSession(s, e, fx, "closed by its client");
    return n;
  }

  private void endSession(Session s, LockEngine e, Effects fx, String why) {
    sessions.remove(s.id);
    endedSessions.add(s.id);
    if (endedSessions.size() > 100_000) {
      endedSessions.remove(endedSessions.iterator().next());
    }
    int n = e.endSession(s.id, fx);
    LOG.info(
        "[node={}] session {} ({}) ended: {}; released {} locks",
        s.owner.node(),
        s.id,
        s.clientName,
        why,
        n);
  }

  /** Checks that a request naming {@code sessionId} comes from that session's owner. */
  void checkSession(long sessionId, Owner owner) {
    if (sessionId == 0) {
      return;
    }
    Session s = sessions.get(sessionId);
    if (s == null) {
      throw new DlmException(
          DlmException.Code.FAILED_PRECONDITION,
          "session " + sessionId + " is not open; open (or resume) a session first");
    }
    if (!s.owner.equals(owner)) {
      throw new DlmException(
          DlmException.Code.PERMISSION_DENIED,
          "session " + sessionId + " belongs to " + s.owner + ", not " + owner);
    }
  }

  Map<Long, Session> sessions() {
    return sessions;
  }

  /**
   * Sends a blocking notification, or holds it back while the session's stream is not read (gRPC's
   * outbound buffer for it is full): without that, a client that stops reading (hung, or stopped in
   * a debugger) while others queue behind its locks made the server buffer an event per queued
   * request without bound.
   */
  private void send(Session s, SessionEvent event) {
    if (!s.heldBack.isEmpty() || !ready(s.stream)) {
      holdBack(s, event);
      return;
    }
    try {
      s.stream.onNext(event);
    } catch (RuntimeException e) {
      LOG.debug("session {} stream rejected an event: {}", s.id, e.toString());
    }
  }

  private static boolean ready(StreamObserver<SessionEvent> stream) {
    return !(stream instanceof ServerCallStreamObserver<SessionEvent> o) || o.isReady();
  }

  /**
   * Keeps one notification per lock: the latest, with the most restrictive blocked mode seen since
   * the last one sent (and its owner), as the Linux DLM drops a bast whose mode is no more
   * restrictive than one still queued (by the modes' order, NL to EX, as it does: CW and PR are not
   * comparable, and PR counts as the more restrictive). The holder needs to know how far to give
   * way, not how many asked. Entries of locks released meanwhile are dropped as the map grows (and
   * when sent), so a stuck client costs at most about one entry per lock it holds.
   */
  private void holdBack(Session s, SessionEvent event) {
    if (s.heldBack.isEmpty()) {
      LOG.debug("session {} is not reading its stream; holding back its notifications", s.id);
    }
    BlockingNotification b = event.getBlocking();
    SessionEvent before = s.heldBack.get(b.getLockId());
    if (before != null && before.getBlocking().getBlockedModeValue() >= b.getBlockedModeValue()) {
      BlockingNotification was = before.getBlocking();
      event =
          SessionEvent.newBuilder()
              .setBlocking(
                  b.toBuilder()
                      .setBlockedMode(was.getBlockedMode())
                      .setBlockedOwner(was.getBlockedOwner()))
              .build();
    }
    s.heldBack.put(b.getLockId(), event);
    if (s.heldBack.size() >= s.pruneAt) {
      s.heldBack.keySet().removeIf(id -> !heldBy(s, id));
      s.pruneAt = Math.max(PRUNE_HELD_BACK_AT, 2 * s.heldBack.size());
      if (s.heldBack.isEmpty()) {
        s.dropHeldBack(); // nothing left to send: no task for the ready handler
        return;
      }
    }
    if (!s.holdLogged && s.heldBack.size() >= LOG_HELD_BACK_AT) {
      s.holdLogged = true;
      LOG.info(
          "[node={}] session {} ({}) is not reading its stream; holding back its blocking"
              + " notifications, one per lock, until it does",
          s.owner.node(),
          s.id,
          s.clientName);
    }
    s.holding = true;
    // The stream may have drained since it was found full, and its ready handler, finding
    // nothing held back then, asked for nothing: look again, now that holding is set.
    if (ready(s.stream)) {
      flushHeldBack(s);
    }
  }

  private boolean heldBy(Session s, long lockId) {
    return engine.lock(lockId).filter(l -> l.sessionId() == s.id).isPresent();
  }

  /**
   * The session's stream drained: sends what was held back, as far as it goes now. Engine thread (a
   * task), since events are sent from there.
   */
  Runnable sessionStreamReady(long sessionId, StreamObserver<SessionEvent> stream) {
    Session s = sessions.get(sessionId);
    if (s != null && s.stream == stream && !s.heldBack.isEmpty()) {
      flushHeldBack(s);
    }
    return null;
  }

  private void flushHeldBack(Session s) {
    if (s.stream == null) {
      return; // orphaned: a resume tells it what it needs
    }
    var it = s.heldBack.entrySet().iterator();
    while (it.hasNext() && ready(s.stream)) {
      var e = it.next();
      it.remove();
      if (!heldBy(s, e.getKey())) {
        continue; // released meanwhile: nothing to give way any more
      }
      try {
        s.stream.onNext(e.getValue());
      } catch (RuntimeException ex) {
        LOG.debug("session {} stream rejected an event: {}", s.id, ex.toString());
      }
    }
    if (s.heldBack.isEmpty()) {
      if (s.holdLogged) {
        LOG.info(
            "[node={}] session {} ({}) reads its stream again; sent what was held back",
            s.owner.node(),
            s.id,
            s.clientName);
      }
      s.dropHeldBack();
    }
  }

  // ---------------------------------------------------------------- (re)loading

  /**
   * Takes over (a new epoch), reads the node records and the list of lockspaces, and starts a
   * {@link TableLoader} that reads the lockspaces in the background; returns without waiting for
   * it. Until a lockspace is in, requests that need it wait ({@link Needs}); the rest is served at
   * once. Runs before the engine thread starts, or on it (reload).
   */
  private void loadTable() throws Exception {
    stopLoader();
    long e = store.takeOver(serverId);
    loadStartedNanos = System.nanoTime();
    deferredFx = null; // its batch is failed with everything else in flight
    List<io.clusterlvm.dlm.engine.NodeView> nodes = store.loadNodes();
    List<String> lockspaces = store.listLockspaces();
    LockEngine fresh = new LockEngine(e, clock);
    fresh.restoreNodes(nodes);
    engine = fresh;
    epoch.set(e);
    publishCounts();
    // Sessions of the previous leader have no stream here. Their clients reconnect and resume;
    // those that do not come back within the grace period are taken as gone (tableLoaded).
    sessions.clear();
    unloaded = new java.util.HashSet<>(lockspaces);
    unreadable.clear();
    publishUnreadable();
    tableLoading = true;
    long load = ++loadNumber;
    LOG.info(
        "serving as leader with epoch {}: {} nodes; loading {} lockspaces in the background",
        e,
        nodes.size(),
        lockspaces.size());
    if (lockspaces.isEmpty()) {
      tableLoaded();
      return;
    }
    loader = new TableLoader(store, lockspaces, load, new LoadTarget());
    loader.start();
  }

  private void stopLoader() {
    if (loader != null) {
      loader.close();
      loader = null;
    }
  }

  /** Copies the engine's counts for ServerStatus, which reads them from other threads. */
  private void publishCounts() {
    lockCount = engine.lockCount();
    resourceCount = engine.resourceCount();
  }

  /** Thrown by a loader task when reading the table failed: reload. */
  private static final class LoadFailed extends RuntimeException {
    LoadFailed(Exception cause) {
      super(cause);
    }
  }

  /** Turns the loader's calls into engine-thread tasks; those of an abandoned load do nothing. */
  private final class LoadTarget implements TableLoader.Target {
    @Override
    public void records(long load, List<ResourceView> views) {
      loaderTask(
          load,
          e -> {
            try {
              views.forEach(e::restoreResource);
            } catch (RuntimeException x) {
              throw new LoadFailed(x); // the engine holds part of a resource: reload, backing off
            }
          });
    }

    @Override
    public void lockspaceLoaded(long load, LockStore.LockspaceRead read) {
      loaderTask(
          load,
          e -> {
            store.markLoaded(read);
            unloaded.remove(read.lockspace());
            // Sessions that resumed before this lockspace was read were not told whom their
            // persistent locks here block (their resume waits only for the locks their client
            // names); a holder that gives way only when told would keep its waiters waiting.
            for (BlockingEvent b : e.blockingByPersistentHolders(read.keys())) {
              sendBlocking(b);
            }
            if (unreadable.remove(read.lockspace()) != null) {
              LOG.info("lockspace {} was read after all; serving it", read.lockspace());
              publishUnreadable();
            }
            readyAfterLoad();
            failUnservable(); // what waited for this lockspace may now wait only for corrupt ones
          });
    }

    @Override
    public void lockspaceFailed(long load, String lockspace, Exception cause) {
      loaderTask(load, e -> LeaderCore.this.lockspaceFailed(lockspace, cause));
    }

    @Override
    public void tableLoaded(long load) {
      loaderTask(load, e -> LeaderCore.this.tableLoaded());
    }

    @Override
    public void failed(long load, Exception cause) {
      loaderTask(
          load,
          e -> {
            throw new LoadFailed(cause);
          });
    }

    private void loaderTask(long load, Consumer<LockEngine> work) {
      queue.add(
          new Submitted(
              null,
              (e, fx) -> {
                if (load == loadNumber) {
                  work.accept(e);
                }
                return null;
              },
              false,
              Needs.LOADER));
    }
  }

  /** Whether the table holds what a task needs; engine thread. */
  private boolean loaded(Needs needs) {
    if (unloaded == null) {
      return true;
    }
    return switch (needs.kind()) {
      case LOADER, NODES -> true;
      case LOCKSPACE -> !unloaded.contains(needs.lockspace());
      // A lock already read, in a lockspace read to the end (so its znodes are known to exist).
      case LOCK -> lockLoaded(needs.id());
      case RESUME ->
          !endedSessions.contains(needs.id())
              && needs.lockIds().stream().allMatch(this::lockLoaded);
      case TABLE -> false;
    };
  }

  /** Whether lock {@code lockId} is read, in a lockspace read to the end; engine thread. */
  private boolean lockLoaded(long lockId) {
    return engine.lock(lockId).map(l -> !unloaded.contains(l.resource().lockspace())).orElse(false);
  }

  /**
   * Moves the waiting tasks whose part of the table is now in to {@link #nowReady}, in order; a
   * node's task stays while an earlier one of the same node still waits.
   */
  private void readyAfterLoad() {
    Set<String> heldBack = new java.util.HashSet<>();
    for (java.util.Iterator<Submitted> it = waitingForLoad.iterator(); it.hasNext(); ) {
      Submitted w = it.next();
      String node = w.needs().node();
      if ((node == null || !heldBack.contains(node)) && loaded(w.needs())) {
        it.remove();
        nowReady.add(w);
        if (node != null) {
          waitingNodes.computeIfPresent(node, (k, n) -> n == 1 ? null : n - 1);
        }
      } else if (node != null) {
        heldBack.add(node);
      }
    }
  }

  /**
   * Reading {@code lockspace} failed and is tried again later ({@link TableLoader}); the rest of
   * the table is served meanwhile. A failure that may pass (a lost connection) changes nothing
   * here: requests wait for the next read (and a lockspace found corrupt before may have been
   * repaired since). A corrupt record does not pass until an operator repairs it, so until the
   * lockspace is read, a client's request that would wait for it fails, with UNAVAILABLE and a
   * description that names the znode ({@link #unreadableFor}). UNAVAILABLE, not DATA_LOSS: a client
   * retries it within its retry window, and must not take it for a refusal of an attempt that an
   * earlier leader may have applied (a leave, an acquire). Waiting instead, a release of a lock in
   * that lockspace would hold back every later request of its node for as long as the record stays
   * corrupt. The server's own tasks wait on.
   */
  private void lockspaceFailed(String lockspace, Exception cause) {
    if (!(cause instanceof LockStore.CorruptRecordException)) {
      if (unreadable.remove(lockspace) != null) {
        publishUnreadable();
      }
      return;
    }
    Status status =
        Status.UNAVAILABLE.withDescription(
            "lockspace "
                + lockspace
                + " cannot be read: "
                + cause.getMessage()
                + "; repair or delete that znode (the leader reads the lockspace again every few"
                + " seconds); "
                + LEADER_ANSWERED);
    unreadable.put(lockspace, new Unreadable(status, cause.getMessage()));
    publishUnreadable();
    failUnservable();
  }

  private void publishUnreadable() {
    unreadableNow =
        unreadable.entrySet().stream()
            .map(e -> e.getKey() + ": " + e.getValue().why() + "; repair or delete that znode")
            .sorted()
            .toList();
  }

  /**
   * Said by an UNAVAILABLE that the leader itself gives: a client retries it on the same server
   * rather than look for another leader (dlm-client's ServerList).
   */
  static final String LEADER_ANSWERED = "this dlm-server is the leader";

  /** Fails the waiting tasks that {@link #unreadableFor} says can't be served. Engine thread. */
  private void failUnservable() {
    boolean failed = false;
    for (java.util.Iterator<Submitted> it = waitingForLoad.iterator(); it.hasNext(); ) {
      Submitted w = it.next();
      Status refused = unreadableFor(w);
      if (refused != null) {
        it.remove();
        if (w.needs().node() != null) {
          waitingNodes.computeIfPresent(w.needs().node(), (k, n) -> n == 1 ? null : n - 1);
        }
        fail(w.caller(), refused);
        failed = true;
      }
    }
    if (failed) {
      readyAfterLoad(); // a node's later tasks no longer wait behind the failed ones
    }
  }

  /**
   * Why a client's task fails now rather than wait for the table, or null. While a lockspace holds
   * a corrupt record ({@link #lockspaceFailed}), the table cannot load to the end. A request in
   * that lockspace fails at once. A call on a lock not read yet (it may be in that lockspace, or
   * gone, which only the whole table would show), a resume whose locks are not all read, and a
   * request that needs the whole table fail once every lockspace not read yet is corrupt: before,
   * their lock may yet come in, and a node's release in a lockspace still being read must keep its
   * place before the node's later requests. A request in another lockspace still being read waits
   * for it. Engine thread.
   */
  private Status unreadableFor(Submitted s) {
    if (s.caller() == null || unreadable.isEmpty() || loaded(s.needs())) {
      return null;
    }
    Needs needs = s.needs();
    if (needs.kind() == Needs.Kind.LOCKSPACE) {
      Unreadable u = unreadable.get(needs.lockspace());
      return u == null ? null : u.status();
    }
    return unreadable.keySet().containsAll(unloaded)
        ? unreadable.values().iterator().next().status()
        : null;
  }

  /** The whole table is in: sessions nobody resumed yet become orphans with a grace period. */
  private void tableLoaded() {
    failedLoads = 0;
    unloaded = null;
    tableLoading = false;
    stopLoader();
    Set<Long> orphaned = engine.sessions();
    // An end of session whose write failed did not happen: its locks are back, so may it be.
    endedSessions.removeAll(orphaned);
    int waiting = 0;
    for (long id : orphaned) {
      Owner owner = engine.sessionOwner(id);
      Session resumed = sessions.get(id);
      if (resumed != null && resumed.owner.equals(owner)) {
        continue; // resumed by its owner while the table was loading
      }
      if (resumed != null) {
        // Resumed while the table was loading by a caller that is not the owner of its locks.
        LOG.warn(
            "session {} was resumed by {}, but its locks belong to {}; ending that stream",
            id,
            resumed.owner,
            owner);
        if (resumed.stream != null) {
          fail(
              resumed.stream,
              Status.PERMISSION_DENIED.withDescription("session " + id + " belongs to " + owner));
        }
      }
      Session s = new Session(id, owner, "(orphaned by restart)");
      s.graceTimer =
          timers.schedule(
              () -> submit(null, (eng, fx) -> orphanExpired(s, eng, fx)),
              sessionGrace.toNanos(),
              TimeUnit.NANOSECONDS);
      sessions.put(id, s);
      waiting++;
    }
    publishCounts();
    LOG.info(
        "loaded the lock table of epoch {}: {} nodes, {} resources, {} locks, {} sessions"
            + " awaiting resume, in {} ms",
        epoch.get(),
        engine.nodes().size(),
        resourceCount,
        lockCount,
        waiting,
        TimeUnit.NANOSECONDS.toMillis(System.nanoTime() - loadStartedNanos));
    readyAfterLoad();
  }

  private Runnable orphanExpired(Session s, LockEngine e, Effects fx) {
    if (sessions.get(s.id) == s && s.stream == null) {
      decideLater(
          s,
          Duration.ZERO,
          "not resumed within " + GrpcStatuses.format(sessionGrace),
          NOT_YET,
          ++s.breaks);
    }
    return null;
  }

  private void recover() throws InterruptedException {
    failAll(List.of(), Status.UNAVAILABLE.withDescription("lock table reloaded; retry"));
    if (failedLoads > 0) {
      Thread.sleep(Math.min(100L << Math.min(failedLoads - 1, 6), 5000));
    }
    long backoffMs = 100;
    while (state.get() == State.STARTED) {
      try {
        loadTable();
        return;
      } catch (InterruptedException e) {
        throw e;
      } catch (LockStore.NotLeaderException e) {
        // Lost the election meanwhile (e.g. the session expired while the write was failing):
        // reloading must not take the epoch from whoever leads now.
        LOG.error("stepping down: {}", e.getMessage());
        fatal.accept(e);
        throw new InterruptedException("lost leadership");
      } catch (Exception e) {
        LOG.warn(
            "reloading the lock table failed ({}); retrying in {} ms", e.toString(), backoffMs);
        Thread.sleep(backoffMs);
        backoffMs = Math.min(backoffMs * 2, 5000);
      }
    }
  }

  /** Fails the given replies and every parked waiter and open session stream. */
  private void failAll(List<Pending> replies, Status status) {
    for (Pending p : replies) {
      fail(p.caller(), status);
    }
    for (Submitted w : waitingForLoad) {
      fail(w.caller(), status);
    }
    for (Submitted w : nowReady) {
      fail(w.caller(), status);
    }
    waitingForLoad.clear();
    waitingNodes.clear();
    nowReady.clear();
    for (List<Waiter> ws : parked.values()) {
      for (Waiter w : ws) {
        cancelTimer(w);
        fail(w.caller, status);
      }
    }
    parked.clear();
    unheardGrants.clear();
    for (Session s : sessions.values()) {
      if (s.stream != null) {
        fail(s.stream, status);
        s.stream = null;
      }
      if (s.graceTimer != null) {
        s.graceTimer.cancel(false);
      }
    }
  }

  private void shutdownCleanly() {
    List<Submitted> left = new ArrayList<>();
    queue.drainTo(left);
    List<Pending> pending = new ArrayList<>();
    for (Applied a : inFlight) {
      pending.addAll(a.replies()); // not known to be durable: the clients retry elsewhere
    }
    inFlight.clear();
    for (Submitted s : left) {
      pending.add(new Pending(s.caller(), null));
    }
    failAll(pending, SHUTTING_DOWN);
  }

  // ---------------------------------------------------------------- replies

  static <T> void reply(StreamObserver<T> caller, T value) {
    try {
      caller.onNext(value);
      caller.onCompleted();
    } catch (RuntimeException e) {
      LOG.debug("could not answer a call (client gone?): {}", e.toString());
    }
  }

  static void fail(StreamObserver<?> caller, Status status) {
    if (caller == null) {
      return;
    }
    try {
      caller.onError(status.asRuntimeException(GrpcStatuses.trailers(status)));
    } catch (RuntimeException e) {
      LOG.debug("could not answer a call (client gone?): {}", e.toString());
    }
  }

  List<ResourceView> resources(String lockspace) {
    return engine.resources(lockspace);
  }
}
