package io.clusterlvm.dlm.server;

import com.google.protobuf.InvalidProtocolBufferException;
import io.clusterlvm.dlm.engine.Effects;
import io.clusterlvm.dlm.engine.LockEngine;
import io.clusterlvm.dlm.engine.NodeState;
import io.clusterlvm.dlm.engine.NodeView;
import io.clusterlvm.dlm.engine.ResourceKey;
import io.clusterlvm.dlm.engine.ResourceView;
import io.clusterlvm.dlm.store.EpochRecord;
import io.clusterlvm.dlm.store.NodeRecord;
import io.clusterlvm.dlm.store.ResourceRecord;
import java.util.ArrayList;
import java.util.HashSet;
import java.util.List;
import java.util.Optional;
import java.util.Set;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.Semaphore;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicReference;
import java.util.function.Consumer;
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
 * The lock table's records in ZooKeeper. Used only by the leader: from its engine thread, except
 * {@link #readLockspace}, which the loader threads call.
 *
 * <p>Every write is one multi-op transaction that starts with a version check of the epoch znode
 * this leader wrote when it took over. A leader that was deposed (another server bumped the epoch)
 * can therefore never write again, whatever it still believes.
 *
 * <p>Writes use the raw ZooKeeper handle without retries: after a connection loss the outcome of a
 * multi is unknown, so the caller must reload the table rather than guess.
 *
 * <p>Not final: a test holds back the completion of its writes, to see what goes out before a write
 * is durable.
 */
class LockStore {
  private static final Logger LOG = LoggerFactory.getLogger(LockStore.class);

  /** Stay well below ZooKeeper's default 1 MB jute.maxbuffer per request. */
  private static final int MAX_MULTI_BYTES = 700 * 1024;

  /**
   * What an op costs in a multi request besides its path and data: the op's header, the lengths,
   * the version or flags, and a create's ACL come to ~52 bytes. Not counting them let a split batch
   * of small records (30,000 locks of a joining node) exceed 1 MB, which ZooKeeper answers by
   * dropping the connection, on every retry.
   */
  private static final int OP_OVERHEAD_BYTES = 64;

  /**
   * Reads per read-only multi request when loading. A record is at most ZooKeeper's request limit
   * (1 MB), so an answer is at most this many MB: the leader's client accepts answers that large
   * ({@link #MAX_ANSWER_BYTES}). Records are ~100 bytes in practice.
   */
  private static final int READS_PER_REQUEST = 500;

  /** The largest answer the leader's ZooKeeper client accepts (its jute.maxbuffer). */
  static final int MAX_ANSWER_BYTES = (READS_PER_REQUEST + 1) << 20;

  private static final int REQUESTS_IN_FLIGHT = 8;

  /** A write that did not (or may not have) happened: one of the two kinds below. */
  abstract static sealed class WriteFailure extends Exception
      permits NotLeaderException, StoreUnavailableException {
    WriteFailure(String message, Throwable cause) {
      super(message, cause);
    }
  }

  /** The leader may no longer write: another server took over. */
  static final class NotLeaderException extends WriteFailure {
    NotLeaderException(String message) {
      super(message, null);
    }
  }

  /** The write's outcome is unknown or it failed; the in-memory table must be reloaded. */
  static final class StoreUnavailableException extends WriteFailure {
    StoreUnavailableException(String message, Throwable cause) {
      super(message, cause);
    }
  }

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

  /**
   * Starts a new load: forgets which znodes exist, reads the node records and returns them. The
   * lockspaces are read next ({@link #readLockspace}) and each is marked once read ({@link
   * #markLoaded}). Engine thread (or before it starts).
   */
  List<NodeView> loadNodes() throws Exception {
    persisted.clear();
    parentsPresent.clear();
    nodesPresent.clear();
    ZooKeeper zk = curator.getZookeeperClient().getZooKeeper();
    List<String> nodePaths = children(zk, List.of(paths.nodes()));
    List<NodeView> nodes = new ArrayList<>(nodePaths.size());
    readAll(
        zk,
        nodePaths.stream().map(Op::getData).toList(),
        (i, result) -> {
          if (result instanceof OpResult.GetDataResult r) {
            try {
              nodes.add(Records.fromRecord(NodeRecord.parseFrom(r.getData())));
            } catch (InvalidProtocolBufferException e) {
              throw new IllegalStateException("corrupt record " + nodePaths.get(i), e);
            }
          }
        });
    nodes.forEach(n -> nodesPresent.add(n.node()));
    return nodes;
  }

  /** The names of the lockspaces that have records. */
  List<String> listLockspaces() throws Exception {
    List<String> names = new ArrayList<>();
    for (String child : curator.getChildren().forPath(paths.lockspaces())) {
      names.add(ZkPaths.decode(child));
    }
    return names;
  }

  /** A record that can't be made sense of: reading it again gives the same. */
  static final class CorruptRecordException extends IllegalStateException {
    CorruptRecordException(String path, Exception cause) {
      super("corrupt record " + path + ": " + cause.getMessage(), cause);
    }
  }

  /** What {@link #readLockspace} read: the resources, and the znodes that hold them. */
  record LockspaceRead(String lockspace, List<String> parents, List<ResourceKey> keys) {}

  /**
   * Reads the records of one lockspace: lists its buckets and their resources, then reads the
   * records in read-only multi requests of {@link #READS_PER_REQUEST} ops, several in flight
   * (ZooKeeper's cost is per request far more than per record). Safe to call from any thread, for
   * several lockspaces at once: it touches none of this store's state.
   *
   * @param sink takes the records of each answer as it arrives, on ZooKeeper's (single) event
   *     thread; everything it did is visible when this returns
   */
  LockspaceRead readLockspace(String lockspace, Consumer<List<ResourceView>> sink)
      throws Exception {
    ZooKeeper zk = curator.getZookeeperClient().getZooKeeper();
    String lockspacePath = paths.lockspace(lockspace);
    List<String> bucketPaths = children(zk, List.of(lockspacePath));
    List<String> resourcePaths = children(zk, bucketPaths);
    List<ResourceKey> keys = new ArrayList<>(resourcePaths.size());
    List<ResourceView> answer = new ArrayList<>();
    readAll(
        zk,
        resourcePaths.stream().map(Op::getData).toList(),
        new ReadResults() {
          @Override
          public void accept(int i, OpResult result) {
            if (!(result instanceof OpResult.GetDataResult r)) {
              return; // deleted since it was listed (not by a leader: a tool or an operator)
            }
            ResourceView v;
            try {
              v = Records.fromRecord(ResourceRecord.parseFrom(r.getData()));
            } catch (InvalidProtocolBufferException | RuntimeException e) {
              throw new CorruptRecordException(resourcePaths.get(i), e);
            }
            answer.add(v);
            keys.add(v.key());
          }

          @Override
          public void answered() {
            if (!answer.isEmpty()) {
              sink.accept(List.copyOf(answer));
              answer.clear();
            }
          }
        });
    List<String> parents = new ArrayList<>(bucketPaths.size() + 1);
    parents.add(lockspacePath);
    parents.addAll(bucketPaths);
    return new LockspaceRead(lockspace, parents, keys);
  }

  /** Records that what {@code read} found exists; engine thread, once its records are restored. */
  void markLoaded(LockspaceRead read) {
    parentsPresent.addAll(read.parents());
    persisted.addAll(read.keys());
  }

  /** The paths of all children of {@code parents}; a parent that is gone has none. */
  private static List<String> children(ZooKeeper zk, List<String> parents) throws Exception {
    List<String> out = new ArrayList<>();
    readAll(
        zk,
        parents.stream().map(Op::getChildren).toList(),
        (i, result) -> {
          if (result instanceof OpResult.GetChildrenResult r) {
            for (String c : r.getChildren()) {
              out.add(parents.get(i) + "/" + c);
            }
          }
        });
    return out;
  }

  /** Takes the result of read op {@code index}; runs on ZooKeeper's event thread. */
  @FunctionalInterface
  private interface ReadResults {
    void accept(int index, OpResult result);

    /** After the results of one request. */
    default void answered() {}
  }

  /**
   * Runs read ops in read-only multi requests, {@link #REQUESTS_IN_FLIGHT} at a time, and passes
   * each result to {@code results}, in order, on ZooKeeper's (single) event thread; returns when
   * all are in. An op on a znode that is gone yields an ErrorResult (NONODE); any other failure
   * throws.
   */
  private static void readAll(ZooKeeper zk, List<Op> ops, ReadResults out) throws Exception {
    AtomicReference<Exception> failure = new AtomicReference<>();
    Semaphore inFlight = new Semaphore(REQUESTS_IN_FLIGHT);
    CountDownLatch answered =
        new CountDownLatch((ops.size() + READS_PER_REQUEST - 1) / READS_PER_REQUEST);
    for (int from = 0; from < ops.size(); from += READS_PER_REQUEST) {
      int first = from;
      List<Op> request = ops.subList(from, Math.min(from + READS_PER_REQUEST, ops.size()));
      inFlight.acquire();
      zk.multi(
          request,
          (rc, path, ctx, results) -> {
            try {
              if (results == null) {
                failure.compareAndSet(null, KeeperException.create(KeeperException.Code.get(rc)));
                return;
              }
              for (int i = 0; i < results.size(); i++) {
                OpResult r = results.get(i);
                if (r instanceof OpResult.ErrorResult e
                    && e.getErr() != KeeperException.Code.NONODE.intValue()) {
                  failure.compareAndSet(
                      null, KeeperException.create(KeeperException.Code.get(e.getErr())));
                  return;
                }
                out.accept(first + i, r);
              }
              out.answered();
            } catch (RuntimeException e) {
              failure.compareAndSet(null, e);
            } catch (Error e) {
              // e.g. out of memory while rebuilding: the load must not look complete
              failure.compareAndSet(null, new IllegalStateException("loading failed: " + e, e));
              throw e;
            } finally {
              inFlight.release();
              answered.countDown();
            }
          },
          null);
    }
    await(answered);
    if (failure.get() != null) {
      throw failure.get();
    }
  }

  private static void await(CountDownLatch latch) throws InterruptedException {
    if (!latch.await(5, TimeUnit.MINUTES)) {
      throw new IllegalStateException("ZooKeeper did not answer the reads within 5 minutes");
    }
  }

  /**
   * Sends the write of every record {@code fx} marks dirty, as the engine has it at this moment,
   * and returns at once (but for a split batch, see below); the future completes when ZooKeeper has
   * committed it, or fails with {@link NotLeaderException} or {@link StoreUnavailableException}.
   *
   * <p>The leader keeps several writes in flight. That is safe because ZooKeeper applies one
   * session's requests in the order they were sent and answers them in that order, and because
   * after any failure the caller reloads the table: which records exist is therefore tracked as if
   * every write sent so far succeeds, and {@link #loadNodes} and {@link #markLoaded} reset it from
   * what ZooKeeper holds.
   *
   * <p>A batch too big for one transaction is the exception: each of its transactions but the last
   * is sent only once the one before it committed, and this call waits for that. Sent back to back,
   * a later one could commit after an earlier one failed (a leave's last transaction, which records
   * the node as gone, without the one that deletes its locks), leaving on record locks that no
   * retry could release. Waiting here, on the leader's thread, also keeps every later write behind
   * the whole batch.
   */
  CompletableFuture<Void> writeAsync(Effects fx, LockEngine engine) {
    List<List<Op>> transactions = transactions(fx, engine);
    if (transactions.isEmpty()) {
      return CompletableFuture.completedFuture(null);
    }
    for (List<Op> t : transactions.subList(0, transactions.size() - 1)) {
      try {
        commit(t).get();
      } catch (ExecutionException e) {
        return CompletableFuture.failedFuture(e.getCause()); // the rest is not sent
      } catch (InterruptedException e) {
        Thread.currentThread().interrupt(); // closing: whether it committed is for a reload
        return CompletableFuture.failedFuture(
            new StoreUnavailableException("interrupted while writing a split batch", e));
      }
    }
    return commit(transactions.get(transactions.size() - 1));
  }

  /**
   * The ops that write what {@code fx} marks dirty, split into transactions that fit a request.
   * Members' node records go first and records of nodes that left go last: if a later transaction
   * of a split batch fails, no lock is on record under an incarnation that is not, and no node is
   * on record as gone while some of its locks are still held (a retried leave would be refused).
   */
  List<List<Op>> transactions(Effects fx, LockEngine engine) {
    Transactions t = new Transactions();
    addNodes(fx, engine, true, t);
    for (ResourceKey key : fx.dirtyResources()) {
      Optional<ResourceView> r = engine.resource(key);
      String path = paths.resource(key);
      if (r.isPresent()) {
        for (String parent : List.of(paths.lockspace(key.lockspace()), paths.bucket(key))) {
          if (parentsPresent.add(parent)) {
            t.add(
                Op.create(parent, new byte[0], ZooDefs.Ids.OPEN_ACL_UNSAFE, CreateMode.PERSISTENT),
                0);
          }
        }
        byte[] data = Records.toRecord(r.get()).toByteArray();
        t.add(
            persisted.add(key)
                ? Op.create(path, data, ZooDefs.Ids.OPEN_ACL_UNSAFE, CreateMode.PERSISTENT)
                : Op.setData(path, data, -1),
            data.length);
      } else if (persisted.remove(key)) {
        t.add(Op.delete(path, -1), 0);
      }
    }
    addNodes(fx, engine, false, t);
    return t.done();
  }

  /** The dirty node records of members ({@code members}), or of nodes that left. */
  private void addNodes(Effects fx, LockEngine engine, boolean members, Transactions t) {
    for (String node : fx.dirtyNodes()) {
      Optional<NodeView> n = engine.node(node);
      if (n.isEmpty() || (n.get().state() == NodeState.MEMBER) != members) {
        continue;
      }
      byte[] data = Records.toRecord(n.get()).toByteArray();
      String path = paths.node(node);
      t.add(
          nodesPresent.add(node)
              ? Op.create(path, data, ZooDefs.Ids.OPEN_ACL_UNSAFE, CreateMode.PERSISTENT)
              : Op.setData(path, data, -1),
          data.length);
    }
  }

  /** Ops in the order added, cut into transactions that each fit one request. */
  private static final class Transactions {
    private final List<List<Op>> done = new ArrayList<>();
    private List<Op> ops = new ArrayList<>();
    private int bytes;

    /** Adds {@code op}, which writes {@code dataBytes} of data. */
    void add(Op op, int dataBytes) {
      ops.add(op);
      bytes += OP_OVERHEAD_BYTES + op.getPath().length() + dataBytes;
      if (bytes > MAX_MULTI_BYTES) {
        done.add(ops);
        ops = new ArrayList<>();
        bytes = 0;
      }
    }

    List<List<Op>> done() {
      if (!ops.isEmpty()) {
        done.add(ops);
      }
      return done;
    }
  }

  /** {@code ops} after the check that this leader's epoch is still the current one. */
  private List<Op> fenced(List<Op> ops) {
    List<Op> fenced = new ArrayList<>(ops.size() + 1);
    fenced.add(Op.check(paths.epoch(), epochVersion));
    fenced.addAll(ops);
    return fenced;
  }

  private CompletableFuture<Void> commit(List<Op> ops) {
    List<Op> fenced = fenced(ops);
    CompletableFuture<Void> done = new CompletableFuture<>();
    long ep = epoch;
    try {
      curator
          .getZookeeperClient()
          .getZooKeeper()
          .multi(
              fenced,
              (rc, path, ctx, results) -> {
                try {
                  if (rc == KeeperException.Code.OK.intValue()) {
                    done.complete(null);
                  } else {
                    done.completeExceptionally(failure(rc, results, fenced.size(), ep));
                  }
                } catch (RuntimeException e) { // e.g. a result code this client does not know
                  done.completeExceptionally(
                      new StoreUnavailableException("ZooKeeper write failed: " + e, e));
                }
              },
              null);
    } catch (Exception e) {
      done.completeExceptionally(new StoreUnavailableException("ZooKeeper write failed: " + e, e));
    }
    return done;
  }

  private static WriteFailure failure(int rc, List<OpResult> results, int ops, long epoch) {
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
