package io.clusterlvm.dlm.server;

import io.clusterlvm.dlm.engine.Effects;
import io.clusterlvm.dlm.engine.LockEngine;
import java.util.concurrent.CompletableFuture;
import org.apache.curator.framework.CuratorFramework;

/**
 * The real store, whose writes can be held back from counting as durable: while the gate is shut, a
 * write goes to ZooKeeper but its completion waits for the gate to open.
 */
final class GatedLockStore extends LockStore {
  private volatile CompletableFuture<Void> gate = CompletableFuture.completedFuture(null);

  GatedLockStore(CuratorFramework curator, ZkPaths paths) {
    super(curator, paths);
  }

  /** Shuts the gate for the writes started from now on; completing the result opens it. */
  CompletableFuture<Void> shut() {
    CompletableFuture<Void> g = new CompletableFuture<>();
    gate = g;
    return g;
  }

  @Override
  CompletableFuture<Void> writeAsync(Effects fx, LockEngine engine) {
    return super.writeAsync(fx, engine).thenCombine(gate, (written, opened) -> null);
  }
}
