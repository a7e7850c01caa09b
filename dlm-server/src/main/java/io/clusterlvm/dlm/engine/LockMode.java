package io.clusterlvm.dlm.engine;

/**
 * The six VMS / Linux DLM lock modes, weakest first.
 *
 * <p>The compatibility matrix is the standard one (VMS, Linux DLM {@code __dlm_compat_matrix}):
 *
 * <pre>
 *       NL CR CW PR PW EX
 *   NL   1  1  1  1  1  1
 *   CR   1  1  1  1  1  0
 *   CW   1  1  1  0  0  0
 *   PR   1  1  0  1  0  0
 *   PW   1  1  0  0  0  0
 *   EX   1  0  0  0  0  0
 * </pre>
 */
public enum LockMode {
  NL,
  CR,
  CW,
  PR,
  PW,
  EX;

  private static final boolean[][] COMPATIBLE = {
    /*        NL     CR     CW     PR     PW     EX */
    /* NL */ {true, true, true, true, true, true},
    /* CR */ {true, true, true, true, true, false},
    /* CW */ {true, true, true, false, false, false},
    /* PR */ {true, true, false, true, false, false},
    /* PW */ {true, true, false, false, false, false},
    /* EX */ {true, false, false, false, false, false},
  };

  public boolean compatibleWith(LockMode other) {
    return COMPATIBLE[ordinal()][other.ordinal()];
  }

  /**
   * True when converting from {@code from} to this mode can never conflict with anything {@code
   * from} was already compatible with, so the conversion is granted at once without queueing. This
   * is a partial order: PW to CW is a down-conversion, PR to CW is not.
   */
  public boolean isDownConversionFrom(LockMode from) {
    for (LockMode m : values()) {
      if (from.compatibleWith(m) && !compatibleWith(m)) {
        return false;
      }
    }
    return true;
  }

  /** The value block is returned to holders at PR and above. */
  public boolean readsValueBlock() {
    return this == PR || this == PW || this == EX;
  }

  /** Only PW and EX holders may write the value block. */
  public boolean writesValueBlock() {
    return this == PW || this == EX;
  }
}
