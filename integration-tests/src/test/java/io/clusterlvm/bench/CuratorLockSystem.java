package io.clusterlvm.bench;

import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;
import org.apache.curator.framework.CuratorFramework;
import org.apache.curator.framework.CuratorFrameworkFactory;
import org.apache.curator.framework.recipes.locks.InterProcessMutex;
import org.apache.curator.retry.ExponentialBackoffRetry;

/**
 * The lock an application would otherwise pick: Curator's {@link InterProcessMutex} on the same
 * ZooKeeper. Worker {@code i} has its own mutex instance (the recipe is re-entrant per thread and
 * instance, so instances are never shared), on CuratorFramework {@code i % connections}; each
 * CuratorFramework is one ZooKeeper session.
 */
final class CuratorLockSystem implements LockSystem {
  static final String ROOT = "/bench-curator";
  private static final long TIMEOUT_SECONDS = 30;

  private final List<CuratorFramework> clients = new ArrayList<>();

  CuratorLockSystem(String zookeeper, int connections) throws InterruptedException {
    for (int i = 0; i < connections; i++) {
      CuratorFramework c =
          CuratorFrameworkFactory.builder()
              .connectString(zookeeper)
              .sessionTimeoutMs(10_000)
              .connectionTimeoutMs(5_000)
              .retryPolicy(new ExponentialBackoffRetry(100, 3))
              .build();
      c.start();
      clients.add(c);
      if (!c.blockUntilConnected(30, TimeUnit.SECONDS)) {
        throw new IllegalStateException("Curator could not connect to " + zookeeper);
      }
    }
  }

  @Override
  public String name() {
    return "curator";
  }

  @Override
  public String clientLayout() {
    return "one InterProcessMutex per client, over "
        + clients.size()
        + " CuratorFramework(s) = ZooKeeper session(s), round-robin";
  }

  static String path(String resource) {
    return ROOT + "/" + resource;
  }

  @Override
  public Worker worker(int index, String resource) {
    InterProcessMutex mutex =
        new InterProcessMutex(clients.get(index % clients.size()), path(resource));
    return new Worker() {
      @Override
      public void acquire() throws Exception {
        if (!mutex.acquire(TIMEOUT_SECONDS, TimeUnit.SECONDS)) {
          throw new IllegalStateException(
              "Curator mutex " + path(resource) + " not acquired within " + TIMEOUT_SECONDS + " s");
        }
      }

      @Override
      public void release() throws Exception {
        mutex.release();
      }
    };
  }

  @Override
  public boolean isQueued(String resource, Thread waiter) throws Exception {
    // The recipe waits in LockInternals.internalLockLoop (Object.wait) once it has created its
    // node and set a watch on its predecessor; a wait inside a ZooKeeper call is not that yet.
    return Threads.blockedIn(waiter, "org.apache.curator.framework.recipes.locks.LockInternals")
        && clients.get(0).getChildren().forPath(path(resource)).size() >= 2;
  }

  @Override
  public void close() {
    clients.forEach(CuratorFramework::close);
  }
}
