package io.clusterlvm.fence.domain;

import io.clusterlvm.dlm.client.DlmClient;
import io.clusterlvm.fence.agent.Backoff;
import io.clusterlvm.fence.agent.FenceAgentRunner;
import io.clusterlvm.fence.config.ClusterConfig;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.atomic.AtomicReference;
import java.util.function.Supplier;
import org.apache.curator.framework.recipes.leader.LeaderLatch;
import org.apache.curator.framework.recipes.leader.LeaderLatchListener;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * The fence bridge of one host: a seat in the fencer election. Exactly one host's bridge is the
 * fencer at a time and runs the state machine ({@link Fencer}); if that host fails, another is
 * elected and takes over the pending fences from the records in ZooKeeper.
 */
public final class FenceBridge implements AutoCloseable {
  private static final Logger LOG = LoggerFactory.getLogger(FenceBridge.class);

  private final FenceStore store;
  private final DlmClient dlm;
  private final String self;
  private final Supplier<ClusterConfig> config;
  private final FenceAgentRunner runner;
  private final Backoff backoff;
  private final ExecutorService events =
      Executors.newSingleThreadExecutor(
          r -> {
            Thread t = new Thread(r, "fence-election");
            t.setDaemon(true);
            return t;
          });
  private final AtomicReference<Fencer> fencer = new AtomicReference<>();
  private LeaderLatch latch;
  private volatile long startedNanos;

  public FenceBridge(
      FenceStore store,
      DlmClient dlm,
      String self,
      Supplier<ClusterConfig> config,
      FenceAgentRunner runner,
      Backoff backoff) {
    this.store = store;
    this.dlm = dlm;
    this.self = self;
    this.config = config;
    this.runner = runner;
    this.backoff = backoff;
  }

  /** Enters the fencer election. Call it once this host has joined the fence domain. */
  public void start() throws Exception {
    startedNanos = System.nanoTime();
    store.ensurePaths();
    latch = new LeaderLatch(store.curator(), store.fencer(), self);
    latch.addListener(
        new LeaderLatchListener() {
          @Override
          public void isLeader() {
            events.execute(FenceBridge.this::becomeFencer);
          }

          @Override
          public void notLeader() {
            events.execute(() -> stopFencing("lost the fencer election"));
          }
        });
    latch.start();
  }

  private void becomeFencer() {
    if (fencer.get() != null || latch == null || !latch.hasLeadership()) {
      return;
    }
    Fencer f = new Fencer(store, dlm, self, config, runner, backoff, startedNanos);
    fencer.set(f);
    f.start();
  }

  private void stopFencing(String why) {
    Fencer f = fencer.getAndSet(null);
    if (f != null) {
      LOG.warn("this host ({}) stops fencing: {}", self, why);
      f.close();
    }
  }

  public boolean isFencer() {
    return fencer.get() != null;
  }

  @Override
  public void close() {
    events.execute(() -> stopFencing("shutting down"));
    events.shutdown();
    try {
      events.awaitTermination(5, java.util.concurrent.TimeUnit.SECONDS);
    } catch (InterruptedException e) {
      Thread.currentThread().interrupt();
    }
    if (latch != null) {
      try {
        latch.close();
      } catch (Exception e) {
        LOG.debug("closing the fencer latch: {}", e.toString());
      }
    }
  }
}
