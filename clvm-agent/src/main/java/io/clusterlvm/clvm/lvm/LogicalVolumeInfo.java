package io.clusterlvm.clvm.lvm;

/**
 * One row of {@code lvs}.
 *
 * @param attr lvm's lv_attr string, e.g. {@code -wi-a-----}
 */
public record LogicalVolumeInfo(
    String volumeGroup, String name, String uuid, long sizeBytes, String attr) {}
