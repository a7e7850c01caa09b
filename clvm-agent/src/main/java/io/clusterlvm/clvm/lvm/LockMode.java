package io.clusterlvm.clvm.lvm;

/**
 * The six VMS/Linux-DLM lock modes, weakest first. lvm's "sh" is {@link #PR}, "ex" is {@link #EX}.
 *
 * <p>Deliberately minimal and local to clvm-agent: the DLM client will own the real {@code
 * LockMode}; when it lands this enum is swapped for it (the names are the same).
 */
public enum LockMode {
  NL,
  CR,
  CW,
  PR,
  PW,
  EX;

  /**
   * The weakest mode that is at least as strong as both (the modes form a lattice, not a line: CW
   * and PR are incomparable and both are below PW).
   */
  public static LockMode strongest(LockMode a, LockMode b) {
    if ((a == CW && b == PR) || (a == PR && b == CW)) {
      return PW;
    }
    return a.ordinal() >= b.ordinal() ? a : b;
  }
}
