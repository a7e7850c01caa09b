package io.clusterlvm.clvm.exec;

import io.clusterlvm.dlm.client.DlmSession;
import java.time.Duration;
import java.util.Collection;
import java.util.Comparator;
import java.util.List;
import java.util.Map;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicLong;
import java.util.function.Predicate;

/**
 * The commands running on this host now, so that a lost lease (or lock session) can stop them: the
 * host may have been declared failed and its locks given to others, so a command still writing
 * under them would be the stale writer fencing exists to stop. Thread-safe.
 */
final class CommandsInFlight {

  /** Where a command is. */
  enum Stage {
    WAITING_FOR_LOCKS,
    RUNNING_LVM,
    RELEASING_LOCKS
  }

  /** One command; its thread is interrupted when it must stop. */
  static final class Command {
    final long id;
    final List<String> argv;
    final long incarnation;
    final DlmSession session;
    final Thread thread;
    final long startNanos = System.nanoTime();
    private volatile Stage stage = Stage.WAITING_FOR_LOCKS;
    private volatile String abortedBecause;
    private volatile boolean incarnationGone;
    private volatile boolean lvmStarted;
    private volatile boolean cancelled;

    /** Past the point where its client may still withdraw it (guarded by this). */
    private boolean committed;

    /** Ended: its thread may run something else (guarded by this). */
    private boolean ended;

    Command(long id, List<String> argv, long incarnation, DlmSession session, Thread thread) {
      this.id = id;
      this.argv = List.copyOf(argv);
      this.incarnation = incarnation;
      this.session = session;
      this.thread = thread;
    }

    Stage stage() {
      return stage;
    }

    void stage(Stage s) {
      stage = s;
      if (s == Stage.RUNNING_LVM) {
        lvmStarted = true;
      }
    }

    boolean lvmStarted() {
      return lvmStarted;
    }

    /** Stopped because the host's incarnation ended: its locks will be purged, not released. */
    boolean incarnationGone() {
      return incarnationGone;
    }

    /** Withdrawn by its client while it waited for its locks. */
    boolean cancelled() {
      return cancelled;
    }

    /**
     * Withdraws the command for its client, if it still waits for its locks: its thread is
     * interrupted, and it ends without running lvm. Once it is committed to run, nothing happens.
     */
    synchronized void cancelIfWaiting(String why) {
      if (committed || ended || abortedBecause != null) {
        return;
      }
      abortedBecause = why;
      cancelled = true;
      thread.interrupt();
    }

    /**
     * Called before the command starts changing anything (the metadata-change log, lvm): false if
     * it was stopped, and from then on its client can no longer withdraw it.
     */
    synchronized boolean commitToRun() {
      if (abortedBecause != null) {
        return false;
      }
      committed = true;
      return true;
    }

    /** Why the command was told to stop, or null. */
    String abortedBecause() {
      return abortedBecause;
    }

    Duration running() {
      return Duration.ofNanos(System.nanoTime() - startNanos);
    }

    private void abort(String why, boolean incarnationEnded) {
      if (abortedBecause == null) {
        abortedBecause = why;
      }
      incarnationGone |= incarnationEnded;
      thread.interrupt();
    }
  }

  private final AtomicLong ids = new AtomicLong();
  private final Map<Long, Command> running = new ConcurrentHashMap<>();

  Command begin(List<String> argv, long incarnation, DlmSession session) {
    Command c =
        new Command(ids.incrementAndGet(), argv, incarnation, session, Thread.currentThread());
    running.put(c.id, c);
    return c;
  }

  void end(Command c) {
    synchronized (c) {
      c.ended = true;
      running.remove(c.id);
      // An abort that raced with the end must not leave the interrupt on a pooled thread.
      if (c.abortedBecause != null) {
        Thread.interrupted();
      }
      c.notifyAll();
    }
    synchronized (this) {
      notifyAll();
    }
  }

  /** Waits until no command runs; false if some still do after {@code wait}. */
  synchronized boolean awaitEmpty(Duration wait) throws InterruptedException {
    long deadline = System.nanoTime() + wait.toNanos();
    while (!running.isEmpty()) {
      long left = deadline - System.nanoTime();
      if (left <= 0) {
        return false;
      }
      TimeUnit.NANOSECONDS.timedWait(this, left);
    }
    return true;
  }

  /** Stops every command of {@code incarnation} (0: all) and waits up to {@code wait} for them. */
  int abortIncarnation(long incarnation, String why, Duration wait) throws InterruptedException {
    return abortWhere(c -> incarnation == 0 || c.incarnation == incarnation, why, true, wait);
  }

  /**
   * Stops every command, which then releases its locks as a failed command does (once its lvm has
   * ended), and waits up to {@code wait} for them.
   */
  int abortAll(String why, Duration wait) throws InterruptedException {
    return abortWhere(c -> true, why, false, wait);
  }

  /** Stops every command holding locks through {@code session}. */
  int abortSession(DlmSession session, String why, Duration wait) throws InterruptedException {
    return abortWhere(c -> c.session == session, why, false, wait);
  }

  private int abortWhere(
      Predicate<Command> which, String why, boolean incarnationEnded, Duration wait)
      throws InterruptedException {
    List<Command> hit = running.values().stream().filter(which).toList();
    for (Command c : hit) {
      synchronized (c) {
        if (running.containsKey(c.id)) {
          c.abort(why, incarnationEnded);
        }
      }
    }
    long deadline = System.nanoTime() + wait.toNanos();
    for (Command c : hit) {
      synchronized (c) {
        while (running.containsKey(c.id)) {
          long left = deadline - System.nanoTime();
          if (left <= 0) {
            break;
          }
          TimeUnit.NANOSECONDS.timedWait(c, left);
        }
      }
    }
    return hit.size();
  }

  /** The commands running now, oldest first. */
  Collection<Command> snapshot() {
    return running.values().stream().sorted(Comparator.comparingLong(c -> c.id)).toList();
  }

  boolean isEmpty() {
    return running.isEmpty();
  }
}
