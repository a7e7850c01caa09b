package io.clusterlvm.dlm.server;

import com.google.protobuf.InvalidProtocolBufferException;
import io.clusterlvm.dlm.engine.Effects;
import io.clusterlvm.dlm.engine.LockEngine;
import io.clusterlvm.dlm.engine.NodeView;
import io.clusterlvm.dlm.engine.ResourceKey;
import io.clusterlvm.dlm.engine.ResourceView;
import io.clusterlvm.dlm.store.EpochRecord;
import io.clusterlvm.dlm.store.NodeRecord;
import io.clusterlvm.dlm.store.ResourceRecord;
import java.util.ArrayList;
import java.util.Collections;
import java.util.HashSet;
import java.util.List;
import java.util.Optional;
import java.util.Set;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ConcurrentLinkedQueue;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.Semaphore;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicReference;
import org.apache.curator.framework.CuratorFramework;
import org.apache.zookeeper.CreateMode;
import org.apache.zookeeper.KeeperException;
import org.apache.zookeeper.Op;
import org.apache.zookeeper.OpResult;
import org.apache.zookeeper.ZooDefs;
import org.apache.zookeeper.ZooKeeper;
import org.apache.zookeeper.data.Stat;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * The lock table's records in ZooKeeper. Used only by the leader, from its engine thread.
 *
 * <p>Every write is one multi-op transaction that starts with a version check of the epoch znode
 * this leader wrote when it took over. A leader that was deposed (another server bumped the epoch)
 * can therefore never write again, whatever it still believes.
 *
 * <p>Writes use the raw ZooKeeper handle without retries: after a connection loss the outcome of a
 * multi is unknown, so the caller must reload the table rather than guess.
 */
final class LockStore {
  private static final Logger LOG = LoggerFactory.getLogger(LockStore.class);

  /** Stay well below ZooKeeper's default 1 MB jute.maxbuffer per request. */
  private static final int MAX_MULTI_BYTES = 700 * 1024;

  private static final int MAX_READS_IN_FLIGHT = 2000;

  /** The leader may no longer write: another server took over. */
  static final class NotLeaderException extends Exception {
    NotLeaderException(String message) {
      super(message);
    }
  }

  /** The write's outcome is unknown or it failed; the in-memory table must be reloaded. */
  static final class StoreUnavailableException extends Exception {
    StoreUnavailableException(String message, Throwable cause) {
      super(message, cause);
    }
  }

  record Loaded(List<NodeView> nodes, List<ResourceView> resources) {}

  private final CuratorFramework curator;
  private final ZkPaths paths;
  private final String electionNode;

  private long epoch;
  private int epochVersion = -1;
  private final Set<ResourceKey> persisted = new HashSet<>();

  /** Lockspace and bucket znodes known to exist, by path. */
  private final Set<String> parentsPresent = new HashSet<>();

  private final Set<String> nodesPresent = new HashSet<>();

  LockStore(CuratorFramework curator, ZkPaths paths) {
    this(curator, paths, null);
  }

  /**
   * @param electionNode the leader-election znode this server won with, or null (tests): {@link
   *     #takeOver} succeeds only while it exists, i.e. while the election this server won still
   *     stands
   */
  LockStore(CuratorFramework curator, ZkPaths paths, String electionNode) {
    this.curator = curator;
    this.paths = paths;
    this.electionNode = electionNode;
  }

  long epoch() {
    return epoch;
  }

  /**
   * Bumps the epoch (the leadership fence) and returns the new one. The bump is checked against
   * this server's election node in the same transaction: a server that lost its ZooKeeper session,
   * or whose election was reset, gets {@link NotLeaderException} instead of deposing the leader
   * that replaced it (it may try, e.g. when it reloads after a failed write while its step-down is
   * still on its way).
   */
  long takeOver(String serverId) throws Exception {
    for (String p : List.of(paths.dlm(), paths.nodes(), paths.lockspaces())) {
      try {
        curator.create().creatingParentsIfNeeded().forPath(p, new byte[0]);
      } catch (KeeperException.NodeExistsException e) {
        // already there
      }
    }
    while (true) {
      Stat stat = new Stat();
      byte[] data;
      try {
        data = curator.getData().storingStatIn(stat).forPath(paths.epoch());
      } catch (KeeperException.NoNodeException e) {
        try {
          fencedByElection(
              Op.create(
                  paths.epoch(),
                  epochRecord(1, serverId),
                  ZooDefs.Ids.OPEN_ACL_UNSAFE,
                  CreateMode.PERSISTENT));
          epoch = 1;
          epochVersion = 0; // a new znode
          return epoch;
        } catch (KeeperException.NodeExistsException raced) {
          continue;
        }
      }
      long next = EpochRecord.parseFrom(data).getEpoch() + 1;
      try {
        OpResult written =
            fencedByElection(
                Op.setData(paths.epoch(), epochRecord(next, serverId), stat.getVersion()));
        epoch = next;
        epochVersion = ((OpResult.SetDataResult) written).getStat().getVersion();
        return epoch;
      } catch (KeeperException.BadVersionException raced) {
        // another server bumped it first; read again
      }
    }
  }

  /**
   * Runs {@code op} in one transaction with a check that the election node exists; returns op's
   * result, throws op's own error, or NotLeaderException if the election node is gone.
   */
  private OpResult fencedByElection(Op op) throws Exception {
    List<Op> ops = new ArrayList<>(2);
    if (electionNode != null) {
      ops.add(Op.check(electionNode, -1));
    }
    ops.add(op);
    try {
      List<OpResult> results = curator.getZookeeperClient().getZooKeeper().multi(ops);
      return results.get(results.size() - 1);
    } catch (KeeperException e) {
      List<OpResult> results = e.getResults();
      if (electionNode != null
          && results != null
          && !results.isEmpty()
          && results.get(0) instanceof OpResult.ErrorResult err
          && err.getErr() == KeeperException.Code.NONODE.intValue()) {
        throw new NotLeaderException(
            "election node " + electionNode + " is gone: this server no longer leads");
      }
      throw e; // op's own error (multi throws the first failed op's code)
    }
  }

  private static byte[] epochRecord(long epoch, String serverId) {
    return EpochRecord.newBuilder()
        .setEpoch(epoch)
        .setServerId(serverId)
        .setSinceEpochMillis(System.currentTimeMillis())
        .build()
        .toByteArray();
  }

  /** Reads every node and resource record. Reads are pipelined: one round trip is not one read. */
  Loaded load() throws Exception {
    persisted.clear();
    parentsPresent.clear();
    nodesPresent.clear();
    ZooKeeper zk = curator.getZookeeperClient().getZooKeeper();
    List<NodeView> nodes = Collections.synchronizedList(new ArrayList<>());
    List<ResourceView> resources = Collections.synchronizedList(new ArrayList<>());
    ConcurrentLinkedQueue<ResourceKey> keys = new ConcurrentLinkedQueue<>();
    AtomicReference<Exception> failure = new AtomicReference<>();
    Semaphore inFlight = new Semaphore(MAX_READS_IN_FLIGHT);

    List<String> nodeNames = zk.getChildren(paths.nodes(), false);
    List<String> lockspacePaths = children(zk, List.of(paths.lockspaces()), inFlight, failure);
    List<String> bucketPaths = children(zk, lockspacePaths, inFlight, failure);
    List<String> resourcePaths = children(zk, bucketPaths, inFlight, failure);
    if (failure.get() != null) {
      throw failure.get();
    }
    parentsPresent.addAll(lockspacePaths);
    parentsPresent.addAll(bucketPaths);

    List<String> all = new ArrayList<>();
    nodeNames.forEach(n -> all.add(paths.nodes() + "/" + n));
    all.addAll(resourcePaths);
    CountDownLatch read = new CountDownLatch(all.size());
    for (String p : all) {
      inFlight.acquire();
      zk.getData(
          p,
          false,
          (rc, path, ctx, data, stat) -> {
            try {
              if (rc == KeeperException.Code.OK.intValue()) {
                if (path.startsWith(paths.nodes() + "/")) {
                  nodes.add(Records.fromRecord(NodeRecord.parseFrom(data)));
                } else {
                  ResourceView r = Records.fromRecord(ResourceRecord.parseFrom(data));
                  resources.add(r);
                  keys.add(r.key());
                }
              } else if (rc != KeeperException.Code.NONODE.intValue()) {
                failure.compareAndSet(null, KeeperException.create(KeeperException.Code.get(rc)));
              }
            } catch (InvalidProtocolBufferException e) {
              failure.compareAndSet(null, new IllegalStateException("corrupt record " + path, e));
            } finally {
              inFlight.release();
              read.countDown();
            }
          },
          null);
    }
    await(read);
    if (failure.get() != null) {
      throw failure.get();
    }
    persisted.addAll(keys);
    nodes.forEach(n -> nodesPresent.add(n.node()));
    return new Loaded(List.copyOf(nodes), List.copyOf(resources));
  }

  /** The paths of all children of {@code parents}, listed with pipelined async calls. */
  private static List<String> children(
      ZooKeeper zk, List<String> parents, Semaphore inFlight, AtomicReference<Exception> failure)
      throws InterruptedException {
    List<String> out = Collections.synchronizedList(new ArrayList<>());
    CountDownLatch listed = new CountDownLatch(parents.size());
    for (String parent : parents) {
      inFlight.acquire();
      zk.getChildren(
          parent,
          false,
          (rc, path, ctx, names) -> {
            if (rc == KeeperException.Code.OK.intValue()) {
              names.forEach(c -> out.add(path + "/" + c));
            } else if (rc != KeeperException.Code.NONODE.intValue()) {
              failure.compareAndSet(null, KeeperException.create(KeeperException.Code.get(rc)));
            }
            inFlight.release();
            listed.countDown();
          },
          null);
    }
    await(listed);
    return new ArrayList<>(out);
  }

  private static void await(CountDownLatch latch) throws InterruptedException {
    if (!latch.await(5, TimeUnit.MINUTES)) {
      throw new IllegalStateException("ZooKeeper did not answer the reads within 5 minutes");
    }
  }

  /**
   * Writes every record {@code fx} marks dirty, as the engine now has it, in one transaction (or
   * several if it would not fit in one request; each is fenced by the epoch check). Blocks.
   */
  void write(Effects fx, LockEngine engine) throws NotLeaderException, StoreUnavailableException {
    try {
      writeAsync(fx, engine).get();
    } catch (InterruptedException e) {
      Thread.currentThread().interrupt();
      throw new StoreUnavailableException("interrupted during a ZooKeeper write", e);
    } catch (ExecutionException e) {
      if (e.getCause() instanceof NotLeaderException nl) {
        throw nl;
      }
      if (e.getCause() instanceof StoreUnavailableException su) {
        throw su;
      }
      throw new StoreUnavailableException("ZooKeeper write failed: " + e.getCause(), e.getCause());
    }
  }

  /**
   * Sends the write of every record {@code fx} marks dirty, as the engine has it at this moment,
   * and returns at once; the future completes when ZooKeeper has committed it, or fails with {@link
   * NotLeaderException} or {@link StoreUnavailableException}.
   *
   * <p>The leader keeps several writes in flight. That is safe because ZooKeeper applies one
   * session's requests in the order they were sent and answers them in that order, and because
   * after any failure the caller reloads the table: which records exist is therefore tracked as if
   * every write sent so far succeeds, and {@link #load} resets it from what ZooKeeper holds.
   */
  CompletableFuture<Void> writeAsync(Effects fx, LockEngine engine) {
    List<List<Op>> transactions = new ArrayList<>();
    List<Op> ops = new ArrayList<>();
    int bytes = 0;
    for (String node : fx.dirtyNodes()) {
      Optional<NodeView> n = engine.node(node);
      if (n.isEmpty()) {
        continue;
      }
      byte[] data = Records.toRecord(n.get()).toByteArray();
      String path = paths.node(node);
      ops.add(
          nodesPresent.add(node)
              ? Op.create(path, data, ZooDefs.Ids.OPEN_ACL_UNSAFE, CreateMode.PERSISTENT)
              : Op.setData(path, data, -1));
      bytes += data.length + path.length();
    }
    for (ResourceKey key : fx.dirtyResources()) {
      Optional<ResourceView> r = engine.resource(key);
      String path = paths.resource(key);
      if (r.isPresent()) {
        for (String parent : List.of(paths.lockspace(key.lockspace()), paths.bucket(key))) {
          if (parentsPresent.add(parent)) {
            ops.add(
                Op.create(parent, new byte[0], ZooDefs.Ids.OPEN_ACL_UNSAFE, CreateMode.PERSISTENT));
          }
        }
        byte[] data = Records.toRecord(r.get()).toByteArray();
        ops.add(
            persisted.add(key)
                ? Op.create(path, data, ZooDefs.Ids.OPEN_ACL_UNSAFE, CreateMode.PERSISTENT)
                : Op.setData(path, data, -1));
        bytes += data.length + path.length();
      } else if (persisted.remove(key)) {
        ops.add(Op.delete(path, -1));
        bytes += path.length();
      }
      if (bytes > MAX_MULTI_BYTES) {
        transactions.add(ops);
        ops = new ArrayList<>();
        bytes = 0;
      }
    }
    if (!ops.isEmpty()) {
      transactions.add(ops);
    }
    if (transactions.isEmpty()) {
      return CompletableFuture.completedFuture(null);
    }
    List<CompletableFuture<Void>> sent = new ArrayList<>(transactions.size());
    for (List<Op> t : transactions) {
      sent.add(commit(t));
    }
    return sent.size() == 1
        ? sent.get(0)
        : CompletableFuture.allOf(sent.toArray(CompletableFuture[]::new));
  }

  private CompletableFuture<Void> commit(List<Op> ops) {
    List<Op> fenced = new ArrayList<>(ops.size() + 1);
    fenced.add(Op.check(paths.epoch(), epochVersion));
    fenced.addAll(ops);
    CompletableFuture<Void> done = new CompletableFuture<>();
    long ep = epoch;
    try {
      curator
          .getZookeeperClient()
          .getZooKeeper()
          .multi(
              fenced,
              (rc, path, ctx, results) -> {
                if (rc == KeeperException.Code.OK.intValue()) {
                  done.complete(null);
                } else {
                  done.completeExceptionally(failure(rc, results, fenced.size(), ep));
                }
              },
              null);
    } catch (Exception e) {
      done.completeExceptionally(new StoreUnavailableException("ZooKeeper write failed: " + e, e));
    }
    return done;
  }

  private static Exception failure(int rc, List<OpResult> results, int ops, long epoch) {
    // On an op's failure ZooKeeper passes every op's result, the check of the epoch first.
    if (results != null
        && !results.isEmpty()
        && results.get(0) instanceof OpResult.ErrorResult err) {
      if (err.getErr() == KeeperException.Code.BADVERSION.intValue()) {
        return new NotLeaderException(
            "epoch " + epoch + " is no longer current: another dlm-server took over");
      }
      if (err.getErr() == KeeperException.Code.NONODE.intValue()) {
        return new NotLeaderException("epoch record is gone");
      }
    }
    KeeperException.Code code = KeeperException.Code.get(rc);
    LOG.warn("ZooKeeper transaction of {} ops failed: {}", ops, code);
    return new StoreUnavailableException(
        "ZooKeeper write failed: " + code, KeeperException.create(code));
  }
}
