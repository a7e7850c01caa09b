package io.clusterlvm.bench;

import java.lang.management.ManagementFactory;
import java.lang.management.ThreadInfo;
import java.lang.management.ThreadMXBean;
import java.time.Duration;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.locks.LockSupport;

/**
 * Samples the dlm-server's engine thread ({@code dlm-engine}) while a window runs: where it spends
 * its time (idle on its queue, blocked in the ZooKeeper multi of a group commit, or working) and
 * how much CPU it burns. A cheap stand-in for a profiler: one stack sample every few milliseconds.
 *
 * <p>It runs during the Curator windows too (sampling the then idle engine), so that its own small
 * cost is the same for both systems.
 */
final class EngineProbe implements AutoCloseable {
  private static final Duration PERIOD = Duration.ofMillis(5);

  /** Samples and CPU time added up over several windows. */
  static final class Tally {
    private final Map<String, Integer> states = new LinkedHashMap<>();
    private final Map<String, Integer> working = new HashMap<>();
    private int samples;
    private long cpuNanos;
    private long wallNanos;
    private boolean found;

    Tally() {
      states.put("idle", 0);
      states.put("zookeeper", 0);
      states.put("working", 0);
    }

    synchronized void add(StackTraceElement[] stack) {
      samples++;
      String state = "working";
      for (StackTraceElement f : stack) {
        String where = f.getClassName() + "." + f.getMethodName();
        if (where.equals("java.util.concurrent.LinkedBlockingQueue.take")) {
          state = "idle";
          break;
        }
        if (where.startsWith("org.apache.zookeeper.ZooKeeper.multi")) {
          state = "zookeeper";
          break;
        }
      }
      states.merge(state, 1, Integer::sum);
      if (state.equals("working") && stack.length > 0) {
        // Name the work by the innermost frame of ours, and the frame it is in.
        String ours = "?";
        for (StackTraceElement f : stack) {
          if (f.getClassName().startsWith("io.clusterlvm.")) {
            ours = shortName(f);
            break;
          }
        }
        working.merge(ours + " <- " + shortName(stack[0]), 1, Integer::sum);
      }
    }

    synchronized void addTimes(long cpu, long wall) {
      found = true;
      cpuNanos += cpu;
      wallNanos += wall;
    }

    /** Shares of samples per state, engine CPU utilisation, and the top working frames. */
    synchronized Map<String, Object> summary() {
      Map<String, Object> m = new LinkedHashMap<>();
      if (!found) {
        m.put("engine_thread", "not found");
        return m;
      }
      m.put("samples", samples);
      for (Map.Entry<String, Integer> e : states.entrySet()) {
        m.put(
            e.getKey() + "_share",
            samples == 0 ? 0.0 : Samples.round2((double) e.getValue() / samples));
      }
      m.put(
          "engine_cpu_share", wallNanos == 0 ? 0.0 : Samples.round2((double) cpuNanos / wallNanos));
      List<String> top =
          working.entrySet().stream()
              .sorted(Map.Entry.<String, Integer>comparingByValue().reversed())
              .limit(6)
              .map(e -> e.getValue() + "x " + e.getKey())
              .toList();
      m.put("top_working_frames", top);
      return m;
    }

    private static String shortName(StackTraceElement f) {
      String c = f.getClassName();
      return c.substring(c.lastIndexOf('.') + 1) + "." + f.getMethodName();
    }
  }

  private final ThreadMXBean mx = ManagementFactory.getThreadMXBean();
  private final AtomicBoolean running = new AtomicBoolean(true);
  private final Tally tally;
  private final Thread sampler;
  private final long engineId;
  private final long cpu0;
  private final long wall0 = System.nanoTime();

  private EngineProbe(long engineId, Tally tally) {
    this.engineId = engineId;
    this.tally = tally;
    this.cpu0 = engineId < 0 ? 0 : mx.getThreadCpuTime(engineId);
    sampler = new Thread(this::run, "bench-engine-probe");
    sampler.setDaemon(true);
    sampler.start();
  }

  /** Starts sampling the live {@code dlm-engine} thread (there is one per leader in this JVM). */
  static EngineProbe start(Tally into) {
    long id = -1;
    for (Thread t : Thread.getAllStackTraces().keySet()) {
      if (t.getName().equals("dlm-engine") && t.isAlive()) {
        id = t.getId();
      }
    }
    return new EngineProbe(id, into);
  }

  private void run() {
    long next = System.nanoTime();
    while (running.get() && engineId >= 0) {
      ThreadInfo info = mx.getThreadInfo(engineId, 24);
      if (info == null) {
        return;
      }
      tally.add(info.getStackTrace());
      next += PERIOD.toNanos();
      long wait = next - System.nanoTime();
      if (wait > 0) {
        LockSupport.parkNanos(wait);
      }
    }
  }

  @Override
  public void close() {
    if (!running.getAndSet(false)) {
      return;
    }
    try {
      sampler.join(2_000);
    } catch (InterruptedException e) {
      Thread.currentThread().interrupt();
    }
    if (engineId >= 0) {
      long cpu = mx.getThreadCpuTime(engineId);
      if (cpu >= 0) {
        tally.addTimes(cpu - cpu0, System.nanoTime() - wall0);
      }
    }
  }
}
