package io.clusterlvm.bench;

import java.util.LinkedHashMap;
import java.util.Map;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.locks.LockSupport;
import org.apache.zookeeper.CreateMode;
import org.apache.zookeeper.ZooDefs;
import org.apache.zookeeper.ZooKeeper;

/**
 * The floor: sequential create and delete of one znode (100 bytes, about a lock record's size)
 * through a raw ZooKeeper handle, each timed on its own and as a pair. Every tenth iteration also
 * times a create and a delete that each follow {@link #IDLE} of quiet, as a hand-off's write
 * follows the quiet of a queued waiter: ZooKeeper's threads then have to be woken, which
 * back-to-back writes spare them.
 */
final class BareWrites implements Measurement {
  private static final byte[] DATA = new byte[100];
  private static final long IDLE_NANOS = TimeUnit.MILLISECONDS.toNanos(2);
  private static final int IDLE_EVERY = 10;

  private final ZooKeeper zk;
  private final String path;
  private final Samples create = new Samples();
  private final Samples delete = new Samples();
  private final Samples one = new Samples();
  private final Samples pair = new Samples();
  private final Samples afterIdle = new Samples();

  /** {@code parent} must exist. */
  BareWrites(ZooKeeper zk, String parent) {
    this.zk = zk;
    this.path = parent + "/n";
  }

  @Override
  public String[] key() {
    return new String[] {"bare_zk_write"};
  }

  @Override
  public String label() {
    return "bare ZooKeeper create+delete";
  }

  @Override
  public void run(int iterations, boolean record) throws Exception {
    for (int i = 0; i < iterations; i++) {
      long t0 = System.nanoTime();
      zk.create(path, DATA, ZooDefs.Ids.OPEN_ACL_UNSAFE, CreateMode.PERSISTENT);
      long t1 = System.nanoTime();
      zk.delete(path, -1);
      long t2 = System.nanoTime();
      if (record) {
        create.add(t1 - t0);
        delete.add(t2 - t1);
        one.add(t1 - t0);
        one.add(t2 - t1);
        pair.add(t2 - t0);
      }
      if (i % IDLE_EVERY == 0) {
        LockSupport.parkNanos(IDLE_NANOS);
        long t3 = System.nanoTime();
        zk.create(path, DATA, ZooDefs.Ids.OPEN_ACL_UNSAFE, CreateMode.PERSISTENT);
        long t4 = System.nanoTime();
        LockSupport.parkNanos(IDLE_NANOS);
        long t5 = System.nanoTime();
        zk.delete(path, -1);
        long t6 = System.nanoTime();
        if (record) {
          afterIdle.add(t4 - t3);
          afterIdle.add(t6 - t5);
        }
      }
    }
  }

  @Override
  public Map<String, Object> summary() {
    Map<String, Object> m = new LinkedHashMap<>();
    m.put("create", create.summary());
    m.put("delete", delete.summary());
    m.put("one_write", one.summary());
    m.put("create_delete_pair", pair.summary());
    m.put("one_write_after_idle", afterIdle.summary());
    return m;
  }
}
