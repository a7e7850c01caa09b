package io.clusterlvm.dlm.server;

import io.clusterlvm.dlm.engine.DlmException;
import io.clusterlvm.dlm.engine.LockEngine;
import io.clusterlvm.dlm.engine.Names;
import io.clusterlvm.dlm.engine.ResourceKey;
import io.clusterlvm.dlm.proto.ListLocksRequest;

/**
 * A checked {@code ListLocks} request: which lockspace (null: all), whose locks (null: everyone's;
 * incarnation 0: any), where the page starts (null: at the first resource) and where it ends.
 */
record ListingQuery(
    String lockspace,
    String node,
    long incarnation,
    ResourceKey after,
    LockEngine.PageLimits limits) {

  /** The most resources in a page of a listing, and how many a paging request gets for 0. */
  static final int MAX_PAGE_SIZE = 5_000;

  static final int DEFAULT_PAGE_SIZE = 1_000;

  /**
   * A page also ends once it holds this many locks. With at most {@link
   * LockEngine#MAX_LOCKS_PER_RESOURCE} more in its last resource, and at most ~140 bytes a resource
   * and ~125 a lock (64-byte names, the largest ids), a page stays below 2.5 MB, well under gRPC's
   * 4 MiB message limit.
   */
  static final int MAX_PAGE_LOCKS = 10_000;

  /** A page also ends after this many resources looked at, so one call holds the engine briefly. */
  static final int MAX_PAGE_SCANNED = 50_000;

  /** A request without page size or token: the whole listing in one answer, as before paging. */
  private static final LockEngine.PageLimits UNPAGED =
      new LockEngine.PageLimits(Integer.MAX_VALUE, Integer.MAX_VALUE, Integer.MAX_VALUE);

  /**
   * @throws DlmException INVALID_ARGUMENT for a bad node name, an incarnation without its node, or
   *     a page token that no listing gave
   */
  static ListingQuery of(ListLocksRequest req) {
    String node = req.getNode().isEmpty() ? null : Names.check("node", req.getNode());
    if (node == null && req.getIncarnation() != 0) {
      throw new DlmException(
          DlmException.Code.INVALID_ARGUMENT, "an incarnation is given without its node");
    }
    ResourceKey after = PageToken.parse(req.getPageToken());
    long asked = Integer.toUnsignedLong(req.getPageSize()); // a uint32 of 2^31 or more
    LockEngine.PageLimits limits =
        asked == 0 && after == null
            ? UNPAGED // a client older than paging: it would take a first page for everything
            : new LockEngine.PageLimits(
                asked == 0 ? DEFAULT_PAGE_SIZE : (int) Math.min(asked, MAX_PAGE_SIZE),
                MAX_PAGE_LOCKS,
                MAX_PAGE_SCANNED);
    return new ListingQuery(
        req.getLockspace().isEmpty() ? null : req.getLockspace(),
        node,
        req.getIncarnation(),
        after,
        limits);
  }
}
