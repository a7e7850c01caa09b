package io.clusterlvm.clvm.exec;

/**
 * Runs clean-up work of a stopped command with the thread's interrupt put aside, and restores it
 * afterwards. A command is stopped by an interrupt, and an interrupted thread's calls (to the lock
 * service, to the change log, to lvs) fail at once: the clean-up would be cut short by the very
 * stop it cleans up after.
 */
final class InterruptAside {
  private InterruptAside() {}

  static void run(Runnable work) {
    boolean interrupted = Thread.interrupted();
    try {
      work.run();
    } finally {
      if (interrupted) {
        Thread.currentThread().interrupt();
      }
    }
  }
}
