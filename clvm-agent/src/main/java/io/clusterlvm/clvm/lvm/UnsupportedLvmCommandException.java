package io.clusterlvm.clvm.lvm;

/**
 * An lvm command clvm refuses to run because it cannot tell which cluster locks would make it safe
 * (unknown subcommand or option, selection by tag or {@code --select}, a layout we don't lock yet).
 * The message is meant for the operator.
 */
public final class UnsupportedLvmCommandException extends Exception {

  private final String subcommand;

  public UnsupportedLvmCommandException(String subcommand, String reason) {
    super("clvm refuses 'lvm " + subcommand + "': " + reason);
    this.subcommand = subcommand;
  }

  public String subcommand() {
    return subcommand;
  }
}
