package io.clusterlvm.clvm.lvm;

import java.io.IOException;

/** An lvm run that failed where the caller needed it to succeed (a report helper). */
public class LvmException extends IOException {

  private final transient LvmResult result;

  public LvmException(String message, LvmResult result) {
    super(message + ": " + result + (result.stderr().isBlank() ? "" : "\n" + result.stderr()));
    this.result = result;
  }

  /** The run, with lvm's exit code and output. */
  public LvmResult result() {
    return result;
  }
}
