package io.clusterlvm.clvm.exec;

import java.util.Map;
import java.util.Optional;
import java.util.TreeMap;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.atomic.AtomicLong;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * This host's view of each VG's metadata: the highest seqno it has seen (through the VG lock's
 * value block, or by writing it itself), and the hook that refreshes the view when another host has
 * changed the VG since.
 *
 * <p>With lvm 2.03 the refresh has nothing to drop: lvmetad is gone and every lvm command scans the
 * devices and reads the metadata from disk (see {@code LvmRunner}). The hook stays so that a host
 * with a metadata cache (lvm 2.02's lvmetad, a future cache of ours) gets it invalidated at the one
 * point where it is known stale: right after the VG lock is granted, before anything runs.
 */
final class VolumeGroupViews {

  /** Drops whatever this host caches about a VG. */
  @FunctionalInterface
  interface Refresher {
    void refresh(String vg);
  }

  private static final Logger LOG = LoggerFactory.getLogger(VolumeGroupViews.class);

  private final String node;
  private final Refresher refresher;
  private final Map<String, Long> seen = new ConcurrentHashMap<>();
  private final AtomicLong refreshes = new AtomicLong();

  VolumeGroupViews(String node, Refresher refresher) {
    this.node = node;
    this.refresher = refresher;
  }

  /** lvm 2.03 caches nothing across commands: log only. */
  static Refresher lvmRescans(String node) {
    return vg ->
        LOG.debug(
            "[node={} vg={}] view refreshed: nothing cached (lvm 2.03 rescans on every command)",
            node,
            vg);
  }

  /**
   * The VG lock was granted (PR or EX) with this value block: refresh if another host changed the
   * VG since this host last saw it. A value block that differs counts, not only a higher seqno: a
   * removed and re-created VG starts again at seqno 1.
   *
   * @return true if the view was refreshed
   */
  boolean granted(String vg, byte[] valueBlock, boolean valid) {
    Optional<VolumeGroupLockValue> value = VolumeGroupLockValue.decode(valueBlock);
    Long last = seen.get(vg);
    String why;
    if (!valid) {
      seen.remove(vg);
      why = "the VG lock's value block is invalid (an EX holder failed without writing it)";
    } else if (value.isEmpty()) {
      if (last == null) {
        return false; // nobody has recorded a seqno yet, and we have seen nothing to keep
      }
      seen.remove(vg);
      why = "the VG lock's value block is empty";
    } else if (value.get().removed()) {
      if (last == null) {
        return false;
      }
      seen.remove(vg);
      why = "another host removed the VG";
    } else if (last == null || value.get().seqno() != last) {
      long seqno = value.get().seqno();
      seen.put(vg, seqno);
      why =
          last == null
              ? "first sight: seqno " + seqno
              : "seqno " + seqno + " differs from " + last + " last seen here";
    } else {
      return false;
    }
    refreshes.incrementAndGet();
    if (valid) {
      LOG.debug("[node={} vg={}] refreshing this host's view: {}", node, vg, why);
    } else {
      LOG.info("[node={} vg={}] refreshing this host's view: {}", node, vg, why);
    }
    refresher.refresh(vg);
    return true;
  }

  /** This host wrote {@code seqno} into the VG lock's value block. */
  void wrote(String vg, VolumeGroupLockValue value) {
    if (value.removed()) {
      seen.remove(vg);
    } else {
      seen.put(vg, value.seqno());
    }
  }

  /** This host cannot tell what its own lvm did to the VG: it knows no current seqno. */
  void unknown(String vg) {
    seen.remove(vg);
  }

  /** The last seqno seen per VG, sorted by VG. */
  Map<String, Long> seen() {
    return new TreeMap<>(seen);
  }

  long refreshes() {
    return refreshes.get();
  }

  /** After a lease loss: nothing seen under the old incarnation is trusted. */
  void forgetAll() {
    seen.clear();
  }
}
