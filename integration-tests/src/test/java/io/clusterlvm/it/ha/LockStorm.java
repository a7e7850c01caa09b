package io.clusterlvm.it.ha;

import static org.assertj.core.api.Assertions.assertThat;
import static org.awaitility.Awaitility.await;

import io.clusterlvm.dlm.client.DlmClient;
import io.clusterlvm.dlm.client.DlmClientException;
import io.clusterlvm.dlm.client.DlmSession;
import io.clusterlvm.dlm.client.Lock;
import io.clusterlvm.dlm.client.LockMode;
import io.clusterlvm.dlm.client.LockOptions;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Queue;
import java.util.Random;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ConcurrentLinkedQueue;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;
import java.util.concurrent.atomic.AtomicLong;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * Several lock clients (each its own {@link DlmClient}, node and session, as separate processes on
 * separate nodes would be) taking and releasing EX and PR locks on a few contended resources, some
 * NOQUEUE, some with a timeout, recording everything in a {@link LockHistory}.
 *
 * <p>A holder reads the value block once while holding (a round trip to the leader, so holding
 * lasts long enough for an overlap to be seen), and an EX holder writes the counter it found plus
 * one on release. A keeper node holds a persistent NL lock on every resource for the whole storm,
 * so the resources, and with them the value blocks, outlive moments with no other lock.
 */
final class LockStorm implements AutoCloseable {
  private static final Logger LOG = LoggerFactory.getLogger(LockStorm.class);

  record Options(
      int clients,
      int threadsPerClient,
      String lockspace,
      List<String> resources,
      double exShare,
      double noqueueShare,
      double timeoutShare,
      Duration waitTimeout,
      long seed) {

    static Options standard(long seed) {
      return new Options(
          6,
          2,
          "storm",
          List.of("r0", "r1", "r2", "r3"),
          0.5,
          0.2,
          0.1,
          Duration.ofSeconds(2),
          seed);
    }
  }

  private final Options options;
  private final LockHistory history = new LockHistory();
  private final Queue<CompletableFuture<Void>> asyncReleases = new ConcurrentLinkedQueue<>();
  private final List<DlmClient> clients = new ArrayList<>();
  private final List<DlmSession> sessions = new ArrayList<>();
  private final List<Thread> workers = new ArrayList<>();
  private final Map<String, AtomicLong> grantsByClient = new LinkedHashMap<>();
  private final DlmClient keeperClient;
  private DlmSession keeper;
  private final List<Lock> keeperLocks = new ArrayList<>();
  private volatile boolean stopping;

  private LockStorm(String targets, Options options) {
    this.options = options;
    keeperClient = DlmClient.connect(targets);
    try {
      keeper = session(keeperClient, "keeper");
      for (String r : options.resources()) {
        keeperLocks.add(
            keeper.lock(options.lockspace(), r, LockMode.NL, LockOptions.DEFAULT.withPersistent()));
      }
      for (int i = 0; i < options.clients(); i++) {
        DlmClient c = DlmClient.connect(targets);
        clients.add(c);
        sessions.add(session(c, "node" + i));
      }
    } catch (RuntimeException e) {
      close();
      throw e;
    }
  }

  private static DlmSession session(DlmClient c, String node) {
    long inc = c.join(node, "boot-" + node);
    return c.openSession(node, inc, "storm");
  }

  /** Joins the nodes, opens the sessions, takes the keeper locks and starts the workers. */
  static LockStorm start(String targets, Options options) {
    LockStorm s = new LockStorm(targets, options);
    LOG.info("storm with seed {}: {}", options.seed(), options);
    for (int i = 0; i < options.clients(); i++) {
      String client = "node" + i;
      s.grantsByClient.put(client, new AtomicLong());
      for (int t = 0; t < options.threadsPerClient(); t++) {
        DlmSession session = s.sessions.get(i);
        Random rnd = new Random(options.seed() * 1000 + i * 10 + t);
        String name = client + "/" + t;
        Thread th = new Thread(() -> s.run(name, client, session, rnd), "storm-" + name);
        th.setDaemon(true);
        th.setUncaughtExceptionHandler(
            (x, e) -> s.history.problem("worker " + x.getName() + " died: " + e));
        s.workers.add(th);
      }
    }
    s.workers.forEach(Thread::start);
    return s;
  }

  LockHistory history() {
    return history;
  }

  /** Grants each client got so far. */
  Map<String, Long> grantsByClient() {
    Map<String, Long> m = new LinkedHashMap<>();
    grantsByClient.forEach((k, v) -> m.put(k, v.get()));
    return m;
  }

  /**
   * Stops the storm ({@link #stop}, {@link #finish}) and checks what it recorded: no problem (a
   * hung call, a failed release, a lost session), only the refusals its requests asked for (would
   * block, timed out), no two incompatible holders at once, tokens only increasing, no lost counter
   * update, every grant released. Logs grants and refusals as metrics {@code name.grants} and
   * {@code name.refusals}.
   */
  LockHistory stopAndCheck(String name) throws InterruptedException {
    stop(Duration.ofSeconds(60));
    Map<String, Integer> finals = finish();
    HaLogs.metric(name + ".grants", history.grantCount());
    HaLogs.metric(name + ".refusals", history.refusals().size());
    assertThat(history.problems()).isEmpty();
    assertThat(history.refusals())
        .allSatisfy(r -> assertThat(r.expected()).as(r.toString()).isTrue());
    assertThat(HistoryChecker.check(history.grants(), finals)).isEmpty();
    assertThat(history.grants()).allMatch(LockHistory.Grant::released);
    return history;
  }

  /** Waits until every client has been granted more than it had in {@code before}. */
  void awaitEveryClientGrantedSince(Map<String, Long> before, Duration max, String why) {
    await(why)
        .atMost(max)
        .until(
            () ->
                grantsByClient().entrySet().stream()
                    .allMatch(e -> e.getValue() > before.get(e.getKey())));
  }

  private void run(String name, String client, DlmSession session, Random rnd) {
    String ls = options.lockspace();
    while (!stopping) {
      String res = options.resources().get(rnd.nextInt(options.resources().size()));
      LockMode mode = rnd.nextDouble() < options.exShare() ? LockMode.EX : LockMode.PR;
      LockOptions opts = LockOptions.DEFAULT;
      double x = rnd.nextDouble();
      if (x < options.noqueueShare()) {
        opts = opts.withNoqueue();
      } else if (x < options.noqueueShare() + options.timeoutShare()) {
        opts = opts.withTimeout(options.waitTimeout());
      }
      long invoked = System.nanoTime();
      Lock held;
      try {
        held = session.lock(ls, res, mode, opts);
      } catch (DlmClientException e) {
        boolean expected =
            (opts.noqueue() && e.wouldBlock()) || (opts.timeout() != null && e.timedOut());
        history.refusal(
            new LockHistory.Refusal(
                name,
                res,
                mode,
                invoked,
                System.nanoTime(),
                e.code().name(),
                expected,
                e.getMessage()));
        if (!expected) {
          LOG.warn("{}: {} on {} failed: {} {}", name, mode, res, e.code(), e.getMessage());
        }
        continue;
      }
      long acked = System.nanoTime();
      int value = decode(held.valueBlock());
      int read = -1;
      try {
        read = decode(session.readValueBlock(held));
      } catch (DlmClientException e) {
        history.problem(name + ": reading the value block of " + held + " failed: " + e);
      }
      long releaseSent = System.nanoTime();
      boolean released = false;
      byte[] counter = mode == LockMode.EX ? encode(value + 1) : null;
      if (rnd.nextBoolean()) {
        // Half the releases do not wait (as dlm_unlock): the next request of this session may
        // overtake their write; stop() checks that every one of them completed.
        Lock h = held;
        asyncReleases.add(
            session
                .unlockAsync(held, counter)
                .whenComplete(
                    (v, e) -> {
                      if (e != null) {
                        history.problem(name + ": releasing " + h + " (async) failed: " + e);
                      }
                    }));
        released = true;
      } else {
        try {
          session.unlock(held, counter);
          released = true;
        } catch (DlmClientException e) {
          history.problem(name + ": releasing " + held + " failed: " + e.code() + " " + e);
        }
      }
      history.grant(
          new LockHistory.Grant(
              name,
              res,
              mode,
              held.id(),
              held.fencingToken(),
              invoked,
              acked,
              releaseSent,
              value,
              read,
              released));
      grantsByClient.get(client).incrementAndGet();
    }
  }

  static int decode(byte[] valueBlock) {
    return valueBlock.length == 0
        ? 0
        : Integer.parseInt(new String(valueBlock, StandardCharsets.US_ASCII));
  }

  static byte[] encode(int n) {
    return Integer.toString(n).getBytes(StandardCharsets.US_ASCII);
  }

  /**
   * Stops the workers (each finishes the lock it is on) and waits for them. A worker still busy
   * after {@code max} is a hung call: recorded as a problem.
   */
  LockHistory stop(Duration max) throws InterruptedException {
    stopping = true;
    long deadline = System.nanoTime() + max.toNanos();
    for (Thread t : workers) {
      t.join(Math.max(1, TimeUnit.NANOSECONDS.toMillis(deadline - System.nanoTime())));
      if (t.isAlive()) {
        history.problem("worker " + t.getName() + " still busy " + max + " after the stop");
        t.interrupt();
      }
    }
    long releasesDeadline = System.nanoTime() + max.toNanos();
    for (CompletableFuture<Void> f : asyncReleases) {
      try {
        f.get(Math.max(1, releasesDeadline - System.nanoTime()), TimeUnit.NANOSECONDS);
      } catch (TimeoutException e) {
        history.problem("an asynchronous release did not complete within " + max);
      } catch (ExecutionException e) {
        // recorded by its callback
      }
    }
    for (int i = 0; i < sessions.size(); i++) {
      if (sessions.get(i).isLost()) {
        history.problem("the session of node" + i + " was lost");
      }
    }
    if (keeper.isLost()) {
      history.problem("the keeper's session was lost");
    }
    return history;
  }

  /**
   * After {@link #stop}: reads each resource's final counter under an EX lock, then releases the
   * keeper's locks. Returns resource to counter.
   */
  Map<String, Integer> finish() {
    Map<String, Integer> finals = new LinkedHashMap<>();
    for (String r : options.resources()) {
      Lock ex = keeper.lock(options.lockspace(), r, LockMode.EX);
      finals.put(r, decode(ex.valueBlock()));
      keeper.unlock(ex);
    }
    for (Lock l : keeperLocks) {
      keeper.unlock(l);
    }
    return finals;
  }

  @Override
  public void close() {
    stopping = true;
    for (Thread t : workers) {
      t.interrupt(); // a worker waiting for a lock gives up (its call is cancelled)
    }
    for (DlmSession s : sessions) {
      s.close();
    }
    if (keeper != null) {
      keeper.close();
    }
    for (DlmClient c : clients) {
      c.close();
    }
    keeperClient.close();
  }
}
