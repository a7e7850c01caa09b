package io.clusterlvm.bench;

import java.util.Map;

/** Acquire+release of one exclusive lock by one client that nobody else wants. */
final class Uncontended implements Measurement {
  private final LockSystem system;
  private final String name;
  private final LockSystem.Worker worker;
  private final Samples pairs = new Samples();
  private final Samples acquires = new Samples();
  private final Samples releases = new Samples();

  Uncontended(LockSystem system) throws Exception {
    this(system, system.name(), system.worker(0, "uncontended"));
  }

  /** {@code worker}'s lock, reported as {@code name}; a variant of {@code system}'s client. */
  Uncontended(LockSystem system, String name, LockSystem.Worker worker) {
    this.system = system;
    this.name = name;
    this.worker = worker;
  }

  @Override
  public String[] key() {
    return new String[] {"uncontended", name};
  }

  @Override
  public String label() {
    return "uncontended acquire+release, " + name;
  }

  @Override
  public void run(int iterations, boolean record) throws Exception {
    for (int i = 0; i < iterations; i++) {
      long t0 = System.nanoTime();
      worker.acquire();
      long t1 = System.nanoTime();
      worker.release();
      long t2 = System.nanoTime();
      if (record) {
        pairs.add(t2 - t0);
        acquires.add(t1 - t0);
        releases.add(t2 - t1);
      }
    }
    system.settle();
  }

  @Override
  public Map<String, Object> summary() {
    Map<String, Object> m = pairs.summary();
    m.put("acquire", acquires.summary());
    m.put("release", releases.summary());
    return m;
  }
}
