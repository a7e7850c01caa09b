package io.clusterlvm.dlm.client;

import io.clusterlvm.dlm.proto.Mode;
import java.util.Locale;

/**
 * The six VMS / Linux DLM lock modes, weakest first: NL (null), CR (concurrent read), CW
 * (concurrent write), PR (protected read, "shared"), PW (protected write), EX (exclusive).
 */
public enum LockMode {
  NL,
  CR,
  CW,
  PR,
  PW,
  EX;

  Mode proto() {
    return Mode.forNumber(ordinal() + 1);
  }

  static LockMode of(Mode m) {
    if (m == Mode.UNRECOGNIZED) {
      return null;
    }
    int n = m.getNumber();
    return n >= 1 && n <= 6 ? values()[n - 1] : null;
  }

  /** Parses NL..EX, and lvm's words: "sh" (PR), "ex" (EX), "un"/"nl" (NL). */
  public static LockMode parse(String text) {
    String t = text.trim().toUpperCase(Locale.ROOT);
    switch (t) {
      case "SH":
        return PR;
      case "UN":
        return NL;
      default:
        for (LockMode m : values()) {
          if (m.name().equals(t)) {
            return m;
          }
        }
        throw new IllegalArgumentException(
            "unknown lock mode '" + text + "'; use one of NL, CR, CW, PR, PW, EX (or sh, ex)");
    }
  }
}
