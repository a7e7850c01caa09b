package io.clusterlvm.clvm.exec;

/**
 * Lets the client of a command withdraw it (it went away, or its deadline passed) while the command
 * still waits for its locks; lvm did not run then, and nothing was changed. Once the command is
 * committed to run, a cancel does nothing: half an lvm run is worse than a result nobody reads.
 * Thread-safe; cancel may come before the command has begun.
 */
public final class Cancellation {
  private CommandsInFlight.Command command;
  private String why;

  /** Withdraws the command, if it still waits for its locks; {@code why} is logged. */
  public synchronized void cancel(String why) {
    if (this.why != null) {
      return;
    }
    this.why = why;
    if (command != null) {
      command.cancelIfWaiting(why);
    }
  }

  synchronized void attach(CommandsInFlight.Command c) {
    command = c;
    if (why != null) {
      c.cancelIfWaiting(why);
    }
  }
}
