package io.clusterlvm.dlm.engine;

import java.nio.charset.StandardCharsets;

/** The rules for lockspace, resource and node names. */
public final class Names {
  /** As in the Linux DLM (DLM_RESNAME_MAXLEN, DLM_LOCKSPACE_LEN). */
  public static final int MAX_NAME_BYTES = 64;

  /** As in the Linux DLM (DLM_LVB_LEN default). */
  public static final int MAX_VALUE_BLOCK_BYTES = 32;

  private Names() {}

  /**
   * Checks a lockspace, resource or node name: 1 to 64 bytes of printable ASCII without spaces, so
   * that every name can be typed on a command line and shown in a table unchanged.
   */
  public static String check(String what, String name) {
    if (name == null || name.isEmpty()) {
      throw DlmException.invalid(what + " name is empty; it must be 1 to 64 printable characters");
    }
    byte[] bytes = name.getBytes(StandardCharsets.UTF_8);
    if (bytes.length > MAX_NAME_BYTES) {
      throw DlmException.invalid(
          what
              + " name '"
              + printable(name.substring(0, Math.min(name.length(), 16)))
              + "...' is "
              + bytes.length
              + " bytes; the limit is "
              + MAX_NAME_BYTES);
    }
    for (byte b : bytes) {
      if (b < 0x21 || b > 0x7e) {
        throw DlmException.invalid(
            what
                + " name '"
                + printable(name)
                + "' holds a space, control or non-ASCII character;"
                + " use printable ASCII only (letters, digits, punctuation)");
      }
    }
    return name;
  }

  public static byte[] checkValueBlock(byte[] lvb) {
    if (lvb.length > MAX_VALUE_BLOCK_BYTES) {
      throw DlmException.invalid(
          "value block is " + lvb.length + " bytes; the limit is " + MAX_VALUE_BLOCK_BYTES);
    }
    return lvb;
  }

  private static String printable(String s) {
    StringBuilder out = new StringBuilder();
    for (char c : s.toCharArray()) {
      out.append(c >= 0x20 && c < 0x7f ? String.valueOf(c) : String.format("\\u%04x", (int) c));
    }
    return out.toString();
  }
}
