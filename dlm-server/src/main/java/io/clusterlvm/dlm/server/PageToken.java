package io.clusterlvm.dlm.server;

import io.clusterlvm.dlm.engine.DlmException;
import io.clusterlvm.dlm.engine.Names;
import io.clusterlvm.dlm.engine.ResourceKey;

/**
 * The page token of a lock listing: the lockspace and resource the page before ended at. Names hold
 * no spaces ({@link Names#check}), so a space parts them. It names a position, not a server's
 * state, so any server that leads later continues the listing.
 */
final class PageToken {
  private PageToken() {}

  static String after(ResourceKey last) {
    return last.lockspace() + " " + last.resource();
  }

  /** The position {@code token} names; null for an empty token (the first page). */
  static ResourceKey parse(String token) {
    if (token.isEmpty()) {
      return null;
    }
    int space = token.indexOf(' ');
    try {
      if (space < 0) {
        throw new DlmException(DlmException.Code.INVALID_ARGUMENT, "no space");
      }
      return new ResourceKey(
          Names.check("lockspace", token.substring(0, space)),
          Names.check("resource", token.substring(space + 1)));
    } catch (DlmException e) {
      throw new DlmException(
          DlmException.Code.INVALID_ARGUMENT,
          "page_token is not one a listing gave: pass the next_page_token of the page before");
    }
  }
}
