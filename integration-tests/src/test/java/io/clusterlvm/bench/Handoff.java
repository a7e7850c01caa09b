package io.clusterlvm.bench;

import java.time.Duration;
import java.util.Map;
import java.util.concurrent.ArrayBlockingQueue;
import java.util.concurrent.BlockingQueue;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.locks.LockSupport;

/**
 * A contended hand-off: A holds the lock and B waits for it (queued, its thread blocked); the time
 * from A's release call to the return of B's acquire, taken by B's thread the moment it returns.
 */
final class Handoff implements Measurement {
  private static final String RESOURCE = "handoff";
  private static final Duration QUEUE_LIMIT = Duration.ofSeconds(30);

  private final LockSystem system;
  private final LockSystem.Worker a;
  private final LockSystem.Worker b;
  private final Samples samples = new Samples();

  Handoff(LockSystem system) throws Exception {
    this.system = system;
    this.a = system.worker(0, RESOURCE);
    this.b = system.worker(1, RESOURCE);
  }

  @Override
  public String[] key() {
    return new String[] {"handoff", system.name()};
  }

  @Override
  public String label() {
    return "hand-off, " + system.name();
  }

  @Override
  public void run(int iterations, boolean record) throws Exception {
    BlockingQueue<Integer> go = new ArrayBlockingQueue<>(1);
    BlockingQueue<Object> granted = new ArrayBlockingQueue<>(1);
    Thread waiter =
        new Thread(
            () -> {
              try {
                for (int i = 0; i < iterations; i++) {
                  if (go.poll(60, TimeUnit.SECONDS) == null) {
                    return;
                  }
                  b.acquire();
                  long t1 = System.nanoTime();
                  b.release();
                  granted.put(t1);
                }
              } catch (Throwable e) {
                granted.offer(e);
              }
            },
            "bench-handoff-waiter");
    waiter.setDaemon(true);
    waiter.start();
    try {
      for (int i = 0; i < iterations; i++) {
        a.acquire();
        go.put(i);
        long deadline = System.nanoTime() + QUEUE_LIMIT.toNanos();
        while (!system.isQueued(RESOURCE, waiter)) {
          if (System.nanoTime() > deadline || !waiter.isAlive()) {
            throw new IllegalStateException(
                system.name()
                    + ": the waiter did not queue within "
                    + QUEUE_LIMIT
                    + ": "
                    + granted.peek());
          }
          LockSupport.parkNanos(200_000);
        }
        long t0 = System.nanoTime();
        a.release();
        Object r = granted.poll(60, TimeUnit.SECONDS);
        if (r instanceof Throwable e) {
          throw new IllegalStateException(system.name() + ": the waiter failed", e);
        }
        if (r == null) {
          throw new IllegalStateException(system.name() + ": no hand-off within 60 s");
        }
        if (record) {
          samples.add((Long) r - t0);
        }
      }
    } finally {
      waiter.interrupt();
      waiter.join(5_000);
    }
    system.settle();
  }

  @Override
  public Map<String, Object> summary() {
    return samples.summary();
  }
}
