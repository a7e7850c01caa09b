package io.clusterlvm.fence.domain;

import com.google.protobuf.InvalidProtocolBufferException;
import io.clusterlvm.dlm.proto.PurgeResponse;
import io.clusterlvm.fence.config.ClusterConfig;
import io.clusterlvm.fence.config.ClusterConfigException;
import io.clusterlvm.fence.config.ConfigProblem;
import io.clusterlvm.fence.proto.ConfigRecord;
import io.clusterlvm.fence.proto.FenceEvent;
import io.clusterlvm.fence.proto.FenceNodeRecord;
import io.clusterlvm.fence.proto.FenceState;
import io.clusterlvm.fence.proto.MemberRecord;
import java.util.ArrayList;
import java.util.Collections;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.TreeMap;
import org.apache.curator.framework.CuratorFramework;
import org.apache.zookeeper.CreateMode;
import org.apache.zookeeper.KeeperException;
import org.apache.zookeeper.data.Stat;

/**
 * The fence domain's records in ZooKeeper. Every state change is a compare-and-set on the node's
 * record, so two fencers (or a fencer and an operator) can never both move a node.
 *
 * <pre>
 *   ROOT/fence/members/NODE     MemberRecord, ephemeral: the node's lease
 *   ROOT/fence/nodes/NODE       FenceNodeRecord: MEMBER, FAILED, FENCING, FENCED or LEFT
 *   ROOT/fence/config           ConfigRecord: the active cluster.conf
 *   ROOT/fence/history/event-N  FenceEvent, appended; the newest MAX_HISTORY kept
 *   ROOT/fence/fencer           election of the one fencer
 * </pre>
 */
public final class FenceStore {
  private final CuratorFramework curator;
  private final String root;

  /**
   * How many events the history keeps. A node that stays FENCING with a dead BMC adds a few events
   * at every retry; unbounded, the list of events would in time exceed what a ZooKeeper client
   * accepts in one answer (the dlm-server's own Curator would drop its connection on reading it).
   * Every fence action is also in the fencer's log.
   */
  static final int MAX_HISTORY = 10_000;

  /** One append in this many trims the history back to {@link #MAX_HISTORY}. */
  private static final int TRIM_EVERY = 100;

  private final int maxHistory;

  public FenceStore(CuratorFramework curator, String zkRoot) {
    this(curator, zkRoot, MAX_HISTORY);
  }

  FenceStore(CuratorFramework curator, String zkRoot, int maxHistory) {
    this.curator = curator;
    this.root =
        (zkRoot.endsWith("/") ? zkRoot.substring(0, zkRoot.length() - 1) : zkRoot) + "/fence";
    this.maxHistory = maxHistory;
  }

  public CuratorFramework curator() {
    return curator;
  }

  String members() {
    return root + "/members";
  }

  String member(String node) {
    return members() + "/" + node;
  }

  String nodes() {
    return root + "/nodes";
  }

  String node(String node) {
    return nodes() + "/" + node;
  }

  String config() {
    return root + "/config";
  }

  String history() {
    return root + "/history";
  }

  String fencer() {
    return root + "/fencer";
  }

  /** Where the fencer election lives; its first child's data names the fencer. */
  public String fencerPath() {
    return fencer();
  }

  /** Creates the parent znodes; idempotent. */
  public void ensurePaths() throws Exception {
    for (String p : List.of(members(), nodes(), history())) {
      try {
        curator.create().creatingParentsIfNeeded().forPath(p, new byte[0]);
      } catch (KeeperException.NodeExistsException e) {
        // there already
      }
    }
  }

  // ---------------------------------------------------------------- node records

  public Optional<Versioned<FenceNodeRecord>> nodeRecord(String node) throws Exception {
    Stat stat = new Stat();
    try {
      byte[] data = curator.getData().storingStatIn(stat).forPath(node(node));
      return Optional.of(new Versioned<>(FenceNodeRecord.parseFrom(data), stat.getVersion()));
    } catch (KeeperException.NoNodeException e) {
      return Optional.empty();
    }
  }

  /** The nodes that have a fence record, sorted. */
  public List<String> nodeNames() throws Exception {
    List<String> names;
    try {
      names = new ArrayList<>(curator.getChildren().forPath(nodes()));
    } catch (KeeperException.NoNodeException e) {
      return List.of();
    }
    Collections.sort(names);
    return names;
  }

  /**
   * Writes {@code record} if the node's record is still at {@code version} (-1: must not exist).
   * Returns false if someone else changed it first.
   */
  public boolean compareAndSet(String node, int version, FenceNodeRecord record) throws Exception {
    try {
      if (version < 0) {
        curator.create().creatingParentsIfNeeded().forPath(node(node), record.toByteArray());
      } else {
        curator.setData().withVersion(version).forPath(node(node), record.toByteArray());
      }
      return true;
    } catch (KeeperException.BadVersionException | KeeperException.NodeExistsException e) {
      return false;
    }
  }

  // ---------------------------------------------------------------- members (leases)

  /** The node's lease, if held. */
  public Optional<MemberRecord> memberRecord(String node) throws Exception {
    try {
      return Optional.of(MemberRecord.parseFrom(curator.getData().forPath(member(node))));
    } catch (KeeperException.NoNodeException e) {
      return Optional.empty();
    }
  }

  /**
   * A node's lease as the lock service reads it: its heartbeat counter (the znode's mzxid, which
   * every heartbeat write moves forward) and the lock session bound to it (0 if none).
   */
  public record Lease(long heartbeat, long boundSessionId) {}

  /** The node's lease, if it holds one of {@code incarnation}. */
  public Optional<Lease> lease(String node, long incarnation) throws Exception {
    Stat stat = new Stat();
    try {
      MemberRecord m =
          MemberRecord.parseFrom(curator.getData().storingStatIn(stat).forPath(member(node)));
      return m.getIncarnation() == incarnation
          ? Optional.of(new Lease(stat.getMzxid(), m.getBoundSessionId()))
          : Optional.empty();
    } catch (KeeperException.NoNodeException e) {
      return Optional.empty();
    }
  }

  /**
   * Every lease: those that parse, and the nodes whose lease does not (written by hand, or by a
   * newer version). A lease that exists says its holder's ZooKeeper session lives, whatever it
   * holds: such a node must be taken for neither failed nor alive.
   */
  public record Leases(Map<String, MemberRecord> readable, Map<String, String> unreadable) {
    /** Whether {@code node} holds a lease, readable or not. */
    public boolean held(String node) {
      return readable.containsKey(node) || unreadable.containsKey(node);
    }
  }

  public Leases leases() throws Exception {
    Map<String, MemberRecord> out = new TreeMap<>();
    Map<String, String> unreadable = new TreeMap<>();
    List<String> names;
    try {
      names = curator.getChildren().forPath(members());
    } catch (KeeperException.NoNodeException e) {
      return new Leases(out, unreadable);
    }
    for (String n : names) {
      try {
        out.put(n, MemberRecord.parseFrom(curator.getData().forPath(member(n))));
      } catch (KeeperException.NoNodeException gone) {
        // lease ended while we listed
      } catch (InvalidProtocolBufferException e) {
        // One lease nobody can read must not stop the fencer or the listing of every node.
        unreadable.put(n, e.getMessage());
      }
    }
    return new Leases(out, unreadable);
  }

  /**
   * Marks a FENCED record's locks purged, after the lock service purged its incarnation, and writes
   * the history's "purged" event if this call's mark landed. The fencer and a rejoining node may
   * both purge one incarnation (the purge is idempotent). The one that comes second, or a purge
   * asked again after its answer was lost, finds the incarnation already gone, and the lock service
   * then says how many locks the purge (or leave) that ended it released: whichever marks the
   * record writes the count that was released, never the 0 its own purge found.
   *
   * @return whether this call marked it
   */
  public boolean markPurged(
      String node, int version, FenceNodeRecord fenced, PurgeResponse purged, String actor)
      throws Exception {
    if (!compareAndSet(node, version, fenced.toBuilder().setLocksPurged(true).build())) {
      return false;
    }
    append(
        event(
            node,
            fenced.getIncarnation(),
            "purged",
            FenceState.FENCED.name(),
            purgeOutcome(fenced.getIncarnation(), purged),
            actor));
    return true;
  }

  /** What a purge of {@code incarnation} released, for the history and the logs. */
  public static String purgeOutcome(long incarnation, PurgeResponse purged) {
    return purged.getAlreadyGone()
        ? purged.getReleasedEarlier()
            + " locks of incarnation "
            + incarnation
            + " released already (by a clean leave, or a purge asked before)"
        : purged.getPurgedLocks() + " locks of incarnation " + incarnation + " released";
  }

  /** An event of the fence history, stamped now. */
  static FenceEvent event(
      String node, long incarnation, String what, String outcome, String message, String actor) {
    return FenceEvent.newBuilder()
        .setTimeEpochMillis(System.currentTimeMillis())
        .setNode(node)
        .setIncarnation(incarnation)
        .setEvent(what)
        .setOutcome(outcome)
        .setMessage(message)
        .setActor(actor)
        .build();
  }

  // ---------------------------------------------------------------- history

  public void append(FenceEvent event) throws Exception {
    String created =
        curator
            .create()
            .creatingParentsIfNeeded()
            .withMode(CreateMode.PERSISTENT_SEQUENTIAL)
            .forPath(history() + "/event-", event.toByteArray());
    // The sequence number says how many came before: trim once in a while, not on every append.
    long sequence = Long.parseLong(created.substring(created.lastIndexOf('-') + 1));
    if (sequence % TRIM_EVERY == TRIM_EVERY - 1) {
      trimHistory();
    }
  }

  /** Deletes the oldest events beyond {@link #maxHistory}; another host may trim at once. */
  private void trimHistory() throws Exception {
    List<String> names = new ArrayList<>(curator.getChildren().forPath(history()));
    Collections.sort(names);
    for (int i = 0; i < names.size() - maxHistory; i++) {
      try {
        curator.delete().forPath(history() + "/" + names.get(i));
      } catch (KeeperException.NoNodeException trimmedElsewhere) {
        // fine
      }
    }
  }

  /** The last {@code limit} events (of {@code node}, or all if null), oldest first. */
  public List<FenceEvent> history(String node, int limit) throws Exception {
    List<String> names;
    try {
      names = new ArrayList<>(curator.getChildren().forPath(history()));
    } catch (KeeperException.NoNodeException e) {
      return List.of();
    }
    Collections.sort(names);
    List<FenceEvent> out = new ArrayList<>();
    for (int i = names.size() - 1; i >= 0 && out.size() < limit; i--) {
      try {
        FenceEvent e =
            FenceEvent.parseFrom(curator.getData().forPath(history() + "/" + names.get(i)));
        if (node == null || node.equals(e.getNode())) {
          out.add(e);
        }
      } catch (KeeperException.NoNodeException | InvalidProtocolBufferException e) {
        // skip
      }
    }
    Collections.reverse(out);
    return out;
  }

  // ---------------------------------------------------------------- cluster.conf

  public Optional<ConfigRecord> activeConfig() throws Exception {
    try {
      return Optional.of(ConfigRecord.parseFrom(curator.getData().forPath(config())));
    } catch (KeeperException.NoNodeException e) {
      return Optional.empty();
    }
  }

  /**
   * Publishes {@code xml} as the active cluster.conf if it parses and its config_version is higher
   * than the active one (the old stack's "Activate"). Returns the warnings.
   */
  public List<ConfigProblem> activate(String xml, String by)
      throws ClusterConfigException, StaleConfigException, Exception {
    ClusterConfig parsed = ClusterConfig.parse(xml);
    if (parsed.holdsInlinePassword()) {
      // ZooKeeper is readable by every host: a password written inline would leak there.
      throw new StaleConfigException(
          "the file holds a password inline (passwd=...); use passwd_script so that no password"
              + " is published to ZooKeeper");
    }
    while (true) {
      Stat stat = new Stat();
      ConfigRecord current = null;
      try {
        current = ConfigRecord.parseFrom(curator.getData().storingStatIn(stat).forPath(config()));
      } catch (KeeperException.NoNodeException e) {
        stat = null;
      }
      if (current != null && parsed.configVersion() <= current.getConfigVersion()) {
        throw new StaleConfigException(
            "config_version "
                + parsed.configVersion()
                + " is not higher than the active "
                + current.getConfigVersion()
                + "; raise config_version in the file");
      }
      ConfigRecord next =
          ConfigRecord.newBuilder()
              .setConfigVersion(parsed.configVersion())
              .setXml(xml)
              .setActivatedEpochMillis(System.currentTimeMillis())
              .setActivatedBy(by)
              .build();
      try {
        if (stat == null) {
          curator.create().creatingParentsIfNeeded().forPath(config(), next.toByteArray());
        } else {
          curator.setData().withVersion(stat.getVersion()).forPath(config(), next.toByteArray());
        }
        return parsed.warnings();
      } catch (KeeperException.BadVersionException | KeeperException.NodeExistsException raced) {
        // someone activated meanwhile: compare again
      }
    }
  }

  // ---------------------------------------------------------------- operator actions

  /**
   * fence_ack_manual: the operator states that {@code node}, in {@code incarnation} (0: whichever
   * failed), is off. Only a FAILED or FENCING node can be acknowledged, and only in the incarnation
   * the operator checked: a node that rebooted, rejoined and failed again since is a running host
   * whose locks must not go on an ack meant for its previous life. Nor while the node still holds
   * its lease of that incarnation, unless {@code force}: its agent heartbeats, so the host runs (a
   * {@code dlmctl fence} of a member whose fence agent failed), or it went down less than a
   * ZooKeeper session timeout ago. The fencer then purges its locks at once.
   */
  public FenceNodeRecord acknowledge(String node, long incarnation, String operator)
      throws Exception {
    return acknowledge(node, incarnation, operator, false);
  }

  /** {@link #acknowledge(String, long, String)}, with {@code force}: even while the lease lives. */
  public FenceNodeRecord acknowledge(String node, long incarnation, String operator, boolean force)
      throws Exception {
    while (true) {
      Versioned<FenceNodeRecord> v =
          nodeRecord(node).orElseThrow(() -> new IllegalArgumentException("no node named " + node));
      FenceNodeRecord r = v.value();
      if (incarnation != 0 && r.getIncarnation() != incarnation) {
        throw new IllegalStateException(
            "node "
                + node
                + " is in incarnation "
                + r.getIncarnation()
                + " now ("
                + r.getState()
                + "), not "
                + incarnation
                + ": it started again since. Check again that it is off; then acknowledge"
                + " incarnation "
                + r.getIncarnation());
      }
      if (r.getState() != FenceState.FAILED && r.getState() != FenceState.FENCING) {
        throw new IllegalStateException(
            "node "
                + node
                + " is "
                + r.getState()
                + "; only a FAILED or FENCING node can be acknowledged");
      }
      if (!force && lease(node, r.getIncarnation()).isPresent()) {
        throw new IllegalStateException(
            "node "
                + node
                + " still holds its membership lease of incarnation "
                + r.getIncarnation()
                + ": its agent is heartbeating, so the host runs (or went down less than a"
                + " ZooKeeper session timeout ago), and acknowledging would hand its locks to"
                + " other hosts while it may still write. Fence it for real, or wait for the"
                + " lease to expire (the agent's ZooKeeper session timeout, 10 s by default);"
                + " if you know it is off, acknowledge with --force");
      }
      FenceNodeRecord next =
          r.toBuilder()
              .setState(FenceState.FENCED)
              .setSinceEpochMillis(System.currentTimeMillis())
              .setHow("manual ack by " + operator)
              .setLocksPurged(false)
              .setPowerOnPending(false) // the operator saw to the host's power
              .setLastResult("acknowledged by operator " + operator)
              .build();
      if (compareAndSet(node, v.version(), next)) {
        append(
            event(
                node,
                r.getIncarnation(),
                "ack",
                "FENCED",
                "manual acknowledgement: the operator states the node is off",
                "operator " + operator));
        return next;
      }
    }
  }

  /** Asks the node's agent to leave cleanly ({@code leave}) or to join again. */
  public FenceNodeRecord requestMembership(String node, boolean leave, String operator)
      throws Exception {
    while (true) {
      Versioned<FenceNodeRecord> v =
          nodeRecord(node).orElseThrow(() -> new IllegalArgumentException("no node named " + node));
      FenceNodeRecord r = v.value();
      if (leave && r.getState() != FenceState.MEMBER) {
        throw new IllegalStateException(
            "node " + node + " is " + r.getState() + "; only a MEMBER can leave");
      }
      if (leave && r.getFenceRequested()) {
        throw new IllegalStateException(
            "a fence of node "
                + node
                + " was requested by "
                + r.getRequestedBy()
                + "; a leave would not stop it");
      }
      if (!leave && !mayJoinAgain(r)) {
        throw new IllegalStateException(
            "node "
                + node
                + " is "
                + r.getState()
                + "; only a node that LEFT, or was FENCED and purged, can join again");
      }
      FenceNodeRecord next =
          leave
              ? r.toBuilder().setLeaveRequested(true).setRequestedBy(operator).build()
              : r.toBuilder().setJoinRequested(true).setRequestedBy(operator).build();
      if (compareAndSet(node, v.version(), next)) {
        return next;
      }
    }
  }

  /**
   * Whether a node whose agent still runs may be asked to join again: it left, or it was fenced
   * after it left (an acknowledgement, or a fence that did not end the agent) and its locks are
   * purged.
   */
  static boolean mayJoinAgain(FenceNodeRecord r) {
    return r.getState() == FenceState.LEFT
        || (r.getState() == FenceState.FENCED && r.getLocksPurged());
  }

  /** fence_node: asks the fencer to fence a member now. */
  public FenceNodeRecord requestFence(String node, String operator) throws Exception {
    while (true) {
      Versioned<FenceNodeRecord> v =
          nodeRecord(node).orElseThrow(() -> new IllegalArgumentException("no node named " + node));
      FenceNodeRecord r = v.value();
      if (r.getState() == FenceState.FENCED || r.getState() == FenceState.LEFT) {
        throw new IllegalStateException(
            "node " + node + " is " + r.getState() + "; nothing to fence");
      }
      FenceNodeRecord next = r.toBuilder().setFenceRequested(true).setRequestedBy(operator).build();
      if (compareAndSet(node, v.version(), next)) {
        append(event(node, r.getIncarnation(), "fence-requested", "", "", "operator " + operator));
        return next;
      }
    }
  }
}
