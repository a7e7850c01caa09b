package io.clusterlvm.dlm.server;

import io.clusterlvm.dlm.engine.ResourceView;
import java.util.ArrayDeque;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.Iterator;
import java.util.List;
import java.util.Map;
import java.util.concurrent.TimeUnit;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * Reads a new leader's lock table in the background, one lockspace at a time on each of two
 * threads, and hands what it read to the engine thread ({@link Target}). A lockspace that a request
 * waits for moves to the front of the line ({@link #prioritize}), so a new leader serves a
 * lockspace as soon as that lockspace is read, not once the whole table is.
 *
 * <p>A lockspace whose read fails (a record that can't be parsed, a lost connection) is read again
 * later, 100 ms after its first failure and up to 5 s after later ones, while the other lockspaces
 * go on loading and are served. Its records reach the engine only once all of them were read, so
 * that a failed read leaves nothing behind to be read twice. Before 2026-12-07 a failed read failed
 * the whole load: the leader took a new epoch and failed every waiter and session stream, again
 * every 5 s for as long as one record stayed unreadable.
 */
final class TableLoader implements AutoCloseable {
  private static final Logger LOG = LoggerFactory.getLogger(TableLoader.class);

  /**
   * Two readers keep ZooKeeper busy while the other's answers are parsed; more only compete for the
   * same cores.
   */
  private static final int THREADS = 2;

  private static final long FIRST_RETRY_MS = 100;
  private static final long MAX_RETRY_MS = 5000;

  /** Where the records go. Every call is tagged with the load it belongs to. */
  interface Target {
    /** Records of one lockspace, in parts; on a loader thread, after all of them were read. */
    void records(long load, List<ResourceView> views);

    /** Every record of {@code read.lockspace()} was passed to {@link #records}. */
    void lockspaceLoaded(long load, LockStore.LockspaceRead read);

    /**
     * Reading {@code lockspace} failed; nothing of it was passed to {@link #records}. It is read
     * again later.
     */
    void lockspaceFailed(long load, String lockspace, Exception e);

    /** Every lockspace was loaded. */
    void tableLoaded(long load);

    /** Reading failed for good (an Error); nothing more comes from this load. */
    void failed(long load, Exception e);
  }

  private final LockStore store;
  private final long load;
  private final Target target;
  private final List<Thread> threads = new ArrayList<>();

  /** A lockspace whose reads failed {@code failures} times; read again from {@code notBefore}. */
  private record Retry(int failures, long notBefore) {}

  // guarded by this
  private final ArrayDeque<String> pending;
  private final Map<String, Retry> retries = new HashMap<>();
  private int unfinished;
  private boolean stopped;

  TableLoader(LockStore store, List<String> lockspaces, long load, Target target) {
    this.store = store;
    this.load = load;
    this.target = target;
    this.pending = new ArrayDeque<>(lockspaces);
    this.unfinished = lockspaces.size();
  }

  void start() {
    // Counted before the first starts: a started thread takes from pending at once, and counting
    // as they start left the second unstarted whenever the first was quick (a lockspace held up
    // then held up the whole load).
    int n;
    synchronized (this) {
      n = Math.min(THREADS, pending.size());
    }
    for (int i = 0; i < n; i++) {
      Thread t = new Thread(this::run, "dlm-table-loader-" + i);
      t.setDaemon(true);
      threads.add(t);
      t.start();
    }
  }

  /** Reads {@code lockspace} next, if it is still to be read (and not waiting out a retry). */
  synchronized void prioritize(String lockspace) {
    if (pending.remove(lockspace)) {
      pending.addFirst(lockspace);
    }
  }

  /**
   * The first lockspace that may be read now, waiting for a retry's time if that is all there is;
   * null once closed or when nothing is left to read. A thread that finds nothing ends; a failed
   * lockspace is put back by the thread that read it, which then takes it (or another) again.
   */
  private synchronized String next() throws InterruptedException {
    while (!stopped && !pending.isEmpty()) {
      long now = System.nanoTime();
      long soonest = Long.MAX_VALUE;
      for (Iterator<String> it = pending.iterator(); it.hasNext(); ) {
        String lockspace = it.next();
        Retry r = retries.get(lockspace);
        if (r == null || r.notBefore() - now <= 0) {
          it.remove();
          return lockspace;
        }
        soonest = Math.min(soonest, r.notBefore() - now);
      }
      TimeUnit.NANOSECONDS.timedWait(this, soonest);
    }
    return null;
  }

  private void run() {
    try {
      String lockspace;
      while ((lockspace = next()) != null) {
        read(lockspace);
      }
    } catch (InterruptedException e) {
      // closed
    }
  }

  private void read(String lockspace) {
    List<List<ResourceView>> parts = new ArrayList<>();
    LockStore.LockspaceRead read;
    try {
      read = store.readLockspace(lockspace, parts::add);
    } catch (Exception e) {
      long retryMs;
      synchronized (this) {
        if (stopped) {
          return; // closed (interrupted)
        }
        Retry before = retries.get(lockspace);
        int n = before == null ? 1 : before.failures() + 1;
        retryMs = Math.min(FIRST_RETRY_MS << Math.min(n - 1, 6), MAX_RETRY_MS);
        retries.put(
            lockspace, new Retry(n, System.nanoTime() + TimeUnit.MILLISECONDS.toNanos(retryMs)));
      }
      LOG.warn(
          "reading lockspace {} failed ({}); reading it again in {} ms",
          lockspace,
          e instanceof LockStore.CorruptRecordException ? e.getMessage() : e.toString(),
          retryMs);
      // Told before it can be read again: the engine must not hear of this failure after a later
      // read's success.
      target.lockspaceFailed(load, lockspace, e);
      synchronized (this) {
        pending.addLast(lockspace);
        notifyAll();
      }
      return;
    } catch (Error e) {
      // The engine must hear that the load ended, or whole-table requests wait forever.
      synchronized (this) {
        if (stopped) {
          return;
        }
        stopped = true;
      }
      LOG.warn("reading lockspace {} failed: {}", lockspace, e.toString());
      target.failed(load, new IllegalStateException(e));
      return;
    }
    parts.forEach(views -> target.records(load, views));
    target.lockspaceLoaded(load, read);
    boolean last;
    synchronized (this) {
      retries.remove(lockspace);
      last = --unfinished == 0;
    }
    if (last) {
      target.tableLoaded(load);
    }
  }

  @Override
  public void close() {
    synchronized (this) {
      stopped = true;
      notifyAll();
    }
    threads.forEach(Thread::interrupt);
  }
}
