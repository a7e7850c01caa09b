package io.clusterlvm.clvm.lvm;

import java.io.IOException;
import java.time.Duration;
import java.util.List;

/** lvm did not finish within the runner's timeout; the process was killed. */
public final class LvmTimeoutException extends IOException {

  private final List<String> command;
  private final Duration timeout;

  LvmTimeoutException(List<String> command, Duration timeout) {
    super(String.join(" ", command) + " did not finish within " + timeout + "; killed");
    this.command = List.copyOf(command);
    this.timeout = timeout;
  }

  public List<String> command() {
    return command;
  }

  public Duration timeout() {
    return timeout;
  }
}
