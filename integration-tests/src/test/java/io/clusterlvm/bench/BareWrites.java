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
      long c = timedCreate();
      long d = timedDelete();
      if (record) {
        create.add(c);
        delete.add(d);
        one.add(c);
        one.add(d);
        pair.add(c + d);
      }
      if (i % IDLE_EVERY == 0) {
        LockSupport.parkNanos(IDLE_NANOS);
        c = timedCreate();
        LockSupport.parkNanos(IDLE_NANOS);
        d = timedDelete();
        if (record) {
          afterIdle.add(c);
          afterIdle.add(d);
        }
      }
    }
  }

  private long timedCreate() throws Exception {
    long t0 = System.nanoTime();
    zk.create(path, DATA, ZooDefs.Ids.OPEN_ACL_UNSAFE, CreateMode.PERSISTENT);
    return System.nanoTime() - t0;
  }

  private long timedDelete() throws Exception {
    long t0 = System.nanoTime();
    zk.delete(path, -1);
    return System.nanoTime() - t0;
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
