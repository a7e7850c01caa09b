package io.clusterlvm.bench;

/** What a thread is doing, from its stack. */
final class Threads {
  private Threads() {}

  /**
   * True if {@code t} is parked or waiting and the innermost frame outside the JDK belongs to a
   * class whose name starts with {@code prefix}: it is blocked in that code's own wait, not in a
   * call it makes.
   */
  static boolean blockedIn(Thread t, String prefix) {
    Thread.State s = t.getState();
    if (s != Thread.State.WAITING && s != Thread.State.TIMED_WAITING) {
      return false;
    }
    for (StackTraceElement f : t.getStackTrace()) {
      String c = f.getClassName();
      if (c.startsWith("java.") || c.startsWith("jdk.") || c.startsWith("sun.")) {
        continue;
      }
      return c.startsWith(prefix);
    }
    return false;
  }
}
