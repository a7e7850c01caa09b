package io.clusterlvm.bench;

import io.clusterlvm.dlm.client.DlmClient;
import io.clusterlvm.dlm.client.DlmClientException;
import io.clusterlvm.dlm.client.DlmSession;
import io.clusterlvm.dlm.client.Lock;
import io.clusterlvm.dlm.client.LockMode;
import io.clusterlvm.dlm.client.LockOptions;
import io.clusterlvm.dlm.proto.ResourceInfo;
import java.time.Duration;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Queue;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ConcurrentLinkedQueue;
import java.util.concurrent.TimeUnit;

/**
 * Our lock service through its Java client. Worker {@code i} is a process on node {@code
 * bench-node-i} with a session of its own; the sessions are spread round-robin over {@code
 * connections} {@link DlmClient}s (one gRPC channel each), as processes on different hosts would
 * each have their own connection.
 */
final class DlmLockSystem implements LockSystem {
  static final String LOCKSPACE = "bench";
  private static final LockOptions OPTIONS =
      LockOptions.DEFAULT.withTimeout(Duration.ofSeconds(30));

  private final List<DlmClient> clients = new ArrayList<>();
  private final Map<Integer, DlmSession> sessions = new HashMap<>();

  DlmLockSystem(String servers, int connections) {
    for (int i = 0; i < connections; i++) {
      clients.add(DlmClient.connect(servers));
    }
  }

  @Override
  public String name() {
    return "dlm";
  }

  @Override
  public String clientLayout() {
    return "one DlmSession per client (node bench-node-i), over "
        + clients.size()
        + " DlmClient(s) = gRPC channel(s), round-robin";
  }

  DlmClient admin() {
    return clients.get(0);
  }

  private synchronized DlmSession session(int index) {
    DlmSession s = sessions.get(index);
    if (s == null) {
      DlmClient c = clients.get(index % clients.size());
      String node = "bench-node-" + index;
      long incarnation = c.join(node, "bench-boot-" + index);
      s = c.openSession(node, incarnation, "dlm-bench");
      sessions.put(index, s);
    }
    return s;
  }

  /**
   * A worker that releases the way a DLM application does: {@link DlmSession#unlockAsync} returns
   * once the release is sent, like the Linux DLM's dlm_unlock (its completion comes later). The
   * release is applied before any later request of the session on the same connection, and it is
   * durable before anyone else is granted the lock, so only the holder stops waiting for it. Every
   * release's completion is still checked: {@link #settle} throws if one failed.
   */
  @Override
  public Worker worker(int index, String resource) {
    return worker(index, resource, false);
  }

  /** A worker whose release waits until the release is durable ({@link DlmSession#unlock}). */
  Worker workerWaitingForUnlock(int index, String resource) {
    return worker(index, resource, true);
  }

  private Worker worker(int index, String resource, boolean waitForUnlock) {
    DlmSession session = session(index);
    return new Worker() {
      private Lock held;

      @Override
      public void acquire() {
        held = session.lock(LOCKSPACE, resource, LockMode.EX, OPTIONS);
      }

      @Override
      public void release() {
        Lock l = held;
        held = null;
        if (waitForUnlock) {
          session.unlock(l);
          return;
        }
        releases.add(session.unlockAsync(l, null));
        checkCompletedReleases();
      }
    };
  }

  /** Releases sent and not yet checked, oldest first. */
  private final Queue<CompletableFuture<Void>> releases = new ConcurrentLinkedQueue<>();

  /** Drops the completed releases at the head of the queue, throwing if one of them failed. */
  private void checkCompletedReleases() {
    CompletableFuture<Void> f;
    while ((f = releases.peek()) != null && f.isDone()) {
      releases.remove(f);
      f.join();
    }
  }

  /** Waits for every release sent so far; throws if one failed. */
  @Override
  public void settle() {
    CompletableFuture<Void> f;
    while ((f = releases.poll()) != null) {
      f.orTimeout(60, TimeUnit.SECONDS).join();
    }
  }

  /**
   * Our transport and engine without ZooKeeper, to split the lock latency: a ServerStatus round
   * trip (answered on the gRPC thread) and a NOQUEUE request that the engine refuses (queued to the
   * engine thread and answered, nothing to write).
   */
  Measurement floors() {
    DlmSession holder = session(2);
    DlmSession asker = session(3);
    holder.lock(LOCKSPACE, "floor-held", LockMode.EX, OPTIONS);
    LockOptions noqueue = LockOptions.DEFAULT.withNoqueue();
    Samples status = new Samples();
    Samples refused = new Samples();
    return new Measurement() {
      @Override
      public String[] key() {
        return new String[] {"dlm_floors"};
      }

      @Override
      public String label() {
        return "dlm without ZooKeeper: ServerStatus and a refused NOQUEUE request";
      }

      @Override
      public void run(int iterations, boolean record) {
        for (int i = 0; i < iterations; i++) {
          long t0 = System.nanoTime();
          admin().status();
          long t1 = System.nanoTime();
          try {
            asker.lock(LOCKSPACE, "floor-held", LockMode.EX, noqueue);
            throw new IllegalStateException("a NOQUEUE request for a held lock was granted");
          } catch (DlmClientException e) {
            if (!e.wouldBlock()) {
              throw e;
            }
          }
          long t2 = System.nanoTime();
          if (record) {
            status.add(t1 - t0);
            refused.add(t2 - t1);
          }
        }
      }

      @Override
      public Map<String, Object> summary() {
        Map<String, Object> m = new LinkedHashMap<>();
        m.put("server_status_rtt", status.summary());
        m.put("engine_rtt_no_write", refused.summary());
        return m;
      }
    };
  }

  @Override
  public boolean isQueued(String resource, Thread waiter) {
    if (!Threads.blockedIn(waiter, "io.clusterlvm.dlm.client.")) {
      return false;
    }
    for (ResourceInfo r : admin().locks(LOCKSPACE)) {
      if (r.getResource().equals(resource) && r.getWaitingCount() > 0) {
        return true;
      }
    }
    return false;
  }

  @Override
  public void close() {
    settle();
    sessions.values().forEach(DlmSession::close);
    sessions.clear();
    clients.forEach(DlmClient::close);
  }
}
