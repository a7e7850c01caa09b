package io.clusterlvm.dlm.engine;

import java.util.ArrayList;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Set;

/**
 * What a batch of engine operations did besides their direct results: who got granted, who must be
 * told they block someone, which requests ended, and which records must be written before any of it
 * is acknowledged. One {@code Effects} is shared by all operations of a group commit.
 */
public final class Effects {
  private final List<Grant> grants = new ArrayList<>();
  private final List<BlockingEvent> blocking = new ArrayList<>();
  private final List<EndedRequest> ended = new ArrayList<>();
  private final Set<ResourceKey> dirtyResources = new LinkedHashSet<>();
  private final Set<String> dirtyNodes = new LinkedHashSet<>();

  public List<Grant> grants() {
    return grants;
  }

  public List<BlockingEvent> blocking() {
    return blocking;
  }

  public List<EndedRequest> ended() {
    return ended;
  }

  public Set<ResourceKey> dirtyResources() {
    return dirtyResources;
  }

  public Set<String> dirtyNodes() {
    return dirtyNodes;
  }

  /**
   * Adds the records {@code earlier} left dirty to this batch's, so that one write covers both (the
   * records are written as the engine has them at write time).
   */
  public void carryWritesOf(Effects earlier) {
    dirtyResources.addAll(earlier.dirtyResources);
    dirtyNodes.addAll(earlier.dirtyNodes);
  }

  public boolean needsWrite() {
    return !dirtyResources.isEmpty() || !dirtyNodes.isEmpty();
  }

  void granted(Grant g) {
    grants.add(g);
  }

  void blocking(BlockingEvent e) {
    blocking.add(e);
  }

  void ended(EndedRequest e) {
    ended.add(e);
  }

  void dirty(ResourceKey key) {
    dirtyResources.add(key);
  }

  void dirtyNode(String node) {
    dirtyNodes.add(node);
  }
}
