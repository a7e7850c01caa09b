package io.clusterlvm.clvm.lvm;

/**
 * One row of {@code lvs}.
 *
 * @param attr lvm's lv_attr string, e.g. {@code -wi-a-----}
 * @param pool the thin or VDO pool of a thin or VDO volume (lvm's pool_lv), else empty
 * @param origin the origin of a snapshot, else empty
 */
public record LogicalVolumeInfo(
    String volumeGroup,
    String name,
    String uuid,
    long sizeBytes,
    String attr,
    String pool,
    String origin) {

  /** lvm's volume type, the first character of lv_attr: '-' for a plain linear or striped LV. */
  public char volumeType() {
    return attr.isEmpty() ? '?' : attr.charAt(0);
  }
}
