package io.clusterlvm.clvm.exec;

import java.nio.ByteBuffer;
import java.util.Optional;

/**
 * What the VG lock's value block holds: the VG metadata seqno the last EX holder left behind, or
 * that it removed the VG. Layout (10 bytes, big-endian): version (1), flags (1, bit 0 = VG gone),
 * seqno (8). An empty or unknown block decodes to nothing: the reader can't tell and must refresh.
 *
 * @param seqno the VG's metadata seqno after the last change (0 when {@code removed})
 * @param removed the last EX holder removed (or renamed away) the VG
 */
public record VolumeGroupLockValue(long seqno, boolean removed) {

  static final byte VERSION = 1;
  private static final int LENGTH = 10;

  public static VolumeGroupLockValue of(long seqno) {
    return new VolumeGroupLockValue(seqno, false);
  }

  public static VolumeGroupLockValue gone() {
    return new VolumeGroupLockValue(0, true);
  }

  /**
   * What an EX holder writes when it cannot tell what lvm did to the VG (lvm was killed): it
   * decodes to nothing, so the next holder of the VG lock refreshes its view and reads the seqno
   * with vgs.
   */
  static byte[] unknown() {
    return new byte[0];
  }

  public byte[] encode() {
    return ByteBuffer.allocate(LENGTH)
        .put(VERSION)
        .put((byte) (removed ? 1 : 0))
        .putLong(seqno)
        .array();
  }

  /** Decodes a value block; empty if it is empty, shorter, or of another version. */
  public static Optional<VolumeGroupLockValue> decode(byte[] block) {
    if (block == null || block.length < LENGTH || block[0] != VERSION) {
      return Optional.empty();
    }
    ByteBuffer b = ByteBuffer.wrap(block);
    b.get();
    boolean removed = (b.get() & 1) != 0;
    return Optional.of(new VolumeGroupLockValue(b.getLong(), removed));
  }
}
