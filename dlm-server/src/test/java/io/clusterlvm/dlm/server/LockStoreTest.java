package io.clusterlvm.dlm.server;

import static org.assertj.core.api.Assertions.assertThat;

import io.clusterlvm.dlm.engine.AcquireCommand;
import io.clusterlvm.dlm.engine.Effects;
import io.clusterlvm.dlm.engine.LockEngine;
import io.clusterlvm.dlm.engine.LockMode;
import io.clusterlvm.dlm.engine.LockView;
import io.clusterlvm.dlm.engine.Owner;
import io.clusterlvm.dlm.engine.ResourceKey;
import io.clusterlvm.dlm.engine.ResourceView;
import java.time.Clock;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;
import org.apache.curator.framework.CuratorFramework;
import org.apache.curator.test.TestingServer;
import org.apache.zookeeper.Op;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

/**
 * The lock table's round trip through ZooKeeper: writes sent several at a time (as the leader
 * pipelines them) and a load that reads in many multi requests give back exactly the table.
 */
@Timeout(value = 120, unit = TimeUnit.SECONDS)
class LockStoreTest {
  private static final ZkPaths PATHS = new ZkPaths("/store");

  private TestingServer zk;
  private CuratorFramework curator;

  @BeforeEach
  void start() throws Exception {
    zk = new TestingServer();
    curator = ServerTestSupport.connected(zk);
  }

  @AfterEach
  void stop() throws Exception {
    curator.close();
    zk.close();
  }

  /**
   * A batch too big for one transaction is written in several, which ZooKeeper applies one by one:
   * a joining node is on record before its locks, and a leaving node is on record as gone only with
   * the last, so that a failure between them leaves nothing a retry can't finish.
   */
  @Test
  void aSplitBatchRecordsAJoinFirstAndALeaveLast() throws Exception {
    LockStore store = new LockStore(curator, PATHS);
    LockEngine engine = new LockEngine(store.takeOver("s1"), Clock.systemUTC());
    String nodePath = PATHS.node("node-a");
    Effects joined = new Effects();
    Owner a = joinHolding(engine, 30_000, joined);
    List<List<Op>> join = store.transactions(joined, engine);
    assertThat(join).hasSizeGreaterThan(1);
    assertThat(join.get(0).get(0).getPath()).isEqualTo(nodePath);

    Effects left = new Effects();
    engine.leave(a, left);
    List<List<Op>> leave = store.transactions(left, engine);
    assertThat(leave).hasSizeGreaterThan(1);
    assertThat(leave.get(leave.size() - 1)).last().extracting(Op::getPath).isEqualTo(nodePath);
    assertThat(leave.subList(0, leave.size() - 1))
        .allSatisfy(t -> assertThat(t).extracting(Op::getPath).doesNotContain(nodePath));
  }

  /**
   * A split leave whose first transaction fails sends nothing more: sent back to back, its last one
   * would record the node as gone while the locks of the failed one stayed on record.
   */
  @Test
  void aSplitLeaveStopsAtItsFirstFailedTransaction() throws Exception {
    LockStore store = new LockStore(curator, PATHS);
    LockEngine engine = new LockEngine(store.takeOver("s1"), Clock.systemUTC());
    Effects joined = new Effects();
    Owner a = joinHolding(engine, 30_000, joined);
    store.writeAsync(joined, engine).get(60, TimeUnit.SECONDS);
    String nodePath = PATHS.node("node-a");
    int nodeVersion = curator.checkExists().forPath(nodePath).getVersion();

    Effects left = new Effects();
    engine.leave(a, left);
    List<ResourceKey> released = List.copyOf(left.dirtyResources());
    // Somebody else's hand in ZooKeeper (or a store that believes wrongly what is there): the
    // first transaction deletes a record that is already gone, and fails.
    curator.delete().forPath(PATHS.resource(released.get(0)));

    assertThat(store.writeAsync(left, engine)).failsWithin(60, TimeUnit.SECONDS);
    assertThat(curator.checkExists().forPath(nodePath).getVersion())
        .as("the node is not recorded as gone")
        .isEqualTo(nodeVersion);
    assertThat(curator.checkExists().forPath(PATHS.resource(released.get(released.size() - 1))))
        .as("a later transaction was not sent")
        .isNotNull();
  }

  @Test
  void pipelinedWritesThenALoadInManyRequestsGiveBackTheTable() throws Exception {
    LockStore store = new LockStore(curator, PATHS);
    LockEngine engine = new LockEngine(store.takeOver("s1"), Clock.systemUTC());
    Effects joined = new Effects();
    Owner a = new Owner("node-a", engine.join("node-a", "boot-a", joined).incarnation());
    Owner b = new Owner("node-b", engine.join("node-b", "boot-b", joined).incarnation());
    store.writeAsync(joined, engine).get();

    // 2,000 resources (more than one read request holds) in 3 lockspaces, written in batches of
    // 50 with every write in flight at once; then some are released again (deletes), some get a
    // waiter (updates), all before the first write is known to be durable.
    List<CompletableFuture<Void>> writes = new ArrayList<>();
    int n = 2_000;
    for (int from = 0; from < n; from += 50) {
      Effects fx = new Effects();
      for (int i = from; i < from + 50; i++) {
        engine.acquire(acquire("r" + i, a, key(i), LockMode.EX), fx);
      }
      writes.add(store.writeAsync(fx, engine));
    }
    Effects changes = new Effects();
    for (int i = 0; i < n; i += 10) {
      long id = engine.resource(key(i)).orElseThrow().granted().get(0).lockId();
      engine.release(a, id, null, changes);
    }
    for (int i = 5; i < n; i += 10) {
      engine.acquire(acquire("w" + i, b, key(i), LockMode.PR), changes);
    }
    for (int i = 3; i < n; i += 10) { // a conversion its caller may abandon is kept with the lock
      long id = engine.resource(key(i)).orElseThrow().granted().get(0).lockId();
      engine.convert(a, id, LockMode.PR, false, null, "conv-" + i, changes);
    }
    writes.add(store.writeAsync(changes, engine));
    CompletableFuture.allOf(writes.toArray(CompletableFuture[]::new)).get(60, TimeUnit.SECONDS);

    LockStore reader = new LockStore(curator, PATHS);
    reader.takeOver("s2");
    List<ResourceView> read = new ArrayList<>();
    ServerTestSupport.Loaded loaded = ServerTestSupport.loadAll(reader, read::add);

    assertThat(loaded.nodes())
        .extracting(v -> v.node())
        .containsExactlyInAnyOrder("node-a", "node-b");
    assertThat(loaded.resources()).isEqualTo(n - n / 10);
    assertThat(sorted(read)).usingRecursiveComparison().isEqualTo(sorted(engine.resources(null)));
    LockEngine rebuilt = new LockEngine(2, Clock.systemUTC());
    read.forEach(rebuilt::restoreResource);
    rebuilt.restoreNodes(loaded.nodes());
    assertThat(rebuilt.lockCount()).isEqualTo(engine.lockCount());
    assertThat(rebuilt.resource(key(3)).orElseThrow().granted().get(0).lastConversion())
        .isEqualTo(new LockView.Conversion("conv-3", LockMode.EX));
    assertThat(rebuilt.resource(key(5)).orElseThrow().waiting())
        .singleElement()
        .satisfies(w -> assertThat(w.owner()).isEqualTo(b));
  }

  /** node-a joins and takes EX on {@code locks} resources: a batch too big for one transaction. */
  private static Owner joinHolding(LockEngine engine, int locks, Effects fx) {
    Owner a = new Owner("node-a", engine.join("node-a", "boot-a", fx).incarnation());
    for (int i = 0; i < locks; i++) {
      engine.acquire(
          new AcquireCommand(
              "r" + i, a, 0, new ResourceKey("ls", "res-" + i), LockMode.EX, false, true, false),
          fx);
    }
    return a;
  }

  private static ResourceKey key(int i) {
    return new ResourceKey("ls" + (i % 3), "res-" + i);
  }

  private static AcquireCommand acquire(String requestId, Owner o, ResourceKey k, LockMode m) {
    return new AcquireCommand(requestId, o, 0, k, m, false, true, false);
  }

  private static List<ResourceView> sorted(List<ResourceView> views) {
    List<ResourceView> out = new ArrayList<>(views);
    out.sort(
        Comparator.comparing((ResourceView v) -> v.key().lockspace())
            .thenComparing(v -> v.key().resource()));
    return out;
  }
}
