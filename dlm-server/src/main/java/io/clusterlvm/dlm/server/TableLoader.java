package io.clusterlvm.dlm.server;

import io.clusterlvm.dlm.engine.ResourceView;
import java.util.ArrayDeque;
import java.util.ArrayList;
import java.util.List;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * Reads a new leader's lock table in the background, one lockspace at a time on each of two
 * threads, and hands what it read to the engine thread ({@link Target}). A lockspace that a request
 * waits for moves to the front of the line ({@link #prioritize}), so a new leader serves a
 * lockspace as soon as that lockspace is read, not once the whole table is.
 */
final class TableLoader implements AutoCloseable {
  private static final Logger LOG = LoggerFactory.getLogger(TableLoader.class);

  /**
   * Two readers keep ZooKeeper busy while the other's answers are parsed; more only compete for the
   * same cores.
   */
  private static final int THREADS = 2;

  /** Where the records go. Every call is tagged with the load it belongs to. */
  interface Target {
    /** Records of one read request; on ZooKeeper's event thread. */
    void records(long load, List<ResourceView> views);

    /** Every record of {@code read.lockspace()} was passed to {@link #records}. */
    void lockspaceLoaded(long load, LockStore.LockspaceRead read);

    /** Every lockspace was loaded. */
    void tableLoaded(long load);

    /** Reading failed; nothing more comes from this load. */
    void failed(long load, Exception e);
  }

  private final LockStore store;
  private final long load;
  private final Target target;
  private final List<Thread> threads = new ArrayList<>();

  // guarded by this
  private final ArrayDeque<String> pending;
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
    for (int i = 0; i < Math.min(THREADS, pending.size()); i++) {
      Thread t = new Thread(this::run, "dlm-table-loader-" + i);
      t.setDaemon(true);
      threads.add(t);
      t.start();
    }
  }

  /** Reads {@code lockspace} next, if it is still to be read. Any thread. */
  synchronized void prioritize(String lockspace) {
    if (pending.remove(lockspace)) {
      pending.addFirst(lockspace);
    }
  }

  private synchronized String next() {
    return stopped ? null : pending.pollFirst();
  }

  private void run() {
    String lockspace;
    while ((lockspace = next()) != null) {
      LockStore.LockspaceRead read;
      try {
        read = store.readLockspace(lockspace, views -> target.records(load, views));
      } catch (Exception | Error e) {
        // An Error too: the engine must hear that the load ended, or whole-table requests wait
        // forever.
        synchronized (this) {
          if (stopped) {
            return; // closed (interrupted), or the other thread failed first
          }
          stopped = true;
        }
        LOG.warn("reading lockspace {} failed: {}", lockspace, e.toString());
        target.failed(load, e instanceof Exception x ? x : new IllegalStateException(e));
        return;
      }
      target.lockspaceLoaded(load, read);
      boolean last;
      synchronized (this) {
        last = --unfinished == 0;
      }
      if (last) {
        target.tableLoaded(load);
      }
    }
  }

  @Override
  public void close() {
    synchronized (this) {
      stopped = true;
    }
    threads.forEach(Thread::interrupt);
  }
}
