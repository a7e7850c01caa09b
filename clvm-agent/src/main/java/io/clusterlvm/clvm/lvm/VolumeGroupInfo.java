package io.clusterlvm.clvm.lvm;

/**
 * One row of {@code vgs}.
 *
 * @param seqno the VG metadata sequence number: every metadata commit increments it
 * @param lockType lvm's vg_lock_type ("" for a local VG, "dlm"/"sanlock" for a shared one)
 */
public record VolumeGroupInfo(
    String name,
    String uuid,
    long seqno,
    long sizeBytes,
    long freeBytes,
    int lvCount,
    int pvCount,
    String lockType) {}
