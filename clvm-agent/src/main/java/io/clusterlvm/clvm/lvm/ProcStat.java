package io.clusterlvm.clvm.lvm;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Optional;

/**
 * What {@code /proc/PID/stat} says of a process: its state, and when it started in clock ticks
 * since boot (field 22), which tells it from a later process given the same pid.
 */
record ProcStat(char state, String startTicks) {

  /** Empty if there is no such process (or this system has no /proc). */
  static Optional<ProcStat> of(long pid) {
    try {
      String stat = Files.readString(Path.of("/proc", Long.toString(pid), "stat"));
      // "pid (comm) state ppid ...": comm may hold spaces and parentheses, so the fields are
      // counted from the last ')', where field 3 starts.
      String[] f = stat.substring(stat.lastIndexOf(')') + 2).split(" ");
      return f.length > 19 ? Optional.of(new ProcStat(f[0].charAt(0), f[19])) : Optional.empty();
    } catch (IOException | RuntimeException e) {
      return Optional.empty();
    }
  }

  /** A zombie (or dead) process has ended, though its parent has not reaped it yet. */
  boolean ended() {
    return state == 'Z' || state == 'X';
  }
}
