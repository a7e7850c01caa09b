package io.clusterlvm.fence.domain;

import io.clusterlvm.dlm.client.DlmClient;
import io.clusterlvm.dlm.client.DlmClientException;
import io.clusterlvm.dlm.proto.PurgeResponse;
import io.clusterlvm.fence.agent.Backoff;
import io.clusterlvm.fence.agent.FenceAgentRunner;
import io.clusterlvm.fence.agent.FenceAttempt;
import io.clusterlvm.fence.agent.FenceResult;
import io.clusterlvm.fence.config.ClusterConfig;
import io.clusterlvm.fence.config.ClusterNode;
import io.clusterlvm.fence.config.FenceDaemonOptions;
import io.clusterlvm.fence.proto.FenceEvent;
import io.clusterlvm.fence.proto.FenceNodeRecord;
import io.clusterlvm.fence.proto.FenceState;
import io.clusterlvm.fence.proto.MemberRecord;
import io.grpc.Status;
import java.time.Duration;
import java.util.HashMap;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.Set;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.RejectedExecutionException;
import java.util.concurrent.ScheduledExecutorService;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicReference;
import java.util.function.Supplier;
import java.util.function.UnaryOperator;
import org.apache.curator.framework.recipes.cache.CuratorCache;
import org.apache.curator.framework.recipes.cache.CuratorCacheListener;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * The fence state machine, run by the one elected fencer:
 *
 * <pre>
 * MEMBER --lease gone--> FAILED --post_fail_delay--> FENCING --all devices of a method off,
 *                                                      then status OFF--> FENCED --> locks purged
 *                                                    FENCING --operator ack--> FENCED
 * </pre>
 *
 * Every transition is a compare-and-set on the node's record, so it survives any process restart
 * and a fencer that dies mid-fence leaves the node in FENCING for the next fencer to finish. A
 * FAILED or FENCING node's locks stay granted: nothing it held is handed on before FENCED.
 */
final class Fencer implements AutoCloseable {
  private static final Logger LOG = LoggerFactory.getLogger(Fencer.class);
  private static final Duration TICK = Duration.ofMillis(250);

  private final FenceStore store;
  private final DlmClient dlm;
  private final String self;
  private final Supplier<ClusterConfig> config;
  private final FenceAgentRunner runner;
  private final Backoff backoff;
  private final ScheduledExecutorService loop;
  private final ExecutorService agents;

  /**
   * Purges, one at a time: off the loop, since a purge waits for the lock service (its whole retry
   * window when that is down), and the loop must go on fencing other failed hosts meanwhile.
   */
  private final ExecutorService purger;

  /** Nodes whose purge is queued or running, or waits out a back-off; at most one each. */
  private final Set<String> purging = ConcurrentHashMap.newKeySet();

  /** Failed purges in a row, by node: they set the back-off before the next. */
  private final Map<String, Integer> purgeFailures = new ConcurrentHashMap<>();

  /** Between a failed purge and the next try: 250 ms, doubling, at most 10 s. */
  private static final Backoff PURGE_BACKOFF =
      new Backoff(Duration.ofMillis(250), Duration.ofSeconds(10), 2);

  /**
   * Fences ("node/incarnation") whose host this fencer is powering on again; at most one run each.
   */
  private final Set<String> poweringOn = ConcurrentHashMap.newKeySet();

  private static String fenceOf(String node, long incarnation) {
    return node + "/" + incarnation;
  }

  private final CuratorCache cache;
  private final Set<String> running = ConcurrentHashMap.newKeySet();

  /** Nodes whose unreadable lease was logged (each pass would repeat it); the loop thread. */
  private final Set<String> warnedUnreadableLease = new HashSet<>();

  private final Set<String> warnedNoMethod = ConcurrentHashMap.newKeySet();

  /**
   * When this fencer first saw each timer of the records ({@link #waited}), by {@link
   * System#nanoTime()}; the loop thread. Timers no pass looked at are dropped after it.
   */
  private final Map<String, Long> timersSeen = new HashMap<>();

  private final Set<String> timersLookedAt = new HashSet<>();
  private final AtomicBoolean scheduled = new AtomicBoolean();
  private final long joinedNanos;
  private volatile boolean closed;

  /**
   * @param joinedNanos when this host joined the fence domain ({@link System#nanoTime()}):
   *     post_join_delay counts from there, not from when this host became the fencer. A long-time
   *     member that takes over from a dead fencer must not wait post_join_delay to fence it.
   */
  Fencer(
      FenceStore store,
      DlmClient dlm,
      String self,
      Supplier<ClusterConfig> config,
      FenceAgentRunner runner,
      Backoff backoff,
      long joinedNanos) {
    this.joinedNanos = joinedNanos;
    this.store = store;
    this.dlm = dlm;
    this.self = self;
    this.config = config;
    this.runner = runner;
    this.backoff = backoff;
    this.loop = Executors.newSingleThreadScheduledExecutor(r -> named(r, "fencer"));
    this.agents = Executors.newCachedThreadPool(r -> named(r, "fence-runner"));
    this.purger = Executors.newSingleThreadExecutor(r -> named(r, "fence-purger"));
    this.cache = CuratorCache.build(store.curator(), store.members());
  }

  private static Thread named(Runnable r, String name) {
    Thread t = new Thread(r, name);
    t.setDaemon(true);
    t.setUncaughtExceptionHandler((x, e) -> LOG.error("uncaught in {}", x.getName(), e));
    return t;
  }

  void start() {
    LOG.info("this host ({}) is the fencer now", self);
    // A lease that vanishes is seen at once; the tick covers timers (post_fail_delay, back-off).
    cache
        .listenable()
        .addListener(CuratorCacheListener.builder().forAll((t, o, n) -> poke()).build());
    cache.start();
    loop.scheduleWithFixedDelay(this::evaluateSafely, 0, TICK.toMillis(), TimeUnit.MILLISECONDS);
  }

  private void poke() {
    if (!closed && scheduled.compareAndSet(false, true)) {
      loop.execute(
          () -> {
            scheduled.set(false);
            evaluateSafely();
          });
    }
  }

  private void evaluateSafely() {
    if (closed) {
      return;
    }
    try {
      evaluate();
    } catch (Exception e) {
      LOG.warn("fencer pass failed: {}", e.toString());
    } catch (Error e) {
      // Thrown out of the scheduled task, it would end the schedule for good while this host
      // keeps the fencer's role: failed nodes would wait for a fence nobody runs. The next tick
      // tries again.
      LOG.error("fencer pass failed", e);
    }
  }

  private FenceDaemonOptions daemonOptions() {
    ClusterConfig c = config.get();
    return c == null ? FenceDaemonOptions.DEFAULTS : c.fenceDaemon();
  }

  private void evaluate() throws Exception {
    // Records first, then leases: a join writes both at once, so a lease read after its record
    // is never older than it (reading the other way round could fail a node that just joined).
    Map<String, Versioned<FenceNodeRecord>> records = new java.util.TreeMap<>();
    for (String n : store.nodeNames()) {
      try {
        store.nodeRecord(n).ifPresent(v -> records.put(n, v));
      } catch (com.google.protobuf.InvalidProtocolBufferException e) {
        // One record nobody can read must not keep every other node from being fenced.
        LOG.error("[node={}] its fence record does not parse ({}); skipping it", n, e.toString());
      }
    }
    FenceStore.Leases all = store.leases();
    Map<String, MemberRecord> leases = all.readable();
    long now = System.currentTimeMillis();
    FenceDaemonOptions opts = daemonOptions();
    for (Map.Entry<String, Versioned<FenceNodeRecord>> e : records.entrySet()) {
      String node = e.getKey();
      String unreadableLease = all.unreadable().get(node);
      if (unreadableLease != null) {
        // Its holder's session lives, but whose incarnation it holds is unknown: the node is
        // neither failed nor fenced until the lease can be read (or goes).
        if (warnedUnreadableLease.add(node)) {
          LOG.error(
              "[node={}] its lease does not parse ({}); leaving the node as it is until it does"
                  + " or the lease goes",
              node,
              unreadableLease);
        }
        continue;
      }
      warnedUnreadableLease.remove(node);
      try {
        evaluate(node, e.getValue(), leases.get(node), now, opts);
      } catch (RuntimeException failed) {
        // A bug or a bad value in one node's record or config (e.g. a delay too large to add):
        // the nodes after it are still evaluated.
        LOG.error("[node={}] fencer pass failed for this node", node, failed);
      }
    }
    timersSeen.keySet().retainAll(timersLookedAt);
    timersLookedAt.clear();
  }

  /**
   * Whether {@code wait} is over for the timer {@code key} of a record, due at {@code
   * dueEpochMillis} by the wall clock of the fencer that wrote it, which may be another host's, or
   * this host's before its clock was stepped. Due by either clock: that time, or {@code wait} on
   * this fencer's own monotonic clock since it first saw the timer. A fencer whose clock ran an
   * hour ahead would otherwise leave a node's locks frozen for an hour after it died; a clock
   * behind only shortens a wait, which fences sooner, never unsafely.
   */
  private boolean waited(String key, long dueEpochMillis, Duration wait, long now) {
    timersLookedAt.add(key);
    long seen = timersSeen.computeIfAbsent(key, k -> System.nanoTime());
    return now >= dueEpochMillis || System.nanoTime() - seen >= wait.toNanos();
  }

  private void evaluate(
      String node,
      Versioned<FenceNodeRecord> versioned,
      MemberRecord lease,
      long now,
      FenceDaemonOptions opts)
      throws Exception {
    FenceNodeRecord r = versioned.value();
    int version = versioned.version();
    switch (r.getState()) {
      case MEMBER -> {
        // A requested fence goes first: a node whose agent died after the request (its lease
        // gone, its record still MEMBER) is fenced as asked, at once, not taken for failed.
        if (r.getFenceRequested()) {
          fenceAsRequested(node, version, r, now);
        } else if (lease == null || lease.getIncarnation() != r.getIncarnation()) {
          transition(
              node,
              version,
              r.toBuilder()
                  .setState(FenceState.FAILED)
                  .setSinceEpochMillis(now)
                  .setLastResult("lost its lease (ZooKeeper session ended without a clean leave)")
                  .build(),
              "failed",
              "its locks are frozen until it is fenced");
        }
      }
      case FAILED -> {
        boolean delayOver =
            waited(
                "failed/" + node + "/" + r.getIncarnation() + "/" + r.getSinceEpochMillis(),
                r.getSinceEpochMillis() + opts.postFailDelay().toMillis(),
                opts.postFailDelay(),
                now);
        boolean joinDelayOver = System.nanoTime() - joinedNanos >= opts.postJoinDelay().toNanos();
        if (r.getFenceRequested()) {
          // An operator asked for it (dlmctl fence): no delay to wait for.
          fenceAsRequested(node, version, r, now);
        } else if (delayOver && joinDelayOver) {
          transition(
              node,
              version,
              toFencing(r, now).build(),
              "fencing",
              "post_fail_delay " + opts.postFailDelay().toSeconds() + "s passed");
        }
      }
      case FENCING -> fencing(node, version, r, now);
      case FENCED -> {
        if (r.getLocksPurged()) {
          purgeFailures.remove(node); // purged by someone else (a rejoin) after ours failed
        }
        if (!r.getLocksPurged() && purging.add(node)) {
          try {
            purger.execute(() -> purgeSafely(node, version, r));
          } catch (RejectedExecutionException closing) {
            purging.remove(node); // the next fencer, or the node's rejoin, purges
          }
        }
        if (r.getPowerOnPending() && poweringOn.add(fenceOf(node, r.getIncarnation()))) {
          // Fenced by a fencer that stopped before it powered the host on again.
          ClusterConfig c = config.get();
          Optional<ClusterNode> cn = c == null ? Optional.empty() : c.node(node);
          if (cn.isEmpty()) {
            poweringOn.remove(fenceOf(node, r.getIncarnation()));
            return; // not in the config (yet): the next pass asks again
          }
          LOG.warn(
              "[node={}] its fence by method {} left the power-on undone (the fencer that fenced"
                  + " it stopped); powering it on now",
              node,
              r.getMethod());
          startPowerOn(node, r.getIncarnation(), cn.get(), r.getMethod());
        }
      }
      default -> {}
    }
  }

  /** An operator's fence request (dlmctl fence) moves the node to FENCING, with no delay. */
  private void fenceAsRequested(String node, int version, FenceNodeRecord r, long now)
      throws Exception {
    transition(
        node,
        version,
        toFencing(r, now).setLastResult("fence requested by " + r.getRequestedBy()).build(),
        "fencing",
        "fence requested by " + r.getRequestedBy());
  }

  /** {@code r} entering FENCING at {@code now}: agents may run at once, from the first attempt. */
  static FenceNodeRecord.Builder toFencing(FenceNodeRecord r, long now) {
    return r.toBuilder()
        .setState(FenceState.FENCING)
        .setSinceEpochMillis(now)
        .setAttempts(0)
        .setNextAttemptEpochMillis(now);
  }

  private void fencing(String node, int version, FenceNodeRecord r, long now) throws Exception {
    if (running.contains(node)
        || !waited(
            "retry/" + node + "/" + r.getIncarnation() + "/" + r.getAttempts(),
            r.getNextAttemptEpochMillis(),
            r.getAttempts() == 0 ? Duration.ZERO : backoff.delayAfter(r.getAttempts()),
            now)) {
      return;
    }
    ClusterConfig c = config.get();
    Optional<ClusterNode> cn = c == null ? Optional.empty() : c.node(node);
    if (cn.isEmpty() || !cn.get().hasFenceMethod()) {
      String why =
          cn.isEmpty()
              ? "node is not in the active cluster.conf"
              : "no fence method configured for this node";
      if (!r.getLastResult().startsWith(why)) {
        store.compareAndSet(
            node,
            version,
            r.toBuilder().setLastResult(why + ": waiting for 'dlmctl ack " + node + "'").build());
      }
      if (warnedNoMethod.add(node)) {
        LOG.error(
            "[node={}] FENCING cannot proceed: {}. Its locks stay frozen until an operator"
                + " confirms it is off with 'dlmctl ack {}', or it rejoins.",
            node,
            why,
            node);
      }
      return;
    }
    FenceNodeRecord claimed =
        r.toBuilder()
            .setMethod(cn.get().methods().get(0).name())
            // Keep the last failure in view while the retry runs: it is what the operator needs.
            .setLastResult(
                "running fence agents (attempt "
                    + (r.getAttempts() + 1)
                    + ")"
                    + (r.getAttempts() > 0 ? "; last: " + lastFailure(r.getLastResult()) : ""))
            .build();
    running.add(node);
    try {
      if (!store.compareAndSet(node, version, claimed)) {
        running.remove(node);
        return;
      }
      int claimedVersion = version + 1;
      agents.execute(() -> runAgents(node, claimedVersion, claimed, cn.get()));
    } catch (Exception | Error e) {
      running.remove(node); // or this fencer would never fence the node again
      throw e;
    }
  }

  private void runAgents(String node, int version, FenceNodeRecord r, ClusterNode cn) {
    try {
      LOG.warn(
          "[node={}] fencing incarnation {} (attempt {})",
          node,
          r.getIncarnation(),
          r.getAttempts() + 1);
      AtomicReference<String> supersededBy = new AtomicReference<>();
      FenceResult result =
          runner.fence(cn, () -> stillFencing(node, r.getIncarnation(), supersededBy));
      recordAttempts(node, r.getIncarnation(), result.attempts());
      long now = System.currentTimeMillis();
      if (result.outcome() == FenceResult.Outcome.SUPERSEDED) {
        String why = supersededBy.get();
        if (why == null) {
          return; // interrupted: this fencer is closing, and the next one fences
        }
        // Nothing to write to the record: whoever moved it on owns it now.
        store.append(
            event(
                node,
                r.getIncarnation(),
                "superseded",
                "SUPERSEDED",
                "fence of incarnation "
                    + r.getIncarnation()
                    + " stopped before its next method: "
                    + why));
        LOG.warn("[node={}] fence of incarnation {} stopped: {}", node, r.getIncarnation(), why);
      } else if (result.fenced()) {
        // The purge itself is queued by the fencer loop (poked in finally) on the one purger
        // thread, never run here: two threads purging at once would both call the lock service
        // and race to record the outcome.
        String method = result.method().orElse("");
        boolean powersOn = cn.method(method).map(m -> !m.onDevices().isEmpty()).orElse(false);
        if (powersOn) {
          // Run below, after the history event; not by the loop meanwhile.
          poweringOn.add(fenceOf(node, r.getIncarnation()));
        }
        Versioned<FenceNodeRecord> written;
        try {
          written =
              writeResult(
                  node,
                  version,
                  r,
                  current ->
                      current.toBuilder()
                          .setState(FenceState.FENCED)
                          .setPowerOnPending(powersOn)
                          .setSinceEpochMillis(now)
                          .setMethod(result.method().orElse(""))
                          .setHow("agent")
                          .setLocksPurged(false)
                          .setFenceRequested(false)
                          .setLastResult(
                              "fenced by method " + result.method().orElse("?") + "; status OFF")
                          .build());
        } catch (Exception writeFailed) {
          // If the record says FENCED after all, the loop powers it on.
          poweringOn.remove(fenceOf(node, r.getIncarnation()));
          throw writeFailed;
        }
        if (written != null) {
          try {
            transitioned(
                node,
                written.value(),
                "fenced",
                "method " + result.method().orElse("?") + " confirmed power OFF");
          } catch (Exception historyFailed) {
            // The record says FENCED; the power-on below must not depend on the event.
            LOG.warn(
                "[node={}] fenced; its history event failed: {}", node, historyFailed.toString());
          }
          // After the event, so the history tells it in order. On a thread of its own: the
          // purge (poked by transitioned and below) must not wait for the BMC.
          if (powersOn) {
            startPowerOn(node, r.getIncarnation(), cn, method);
          }
        } else {
          poweringOn.remove(fenceOf(node, r.getIncarnation()));
        }
      } else {
        int attempts = r.getAttempts() + 1;
        Duration wait = backoff.delayAfter(attempts);
        String summary = summarize(result);
        LOG.error(
            "[node={}] FENCING FAILED (attempt {}): {}. Its locks stay frozen; retrying in"
                + " {} s. An operator who knows the node is off can run 'dlmctl ack {}'.",
            node,
            attempts,
            summary,
            wait.toSeconds(),
            node);
        writeResult(
            node,
            version,
            r,
            current ->
                current.toBuilder()
                    .setAttempts(attempts)
                    .setNextAttemptEpochMillis(now + wait.toMillis())
                    .setLastResult("attempt " + attempts + " failed: " + summary)
                    .build());
      }
    } catch (InterruptedException e) {
      Thread.currentThread().interrupt();
    } catch (Exception e) {
      LOG.error("[node={}] fence run failed: {}", node, e.toString());
    } finally {
      running.remove(node);
      poke();
    }
  }

  /**
   * Powers a fenced host on again where its devices ask for it (action="reboot"), only once the
   * record says FENCED: nothing of the old incarnation runs any more, and the host boots as a new
   * one, which settles the old incarnation's locks if the fencer has not yet.
   */
  private void startPowerOn(String node, long incarnation, ClusterNode cn, String method) {
    try {
      agents.execute(() -> powerOnAgain(node, incarnation, cn, method));
    } catch (RejectedExecutionException closing) {
      poweringOn.remove(fenceOf(node, incarnation));
      LOG.warn(
          "[node={}] fenced, but this fencer is closing: the next fencer powers it on again", node);
    }
  }

  /**
   * Runs the pending power-on of {@code node}'s fence of {@code incarnation}, if the record still
   * asks for it (read afresh: a pass of the loop may have seen it before the last run cleared it),
   * then clears the request, whatever the outcome: a failure is the operator's to see. Not when
   * this fencer closes meanwhile: the next one runs it.
   */
  private void powerOnAgain(String node, long incarnation, ClusterNode cn, String method) {
    boolean ran = false;
    try {
      Optional<Versioned<FenceNodeRecord>> now = store.nodeRecord(node);
      if (now.isEmpty() || !stillPending(now.get().value(), incarnation)) {
        return;
      }
      List<FenceAttempt> on = runner.powerOn(cn, method);
      ran = true;
      if (on.isEmpty()) {
        return;
      }
      recordAttempts(node, incarnation, on);
      if (on.stream().allMatch(a -> a.outcome() == FenceAttempt.Outcome.SUCCESS)) {
        LOG.info("[node={}] powered on again after the fence (action=reboot)", node);
      } else {
        LOG.error(
            "[node={}] fenced, but powering it on again failed (action=reboot); it stays off"
                + " until an operator powers it on: {}",
            node,
            on);
      }
    } catch (InterruptedException e) {
      LOG.warn(
          "[node={}] fenced, but this fencer closed while powering it on again; the next fencer"
              + " powers it on",
          node);
      Thread.currentThread().interrupt();
    } catch (Exception e) {
      // If the agent ran (the history write failed after it), ran is set and the request is
      // cleared; if it failed before (reading the record), the request stays for the next pass.
      LOG.error("[node={}] powering on after the fence failed: {}", node, e.toString());
    } finally {
      if (ran) {
        clearPowerOnPending(node, incarnation);
      }
      // After the clear: the loop must not see it pending and not ours.
      poweringOn.remove(fenceOf(node, incarnation));
    }
  }

  private static boolean stillPending(FenceNodeRecord r, long incarnation) {
    return r.getState() == FenceState.FENCED
        && r.getIncarnation() == incarnation
        && r.getPowerOnPending();
  }

  /** Takes the power-on request off the record of the fence of {@code incarnation}, if still on. */
  private void clearPowerOnPending(String node, long incarnation) {
    try {
      for (int i = 0; i < 10; i++) { // a purge may write the record meanwhile
        Optional<Versioned<FenceNodeRecord>> v = store.nodeRecord(node);
        if (v.isEmpty() || !stillPending(v.get().value(), incarnation)) {
          return;
        }
        FenceNodeRecord cleared = v.get().value().toBuilder().setPowerOnPending(false).build();
        if (store.compareAndSet(node, v.get().version(), cleared)) {
          return;
        }
      }
      LOG.warn("[node={}] could not record that it was powered on again; a fencer may retry", node);
    } catch (Exception e) {
      LOG.warn("[node={}] could not record that it was powered on again: {}", node, e.toString());
    }
  }

  private void recordAttempts(String node, long incarnation, List<FenceAttempt> attempts)
      throws Exception {
    for (FenceAttempt a : attempts) {
      store.append(
          FenceEvent.newBuilder()
              .setTimeEpochMillis(System.currentTimeMillis())
              .setNode(node)
              .setIncarnation(incarnation)
              .setEvent("agent")
              .setMethod(a.method())
              .setDevice(a.device())
              .setAction(a.action().name().toLowerCase(java.util.Locale.ROOT))
              .setOutcome(a.outcome().name())
              .setMessage(a.message())
              .setActor(self)
              .setDurationMillis(a.duration().toMillis())
              .build());
    }
  }

  /**
   * Whether {@code node}'s record still asks for the fence of {@code incarnation}; if not, says why
   * in {@code why}. A record that cannot be read counts as yes: the fence goes on as it did before
   * this check, since a fence that stopped at every ZooKeeper hiccup would leave the node's locks
   * frozen longer, and a rejoin needs ZooKeeper too. An interrupt (this fencer is closing) is a no,
   * with no reason given.
   */
  private boolean stillFencing(String node, long incarnation, AtomicReference<String> why) {
    try {
      Optional<Versioned<FenceNodeRecord>> v = store.nodeRecord(node);
      if (v.isEmpty()) {
        why.set("its fence record is gone");
        return false;
      }
      FenceNodeRecord now = v.get().value();
      if (now.getState() == FenceState.FENCING && now.getIncarnation() == incarnation) {
        return true;
      }
      why.set(
          "the record is now "
              + now.getState()
              + " in incarnation "
              + now.getIncarnation()
              + (now.getState() == FenceState.FENCED ? " (" + now.getHow() + ")" : ""));
      return false;
    } catch (InterruptedException e) {
      Thread.currentThread().interrupt();
      return false;
    } catch (Exception e) {
      LOG.warn(
          "[node={}] could not read its fence record before the next method ({}); fencing on",
          node,
          e.toString());
      return true;
    }
  }

  /** The failure part of a last_result, without an earlier "running ...; last: " prefix. */
  private static String lastFailure(String lastResult) {
    int i = lastResult.lastIndexOf("; last: ");
    return i < 0 ? lastResult : lastResult.substring(i + "; last: ".length());
  }

  private static String summarize(FenceResult result) {
    if (result.attempts().isEmpty()) {
      return result.outcome().name();
    }
    FenceAttempt last = result.attempts().get(result.attempts().size() - 1);
    return "method "
        + last.method()
        + " device "
        + last.device()
        + " "
        + last.action()
        + ": "
        + last.outcome()
        + (last.message().isEmpty() ? "" : " (" + last.message() + ")");
  }

  private void purgeSafely(String node, int version, FenceNodeRecord r) {
    boolean done = false;
    try {
      done = purge(node, version, r);
    } catch (InterruptedException e) {
      Thread.currentThread().interrupt();
    } catch (Exception e) {
      LOG.warn(
          "[node={}] purge of incarnation {} failed ({}); will retry",
          node,
          r.getIncarnation(),
          e.toString());
    } finally {
      if (done) {
        purgeFailures.remove(node);
        purging.remove(node);
      } else {
        // Asked again after a back-off, not at every tick of the loop: a purge that fails at once
        // (the lock service refusing, ZooKeeper down) would otherwise log four times a second.
        Duration wait = PURGE_BACKOFF.delayAfter(purgeFailures.merge(node, 1, Integer::sum));
        try {
          loop.schedule(() -> purging.remove(node), wait.toNanos(), TimeUnit.NANOSECONDS);
        } catch (RejectedExecutionException closing) {
          purging.remove(node);
        }
      }
    }
  }

  /**
   * FENCED: the node is off; now, and only now, its locks go to whoever waits for them. Whether the
   * purge is done (by this call or another).
   */
  private boolean purge(String node, int version, FenceNodeRecord r) throws Exception {
    Purged purged;
    try {
      purged = purgeLocks(dlm, store, node, version, r, "fenced (" + r.getHow() + ")", self);
    } catch (DlmClientException e) {
      LOG.warn(
          "[node={}] purge of incarnation {} failed ({}); will retry",
          node,
          r.getIncarnation(),
          e.getMessage());
      return false;
    }
    if (purged.marked()) {
      LOG.warn("[node={}] fenced ({}); {}", node, r.getHow(), purged.outcome());
    }
    return true;
  }

  /**
   * Ends a fence: drops every lock of a FENCED record's incarnation in the lock service, then marks
   * the record purged ({@link FenceStore#markPurged}). The fencer and a node that rejoins both end
   * a fence this way, possibly at once. A node the lock service never knew (NOT_FOUND) holds
   * nothing.
   *
   * @return what the incarnation's locks came to, for the log, and whether this call marked the
   *     record (and wrote the history's "purged" event)
   * @throws DlmClientException the lock service did not purge
   */
  static Purged purgeLocks(
      DlmClient dlm,
      FenceStore store,
      String node,
      int version,
      FenceNodeRecord fenced,
      String reason,
      String actor)
      throws Exception {
    PurgeResponse response;
    try {
      response = dlm.purge(node, fenced.getIncarnation(), reason);
    } catch (DlmClientException e) {
      if (e.code() != Status.Code.NOT_FOUND) {
        throw e;
      }
      response = PurgeResponse.getDefaultInstance();
    }
    boolean marked = store.markPurged(node, version, fenced, response, actor);
    return new Purged(FenceStore.purgeOutcome(fenced.getIncarnation(), response), marked);
  }

  /** What {@link #purgeLocks} did. */
  record Purged(String outcome, boolean marked) {}

  /**
   * Writes a fence run's result ({@code change} of the record) onto the record as it is now, as
   * long as that is still the FENCING of the incarnation the run fenced; returns what was written,
   * or null. The record may have been written since the run was claimed (an operator's dlmctl fence
   * of a node being fenced): a single compare-and-set against the claimed version dropped the
   * result, and the agents ran again, at once after a failure (found in review).
   */
  private Versioned<FenceNodeRecord> writeResult(
      String node, int version, FenceNodeRecord claimed, UnaryOperator<FenceNodeRecord> change)
      throws Exception {
    Versioned<FenceNodeRecord> at = new Versioned<>(claimed, version);
    while (true) {
      FenceNodeRecord next = change.apply(at.value());
      if (store.compareAndSet(node, at.version(), next)) {
        return new Versioned<>(next, at.version() + 1);
      }
      Optional<Versioned<FenceNodeRecord>> now = store.nodeRecord(node);
      if (now.isEmpty()
          || now.get().value().getState() != FenceState.FENCING
          || now.get().value().getIncarnation() != claimed.getIncarnation()) {
        return null; // moved on (acknowledged, rejoined): whoever moved it owns it now
      }
      at = now.get();
    }
  }

  private boolean transition(
      String node, int version, FenceNodeRecord next, String what, String message)
      throws Exception {
    if (!store.compareAndSet(node, version, next)) {
      return false;
    }
    transitioned(node, next, what, message);
    return true;
  }

  private void transitioned(String node, FenceNodeRecord next, String what, String message)
      throws Exception {
    // The next step (FAILED -> FENCING with post_fail_delay 0, FENCING -> agents, FENCED ->
    // purge) may be due now: don't leave it for the next tick.
    poke();
    warnedNoMethod.remove(node);
    store.append(event(node, next.getIncarnation(), what, next.getState().name(), message));
    LOG.warn("[node={}] {} -> {}: {}", node, what, next.getState(), message);
  }

  private FenceEvent event(String node, long inc, String what, String outcome, String message) {
    return FenceStore.event(node, inc, what, outcome, message, self);
  }

  @Override
  public void close() {
    closed = true;
    cache.close();
    loop.shutdownNow();
    agents.shutdownNow(); // interrupts agent runs; the node stays FENCING for the next fencer
    purger.shutdownNow(); // a purge cut short is done by the next fencer or the node's rejoin
  }
}
