package io.clusterlvm.fence.domain;

import io.clusterlvm.dlm.client.DlmClient;
import io.clusterlvm.dlm.client.DlmClientException;
import io.clusterlvm.dlm.proto.LeaveResponse;
import io.clusterlvm.fence.proto.FenceEvent;
import io.clusterlvm.fence.proto.FenceNodeRecord;
import io.clusterlvm.fence.proto.FenceState;
import io.clusterlvm.fence.proto.MemberRecord;
import io.grpc.Status;
import java.util.List;
import java.util.Optional;
import java.util.concurrent.CopyOnWriteArrayList;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicReference;
import java.util.function.BooleanSupplier;
import org.apache.curator.framework.CuratorFramework;
import org.apache.curator.framework.api.transaction.CuratorOp;
import org.apache.curator.framework.recipes.cache.CuratorCache;
import org.apache.curator.framework.recipes.cache.CuratorCacheListener;
import org.apache.curator.framework.state.ConnectionState;
import org.apache.zookeeper.CreateMode;
import org.apache.zookeeper.KeeperException;
import org.apache.zookeeper.ZooKeeper;
import org.apache.zookeeper.data.Stat;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * This host's membership in the fence domain: a DLM incarnation plus an ephemeral lease znode held
 * by the host's own ZooKeeper session.
 *
 * <p>Storage use is allowed only while the lease is held and the connection is not SUSPENDED.
 * SUSPENDED stops new storage work at once (self-fence): the session may expire on the quorum side
 * while this host cannot tell. LOST means the host may have been declared failed and fenced:
 * listeners drop all state, then the membership rejoins with a new incarnation. A rejoin with the
 * same boot id while the old incarnation is still FAILED/FENCING first attests that the agent
 * dropped its storage work; with a new boot id (a reboot) the old incarnation counts as fenced; a
 * fence an operator requested is waited for instead. A process whose ZooKeeper session already
 * holds the lease (an earlier agent process handed the session over) goes on as that incarnation.
 *
 * <p>A clean leave releases the incarnation's locks and ends the lease; the record says LEFT,
 * unless a fence was requested or is under way, which goes on.
 */
public final class NodeMembership implements AutoCloseable {
  private static final Logger LOG = LoggerFactory.getLogger(NodeMembership.class);

  private enum State {
    LATENT,
    STARTED,
    CLOSED
  }

  private final FenceStore store;
  private final DlmClient dlm;
  private final String node;
  private final String bootId;
  private final String endpoint;
  private final List<MembershipListener> listeners = new CopyOnWriteArrayList<>();
  private final AtomicReference<State> state = new AtomicReference<>(State.LATENT);
  private final ExecutorService rejoiner =
      Executors.newSingleThreadExecutor(
          r -> {
            Thread t = new Thread(r, "membership-rejoin");
            t.setDaemon(true);
            return t;
          });

  private volatile long incarnation;
  private volatile boolean leaseHeld;

  /** The ZooKeeper session that owns the lease (its ephemeral owner); 0 if not known. */
  private volatile long leaseSession;

  private volatile boolean resumed;
  private volatile boolean connected = true;
  private volatile boolean left;

  /**
   * A clean leave waits for the storage work to end: storage is disallowed, while the lease and the
   * connection are still watched (a lease lost meanwhile refuses the leave).
   */
  private volatile boolean leaving;

  /** One leave at a time: SIGTERM during a requested leave waits for it. */
  private final Object leaveLock = new Object();

  /**
   * Set as the agent stops: a join that waits under {@link #leaveLock} for a requested fence gives
   * up, and a rejoin after a lost lease is not tried again, so that the stop gets the lock.
   */
  private volatile boolean stopping;

  /** What a leave whose record could not be written released (null: none pending). */
  private volatile String unrecordedLeave;

  /** How often a leave tries to record itself while ZooKeeper fails, a second apart. */
  private static final int LEAVE_RECORD_TRIES = 30;

  private volatile byte[] leaseBytes;

  /** Orders heartbeats and binds: neither writes the lease with bytes older than the other's. */
  private final Object leaseWrite = new Object();

  /**
   * How often the lease is touched. The lock service takes a heartbeat after a client's session
   * broke as the proof that this host is alive (then the session's locks may go); its grace must be
   * well above this.
   */
  static final java.time.Duration HEARTBEAT = java.time.Duration.ofSeconds(1);

  private final java.util.concurrent.ScheduledExecutorService heartbeats =
      Executors.newSingleThreadScheduledExecutor(
          r -> {
            Thread t = new Thread(r, "membership-heartbeat");
            t.setDaemon(true);
            return t;
          });
  private volatile StorageAttestor attestor = StorageAttestor.NOTHING_TO_STOP;
  private CuratorCache requests;

  public NodeMembership(
      FenceStore store, DlmClient dlm, String node, String bootId, String endpoint) {
    this.store = store;
    this.dlm = dlm;
    this.node = node;
    this.bootId = bootId;
    this.endpoint = endpoint;
  }

  /** Sets what must stop before this host may attest after a rejoin with the same boot id. */
  public void setAttestor(StorageAttestor attestor) {
    this.attestor = attestor;
  }

  public void addListener(MembershipListener l) {
    listeners.add(l);
  }

  public String node() {
    return node;
  }

  public long incarnation() {
    return incarnation;
  }

  /** True while this host may touch shared storage. */
  public boolean mayUseStorage() {
    return state.get() == State.STARTED && leaseHeld && connected && !left && !leaving;
  }

  /** Joins the fence domain (blocking). */
  public void start() throws Exception {
    if (!state.compareAndSet(State.LATENT, State.STARTED)) {
      throw new IllegalStateException("already started");
    }
    store.ensurePaths();
    store.curator().getConnectionStateListenable().addListener(this::connectionChanged);
    synchronized (leaveLock) { // not beside a rejoin after a LOST that reaches us meanwhile
      if (!resumeLease()) {
        join();
      }
    }
    // dlmctl leave / dlmctl join reach the agent through its record.
    requests = CuratorCache.build(store.curator(), store.node(node));
    requests
        .listenable()
        .addListener(
            CuratorCacheListener.builder()
                .forAll((t, o, n) -> rejoiner.execute(this::handleRequests))
                .build());
    requests.start();
    heartbeats.scheduleWithFixedDelay(
        this::heartbeat, HEARTBEAT.toMillis(), HEARTBEAT.toMillis(), TimeUnit.MILLISECONDS);
  }

  private void heartbeat() {
    synchronized (leaseWrite) {
      if (!leaseHeld || !connected || left || state.get() != State.STARTED) {
        return;
      }
      try {
        store.curator().setData().forPath(store.member(node), leaseBytes);
      } catch (Exception e) {
        LOG.debug("[node={}] lease heartbeat failed: {}", node, e.toString());
      }
    }
  }

  /**
   * Binds this process's lock session {@code sessionId} to the lease of {@code forIncarnation}
   * ({@code MemberRecord.bound_session_id}): while the lease lives, the lock service takes a break
   * of that session's stream for a lost connection, not a dead process, and keeps its locks.
   * Written at once, so no lock is taken under the session before the binding is on record.
   *
   * @throws IllegalStateException if this host holds no lease of {@code forIncarnation}
   * @throws Exception if ZooKeeper could not be written: the session is not bound
   */
  public void bindSession(long forIncarnation, long sessionId) throws Exception {
    synchronized (leaseWrite) {
      byte[] current = leaseBytes;
      if (!leaseHeld || left || incarnation != forIncarnation || current == null) {
        throw new IllegalStateException(
            "node " + node + " holds no lease of incarnation " + forIncarnation);
      }
      byte[] bound =
          MemberRecord.parseFrom(current).toBuilder()
              .setBoundSessionId(sessionId)
              .build()
              .toByteArray();
      store.curator().setData().forPath(store.member(node), bound);
      leaseBytes = bound;
    }
    LOG.info("[node={}] lock session {} bound to the lease", node, sessionId);
  }

  private void handleRequests() {
    try {
      Optional<Versioned<FenceNodeRecord>> v = store.nodeRecord(node);
      if (v.isEmpty()) {
        return;
      }
      FenceNodeRecord r = v.get().value();
      if (r.getLeaveRequested()
          && r.getState() == FenceState.MEMBER
          && (!left || unrecordedLeave != null)) {
        LOG.info("[node={}] leaving: requested by {}", node, r.getRequestedBy());
        leave();
      } else if (r.getJoinRequested() && FenceStore.mayJoinAgain(r) && left) {
        synchronized (leaveLock) { // not beside a stop deciding whether to leave
          if (!left || state.get() != State.STARTED) {
            return;
          }
          LOG.info("[node={}] joining again: requested by {}", node, r.getRequestedBy());
          join();
        }
      }
    } catch (Exception e) {
      LOG.warn("[node={}] could not act on a membership request: {}", node, e.toString());
    }
  }

  /**
   * Goes on as the incarnation whose lease this process's ZooKeeper session already holds: an
   * earlier agent process of this boot handed the session over when it stopped (LVs still in use),
   * so the lease, and with it every lock of the incarnation, never went away. Nothing to settle and
   * no join: the record and the lock service still say MEMBER. Returns false if the lease is not
   * such a one, and the node joins as usual.
   */
  private boolean resumeLease() throws Exception {
    CuratorFramework c = store.curator();
    long mySession = c.getZookeeperClient().getZooKeeper().getSessionId();
    Stat stat = new Stat();
    MemberRecord lease;
    try {
      lease = MemberRecord.parseFrom(c.getData().storingStatIn(stat).forPath(store.member(node)));
    } catch (KeeperException.NoNodeException none) {
      return false;
    }
    Optional<Versioned<FenceNodeRecord>> rec = store.nodeRecord(node);
    if (stat.getEphemeralOwner() != mySession
        || !lease.getBootId().equals(bootId)
        || rec.isEmpty()
        || rec.get().value().getState() != FenceState.MEMBER
        || rec.get().value().getIncarnation() != lease.getIncarnation()
        || rec.get().value().getFenceRequested()) {
      return false;
    }
    long inc = lease.getIncarnation();
    synchronized (leaseWrite) {
      incarnation = inc;
      leaseBytes = lease.toByteArray();
      leaseSession = stat.getEphemeralOwner();
    }
    resumed = true;
    becameMember(
        "resumed",
        "a new agent process took over incarnation "
            + inc
            + " and its lease (ZooKeeper session 0x"
            + Long.toHexString(mySession)
            + ") on the same boot");
    return true;
  }

  /** Whether this process went on as the incarnation an earlier process handed over. */
  public boolean resumed() {
    return resumed;
  }

  private void join() throws Exception {
    settlePreviousIncarnation();
    long inc = dlm.join(node, bootId);
    CuratorFramework c = store.curator();
    Optional<Versioned<FenceNodeRecord>> rec = store.nodeRecord(node);
    FenceNodeRecord member =
        FenceNodeRecord.newBuilder()
            .setNode(node)
            .setState(FenceState.MEMBER)
            .setIncarnation(inc)
            .setBootId(bootId)
            .setSinceEpochMillis(System.currentTimeMillis())
            .build();
    byte[] lease =
        MemberRecord.newBuilder()
            .setNode(node)
            .setIncarnation(inc)
            .setBootId(bootId)
            .setEndpoint(endpoint)
            .setJoinedEpochMillis(System.currentTimeMillis())
            .build()
            .toByteArray();
    // The record and the lease appear together: a fencer never sees a lease-less MEMBER of this
    // incarnation (which it would take for a failure) nor a lease with a stale record.
    CuratorOp recordOp =
        rec.isPresent()
            ? c.transactionOp()
                .setData()
                .withVersion(rec.get().version())
                .forPath(store.node(node), member.toByteArray())
            : c.transactionOp().create().forPath(store.node(node), member.toByteArray());
    // Under leaseWrite: a heartbeat that read the old incarnation's bytes must not write them
    // into the new lease (a fencer would take the mismatch for a failure).
    synchronized (leaseWrite) {
      try {
        c.delete().forPath(store.member(node)); // a lease of our own previous session, if any
      } catch (KeeperException.NoNodeException e) {
        // none
      }
      c.transaction()
          .forOperations(
              recordOp,
              c.transactionOp()
                  .create()
                  .withMode(CreateMode.EPHEMERAL)
                  .forPath(store.member(node), lease));
      incarnation = inc;
      leaseBytes = lease;
      try {
        leaseSession = leaseOwner();
      } catch (Exception e) {
        leaseSession = 0; // then no LOST is taken for one of an earlier session
      }
    }
    becameMember("joined", "joined with incarnation " + inc + ", boot id " + bootId);
  }

  /**
   * The lease of {@link #incarnation} is this process's: say so in the history and to listeners.
   */
  private void becameMember(String event, String message) {
    leaseHeld = true;
    unrecordedLeave = null; // a new membership: an earlier leave's record is the past
    left = false;
    // From the client, after left = false: an event from here on is followed as a member's, and
    // one that came between the join's write and here is not lost.
    connected = store.curator().getZookeeperClient().isConnected();
    try {
      store.append(event(event, "MEMBER", message));
    } catch (Exception e) {
      // The lease and the record are written; without the listeners' joined() the host would be
      // a member that runs nothing, and a start would give up and leave a lease-less MEMBER.
      LOG.warn(
          "[node={}] could not record '{}' in the fence history: {}", node, event, e.toString());
    }
    LOG.info("[node={}] {}", node, message);
    for (MembershipListener l : listeners) {
      l.joined(incarnation);
      l.storageAllowed(mayUseStorage());
    }
  }

  /**
   * Makes sure no earlier incarnation of this node still owns locks before a new one joins. A
   * reboot (new boot id) counts as fenced. The same boot id means this agent was restarted or lost
   * its session without the host going down: this process runs no storage work of the old one (it
   * is a new process, or it dropped everything on LOST), which it attests.
   */
  private void settlePreviousIncarnation() throws Exception {
    awaitOldLeaseGone();
    long loggedFenceWait = System.nanoTime() - TimeUnit.MINUTES.toNanos(1);
    while (true) {
      Optional<Versioned<FenceNodeRecord>> v = store.nodeRecord(node);
      if (v.isEmpty()) {
        return;
      }
      FenceNodeRecord r = v.get().value();
      boolean unsettled =
          r.getState() == FenceState.FAILED
              || r.getState() == FenceState.FENCING
              || r.getState() == FenceState.MEMBER
              || (r.getState() == FenceState.FENCED && !r.getLocksPurged());
      if (!unsettled) {
        return;
      }
      if (r.getFenceRequested() && r.getState() != FenceState.FENCED) {
        // An operator asked for this node to be fenced: attesting our own stop instead would
        // undo that. Wait for the fencer, or for 'dlmctl ack'.
        if (System.nanoTime() - loggedFenceWait > TimeUnit.SECONDS.toNanos(30)) {
          LOG.warn(
              "[node={}] waiting for the fence of incarnation {} requested by {} (record {})"
                  + " before rejoining",
              node,
              r.getIncarnation(),
              r.getRequestedBy(),
              r.getState());
          loggedFenceWait = System.nanoTime();
        }
        if (stopping || state.get() != State.STARTED) {
          throw new IllegalStateException("stopped while waiting for a requested fence");
        }
        TimeUnit.MILLISECONDS.sleep(500);
        continue;
      }
      String how;
      if (r.getState() == FenceState.FENCED) {
        how = r.getHow();
      } else if (!r.getBootId().equals(bootId)) {
        how = "rebooted (boot id changed)";
      } else {
        String notStopped = attestor.stopStorageWork(node, r.getIncarnation());
        if (notStopped != null) {
          throw new IllegalStateException(
              "node "
                  + node
                  + " can't rejoin: its incarnation "
                  + r.getIncarnation()
                  + " still has storage work on this host ("
                  + notStopped
                  + "); its locks stay frozen until it is fenced or 'dlmctl ack "
                  + node
                  + " --yes'");
        }
        how = "attested by the node: its agent stopped all storage work before rejoining";
      }
      // FENCED first, then the purge: nobody gets a lock of the old incarnation before its record
      // says FENCED, as on the fencer's path. The history tells it in the same order.
      int version = v.get().version();
      FenceNodeRecord fenced = r;
      if (r.getState() != FenceState.FENCED) {
        fenced =
            r.toBuilder()
                .setState(FenceState.FENCED)
                .setPowerOnPending(false) // it is up: it rejoins
                .setHow(how)
                .setStoppedAttestation(r.getBootId().equals(bootId))
                .setSinceEpochMillis(System.currentTimeMillis())
                .setLocksPurged(false)
                .setSelfSettled(true)
                .build();
        if (!store.compareAndSet(node, version, fenced)) {
          continue; // the fencer or an operator moved it meanwhile: look again
        }
        version++;
        store.append(
            event("fenced", "FENCED", "incarnation " + r.getIncarnation() + " " + how).toBuilder()
                .setIncarnation(r.getIncarnation())
                .build());
      }
      // The fencer may end the same fence at the same time: whichever marks the record writes the
      // history, with the count the lock service gives either of them (FenceStore.markPurged).
      Fencer.Purged purged =
          Fencer.purgeLocks(
              dlm, store, node, version, fenced, "node " + node + " rejoins: " + how, node);
      LOG.warn(
          "[node={}] earlier incarnation {} {}; {}",
          node,
          r.getIncarnation(),
          how,
          purged.outcome());
      return;
    }
  }

  /**
   * A lease of an earlier agent process of this node lasts until its ZooKeeper session expires. Two
   * agents must never both be members for one node, so wait for it to go.
   */
  private void awaitOldLeaseGone() throws Exception {
    CuratorFramework c = store.curator();
    long mySession = c.getZookeeperClient().getZooKeeper().getSessionId();
    long deadline = System.nanoTime() + TimeUnit.MINUTES.toNanos(2);
    boolean logged = false;
    while (true) {
      Stat stat = c.checkExists().forPath(store.member(node));
      if (stat == null || stat.getEphemeralOwner() == mySession) {
        return;
      }
      if (stopping) {
        throw new IllegalStateException("stopped while waiting for an earlier lease to expire");
      }
      if (System.nanoTime() > deadline) {
        throw new IllegalStateException(
            "node "
                + node
                + " still has a live lease held by another ZooKeeper session"
                + " (is another clvm-agent running for this node?)");
      }
      if (!logged) {
        LOG.warn(
            "[node={}] an earlier lease of this node is still live (session 0x{});"
                + " waiting for it to expire",
            node,
            Long.toHexString(stat.getEphemeralOwner()));
        logged = true;
      }
      TimeUnit.MILLISECONDS.sleep(250);
    }
  }

  private FenceEvent event(String what, String outcome, String message) {
    return FenceStore.event(node, incarnation, what, outcome, message, node);
  }

  private void connectionChanged(CuratorFramework c, ConnectionState s) {
    if (state.get() != State.STARTED) {
      return;
    }
    if (left) {
      // Out of the domain: no lease to re-validate or lose, but a join needs the flag to be true.
      connected = s.isConnected();
      return;
    }
    switch (s) {
      case SUSPENDED -> {
        connected = false;
        LOG.warn(
            "[node={}] ZooKeeper connection SUSPENDED: storage work stops until it is back", node);
        listeners.forEach(l -> l.storageAllowed(false));
      }
      case RECONNECTED -> rejoiner.execute(this::revalidate);
      case LOST -> {
        if (connectedInLeaseSession()) {
          // Curator tells of a session that expired before this process resumed or joined in
          // this one (a handed-over session that timed out first), after the fact.
          LOG.warn(
              "[node={}] ZooKeeper reports a session LOST, but this process is connected in"
                  + " session 0x{}, which holds the lease: the news is of an earlier session",
              node,
              Long.toHexString(leaseSession));
          return;
        }
        connected = false;
        long old = incarnation;
        leaseHeld = false;
        LOG.error(
            "[node={}] ZooKeeper session LOST: this host may have been fenced; dropping all"
                + " state and rejoining",
            node);
        listeners.forEach(l -> l.storageAllowed(false));
        listeners.forEach(l -> l.leaseLost(old));
        rejoiner.execute(() -> rejoinAfterLoss(old));
      }
      default -> {}
    }
  }

  /** The session that owns the lease znode now; 0 if there is none. */
  private long leaseOwner() throws Exception {
    Stat stat = store.curator().checkExists().forPath(store.member(node));
    return stat == null ? 0 : stat.getEphemeralOwner();
  }

  /**
   * Whether this process holds a lease and is connected now in the session that owns it. A LOST
   * cannot be of that session then. Read from the client's state, not asked of ZooKeeper: it runs
   * on Curator's event thread.
   */
  private boolean connectedInLeaseSession() {
    if (!leaseHeld || leaseSession == 0) {
      return false;
    }
    try {
      ZooKeeper zk = store.curator().getZookeeperClient().getZooKeeper();
      return zk.getState() == ZooKeeper.States.CONNECTED && zk.getSessionId() == leaseSession;
    } catch (Exception e) {
      return false;
    }
  }

  /**
   * Whether this process's ZooKeeper session holds the lease now: asked of ZooKeeper once, without
   * Curator's retries, for a stop that must not wait for a reconnect; false if it can't tell (also
   * when disconnected, without asking). Also after {@link #close()}.
   */
  public boolean leaseHeldNow() {
    try {
      ZooKeeper zk = store.curator().getZookeeperClient().getZooKeeper();
      if (!zk.getState().isConnected()) {
        return false;
      }
      Stat stat = zk.exists(store.member(node), false);
      return stat != null && stat.getEphemeralOwner() == zk.getSessionId();
    } catch (InterruptedException e) {
      Thread.currentThread().interrupt();
      return false;
    } catch (Exception e) {
      return false;
    }
  }

  /** Whether the lease znode exists and belongs to this process's ZooKeeper session (reads it). */
  private boolean leaseIsOurs() throws Exception {
    long owner = leaseOwner();
    return owner != 0
        && owner == store.curator().getZookeeperClient().getZooKeeper().getSessionId();
  }

  /** After RECONNECTED: storage is allowed again only if our lease is still ours. */
  private void revalidate() {
    if (left) {
      return; // a leave ran before this: there is no lease to re-validate, and nothing lost
    }
    try {
      if (leaseIsOurs()) {
        connected = true;
        leaseHeld = true;
        LOG.info(
            "[node={}] ZooKeeper connection back and the lease is ours: storage work resumes",
            node);
        listeners.forEach(l -> l.storageAllowed(mayUseStorage()));
      } else {
        LOG.error("[node={}] reconnected but the lease is gone; rejoining", node);
        leaseHeld = false;
        long old = incarnation;
        listeners.forEach(l -> l.leaseLost(old));
        rejoinAfterLoss(old);
      }
    } catch (Exception e) {
      LOG.warn("[node={}] could not re-validate the lease: {}", node, e.toString());
    }
  }

  /** Joins anew after the lease of incarnation {@code lost} was lost. */
  private void rejoinAfterLoss(long lost) {
    long backoff = 500;
    while (state.get() == State.STARTED && !left && !stopping) {
      try {
        if (!store.curator().getZookeeperClient().blockUntilConnectedOrTimedOut()) {
          continue;
        }
        connected = true;
        synchronized (leaveLock) {
          if (left || state.get() != State.STARTED) {
            return; // a clean leave, or a stop, won the race with this rejoin
          }
          if (incarnation != lost && connectedInLeaseSession()) {
            // The LOST was of an earlier session, and start() joined in this one meanwhile,
            // while the LOST had storage stopped. (Were the lost incarnation this one, its
            // listeners would have dropped its state: a full join settles that.)
            LOG.info("[node={}] the lease of this session stands: storage work resumes", node);
            listeners.forEach(l -> l.storageAllowed(mayUseStorage()));
            return;
          }
          join();
        }
        return;
      } catch (InterruptedException e) {
        Thread.currentThread().interrupt();
        return;
      } catch (Exception e) {
        LOG.warn("[node={}] rejoin failed ({}); retrying in {} ms", node, e.toString(), backoff);
        try {
          TimeUnit.MILLISECONDS.sleep(backoff);
        } catch (InterruptedException ie) {
          Thread.currentThread().interrupt();
          return;
        }
        backoff = Math.min(backoff * 2, 5000);
      }
    }
  }

  /**
   * Leaves the fence domain cleanly: the DLM releases this incarnation's locks, then the record
   * says LEFT and the lease goes in one transaction, so no fencer ever fences this node for it. A
   * fence requested or under way is not undone: the record keeps it, and the fencer goes on.
   */
  public void leave() throws Exception {
    synchronized (leaveLock) {
      leaveNow();
    }
  }

  /**
   * What a stopping agent does last: asks {@code mayLeave} whether to leave (a stop that must not,
   * with LVs in use, says false), leaves as {@link #leave()} does if so, and closes, whether the
   * leave went ahead, was refused or was not tried. All of it under the leave's lock, so that
   * neither an operator's leave nor a rejoin after a lost lease runs beside the stop's decision, or
   * slips in between a refused leave and the close (a rejoin would join an incarnation nobody will
   * serve).
   */
  public void leaveAndClose(BooleanSupplier mayLeave) throws Exception {
    stopping = true;
    synchronized (leaveLock) {
      try {
        if (unrecordedLeave != null || mayLeave.getAsBoolean()) {
          leaveNow();
        }
      } finally {
        close();
      }
    }
  }

  private void leaveNow() throws Exception {
    if (left && unrecordedLeave != null && state.get() == State.STARTED) {
      recordLeave(); // the locks went with the earlier leave: only its record is missing
      return;
    }
    if (left || state.get() != State.STARTED) {
      return;
    }
    leaving = true;
    listeners.forEach(l -> l.storageAllowed(false));
    long inc = incarnation;
    String released;
    try {
      for (MembershipListener l : listeners) {
        l.leaving();
      }
      // Asked of ZooKeeper, not of the connection flags: a SUSPENDED that came back during the
      // drain is re-validated on the thread this leave may be running on.
      if (!leaseHeld || incarnation != inc || !leaseIsOurs()) {
        throw new IllegalStateException("the lease of incarnation " + inc + " was lost");
      }
      released = dlmLeave(inc);
    } catch (Exception e) {
      leaving = false;
      LOG.error("[node={}] leave refused: {}", node, e.getMessage());
      try {
        store.append(event("leave-refused", "MEMBER", e.getMessage()));
      } catch (Exception notWritten) {
        LOG.warn("[node={}] could not record the refusal: {}", node, notWritten.toString());
      }
      clearLeaveRequest(); // so that the operator's next request is seen as one
      listeners.forEach(l -> l.storageAllowed(mayUseStorage()));
      throw e;
    }
    left = true;
    leaving = false;
    unrecordedLeave = released;
    recordLeave();
  }

  /**
   * The second half of a leave, whose locks are released: the record says so and the lease ends, in
   * one transaction. Asked again by the next leave request or stop if ZooKeeper failed it ({@link
   * #unrecordedLeave}): a record left MEMBER would get the host fenced once its lease ends.
   */
  private void recordLeave() throws Exception {
    String released = unrecordedLeave;
    CuratorFramework c = store.curator();
    FenceNodeRecord written;
    int failures = 0;
    while (true) {
      try {
        Versioned<FenceNodeRecord> v = store.nodeRecord(node).orElseThrow();
        FenceNodeRecord next = afterLeave(v.value());
        written = next == null ? v.value() : next;
        // A record left as it is is only checked, not written: a write would cost the fencer the
        // version its step in flight (the agents' result, the purge) is to be written against.
        CuratorOp recordOp =
            next == null
                ? c.transactionOp().check().withVersion(v.version()).forPath(store.node(node))
                : c.transactionOp()
                    .setData()
                    .withVersion(v.version())
                    .forPath(store.node(node), next.toByteArray());
        try {
          c.transaction()
              .forOperations(recordOp, c.transactionOp().delete().forPath(store.member(node)));
          break;
        } catch (KeeperException.BadVersionException raced) {
          // the fencer or an operator touched the record meanwhile; read again
        } catch (KeeperException.NoNodeException gone) {
          if (next == null || store.compareAndSet(node, v.version(), next)) {
            break;
          }
        }
      } catch (KeeperException.ConnectionLossException
          | KeeperException.OperationTimeoutException
          | KeeperException.SessionExpiredException e) {
        // The locks are released: a record left MEMBER would get this host fenced for a clean
        // leave once its lease ends, and no later leave or join could move it. Try again (a
        // session that expired meanwhile took the lease with it: the next try finds it gone).
        if (++failures >= LEAVE_RECORD_TRIES || state.get() != State.STARTED) {
          throw e;
        }
        LOG.warn(
            "[node={}] ZooKeeper failed while recording the leave ({}); trying again",
            node,
            e.toString());
        TimeUnit.SECONDS.sleep(1);
      }
    }
    unrecordedLeave = null;
    leaseHeld = false;
    if (written.getState() == FenceState.LEFT) {
      store.append(event("left", "LEFT", "left cleanly; " + released));
      LOG.info("[node={}] left the fence domain cleanly; {}", node, released);
    } else {
      String fence = pendingFence(written);
      store.append(
          event(
              "left",
              written.getState().name(),
              "left the lock service cleanly (" + released + "); " + fence));
      LOG.warn("[node={}] left the lock service cleanly ({}); {}", node, released, fence);
    }
  }

  /**
   * The record once this node left, or null if it stays as it is. A fence that an operator asked
   * for or that the fencer started is not undone by the leave: the fencer goes on (the operator may
   * want the host off for reasons other than its locks). A requested fence the fencer has not taken
   * up yet becomes FENCING here, as the fencer would make it, so that it can be acknowledged like
   * any other. Otherwise the node is LEFT.
   */
  private static FenceNodeRecord afterLeave(FenceNodeRecord r) {
    if (r.getState() == FenceState.FENCING || r.getState() == FenceState.FENCED) {
      return null;
    }
    long now = System.currentTimeMillis();
    if (r.getFenceRequested()) {
      return Fencer.toFencing(r, now)
          .setLeaveRequested(false)
          .setLastResult("fence requested by " + r.getRequestedBy() + "; the node left meanwhile")
          .build();
    }
    return r.toBuilder()
        .setState(FenceState.LEFT)
        .setSinceEpochMillis(now)
        .setFenceRequested(false)
        .setLeaveRequested(false)
        .build();
  }

  /** What fence of a record the leave left in place, for the history. */
  private static String pendingFence(FenceNodeRecord r) {
    if (r.getState() == FenceState.FENCED) {
      return "it was already confirmed off (" + r.getHow() + "), and stays FENCED";
    }
    return r.getFenceRequested()
        ? "the fence requested by " + r.getRequestedBy() + " goes on"
        : "the fence under way goes on";
  }

  /**
   * The lock service's leave of {@code inc}, asked again for as long as no server answers and the
   * lease lives: its outcome is unknown until then, and refusing the leave after it may have been
   * applied would leave a member whose locks were released. A copy that finds the incarnation gone
   * means an earlier one was applied. Returns what was released, for the history.
   */
  private String dlmLeave(long inc) throws Exception {
    while (true) {
      try {
        LeaveResponse r = dlm.leave(node, inc);
        if (!r.getAlreadyLeft()) {
          return r.getReleasedLocks() + " locks released";
        }
        // The client retries an unanswered call itself, so which it was can't be told here.
        return "the incarnation had already left the lock service (an earlier attempt whose"
            + " answer was lost, or a leave or purge by an operator or the fencer)";
      } catch (DlmClientException e) {
        if (e.code() != Status.Code.UNAVAILABLE && e.code() != Status.Code.DEADLINE_EXCEEDED) {
          throw e; // refused: not applied
        }
        if (!leaseHeld || state.get() != State.STARTED) {
          throw new IllegalStateException(
              "the lease was lost while the lock service did not answer the leave", e);
        }
        LOG.warn(
            "[node={}] the lock service did not answer the leave ({}); asking again",
            node,
            e.getMessage());
        TimeUnit.SECONDS.sleep(1);
      }
    }
  }

  private void clearLeaveRequest() {
    try {
      Optional<Versioned<FenceNodeRecord>> v = store.nodeRecord(node);
      if (v.isPresent() && v.get().value().getLeaveRequested()) {
        store.compareAndSet(
            node, v.get().version(), v.get().value().toBuilder().setLeaveRequested(false).build());
      }
    } catch (Exception e) {
      LOG.warn("[node={}] could not clear the leave request: {}", node, e.toString());
    }
  }

  @Override
  public void close() {
    stopping = true;
    if (state.getAndSet(State.CLOSED) != State.STARTED) {
      return;
    }
    if (requests != null) {
      requests.close();
    }
    heartbeats.shutdownNow();
    rejoiner.shutdownNow();
  }
}
