package io.clusterlvm.dlm.engine;

import java.time.Clock;
import java.util.ArrayList;
import java.util.Collection;
import java.util.Comparator;
import java.util.HashMap;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.NavigableMap;
import java.util.Optional;
import java.util.Set;
import java.util.TreeMap;

/**
 * The lock table: lockspaces, resources, their granted/converting/waiting queues, value blocks,
 * fencing tokens and node memberships. A pure data structure: no I/O, no threads, no timers. The
 * server calls it from one thread, writes the records named in {@link Effects} to ZooKeeper, and
 * only then tells anyone what happened.
 *
 * <p>Queue rules (VMS / Linux DLM): a request is granted at once only if its mode is compatible
 * with every held mode and nobody is queued ahead of it; conversions go ahead of new requests; each
 * queue is strictly FIFO, so a compatible request never overtakes an earlier waiter. A
 * down-conversion is always granted at once.
 *
 * <p>Ids, fencing tokens and queue positions come from one counter whose high 32 bits are the
 * leader epoch. Every leader (and every restart) takes a higher epoch, so tokens grow across
 * restarts and fail-over without a ZooKeeper write per grant.
 *
 * <p>Not thread-safe.
 */
public final class LockEngine {
  /** Upper bound on locks per resource, so one resource record stays well below 1 MB. */
  public static final int MAX_LOCKS_PER_RESOURCE = 4000;

  private final Clock clock;
  private long nextId;

  private final NavigableMap<String, NavigableMap<String, Resource>> lockspaces = new TreeMap<>();
  private final Map<Long, Lock> locks = new HashMap<>();
  private final Map<Owner, Set<Lock>> byOwner = new HashMap<>();
  private final Map<Long, Set<Lock>> bySession = new HashMap<>();
  private final Map<RequestKey, Lock> byRequest = new HashMap<>();
  private final Map<String, NodeView> nodes = new TreeMap<>();
  private final long lastId;

  private record RequestKey(Owner owner, String requestId) {}

  public LockEngine(long epoch, Clock clock) {
    if (epoch <= 0 || epoch > 0x7fff_ffffL) {
      throw new IllegalArgumentException("epoch out of range: " + epoch);
    }
    this.clock = clock;
    this.nextId = epoch << 32;
    this.lastId = (epoch << 32) | 0xffff_ffffL;
  }

  /**
   * A new id, unique across restarts and leaders; also used for tokens and queue positions. Ids are
   * the epoch in the high bits and a counter in the low 32: an id past {@link #idsLeft} would
   * belong to the next epoch, whose leader would hand it out again (tokens would go backwards), so
   * this throws instead; the leader starts a new epoch well before.
   */
  public long nextId() {
    if (nextId >= lastId) {
      throw new IllegalStateException(
          "the ids of epoch " + (lastId >>> 32) + " are used up; a new epoch must start");
    }
    return ++nextId;
  }

  /** How many ids this epoch has left. */
  public long idsLeft() {
    return lastId - nextId;
  }

  // ---------------------------------------------------------------- membership

  /** Joins {@code node} with a new incarnation, one higher than any it had. */
  public NodeView join(String node, String bootId, Effects fx) {
    Names.check("node", node);
    NodeView old = nodes.get(node);
    long incarnation = old == null ? 1 : old.incarnation() + 1;
    NodeView now = new NodeView(node, incarnation, NodeState.MEMBER, bootId, clock.millis(), 0);
    nodes.put(node, now);
    fx.dirtyNode(node);
    return now;
  }

  /**
   * A clean leave: every lock of {@code owner} is released as if by its holder (value blocks stay
   * valid) and the node is marked LEFT. Returns the number of locks released.
   */
  public int leave(Owner owner, Effects fx) {
    requireMember(owner);
    int n = dropAll(owner, false, EndedRequest.Reason.PURGED, fx);
    markLeft(owner, n, fx);
    return n;
  }

  /**
   * Drops every lock of {@code owner}, in any incarnation: what the fence bridge calls once the
   * node is known to be off. Value blocks the owner held at PW or EX are marked invalid, since its
   * last write is unknown. If this was the node's current incarnation, the node counts as gone:
   * requests from that incarnation are refused until it joins again.
   */
  public int purge(Owner owner, Effects fx) {
    int n = dropAll(owner, true, EndedRequest.Reason.PURGED, fx);
    NodeView current = nodes.get(owner.node());
    if (current != null && current.isMember(owner)) {
      markLeft(owner, n, fx);
    }
    return n;
  }

  /**
   * Ends a client session: its locks not taken persistent go, as in the Linux DLM when a process
   * exits. A PW/EX holder that vanished without writing its value block invalidates it.
   */
  public int endSession(long sessionId, Effects fx) {
    Set<Lock> mine = bySession.get(sessionId);
    if (mine == null) {
      return 0;
    }
    List<Lock> gone = mine.stream().filter(l -> !l.persistent).toList();
    return removeAbnormally(gone, true, EndedRequest.Reason.SESSION_ENDED, fx);
  }

  public Optional<NodeView> node(String node) {
    return Optional.ofNullable(nodes.get(node));
  }

  public List<NodeView> nodes() {
    return List.copyOf(nodes.values());
  }

  /** Locks held or requested by any incarnation of {@code node}. */
  public int lockCount(String node) {
    int n = 0;
    for (Map.Entry<Owner, Set<Lock>> e : byOwner.entrySet()) {
      if (e.getKey().node().equals(node)) {
        n += e.getValue().size();
      }
    }
    return n;
  }

  /**
   * Whether {@code owner} is the node's current incarnation and no longer a member: it left, or was
   * purged. A leave asked again after its answer was lost finds this.
   */
  public boolean hasLeft(Owner owner) {
    NodeView n = nodes.get(owner.node());
    return n != null && n.incarnation() == owner.incarnation() && n.state() == NodeState.LEFT;
  }

  /** Refuses requests from a node that is not a member in exactly this incarnation. */
  public void requireMember(Owner owner) {
    NodeView n = nodes.get(owner.node());
    if (n == null) {
      throw DlmException.precondition(
          "node " + owner.node() + " has not joined the cluster; join it first");
    }
    if (n.incarnation() != owner.incarnation()) {
      throw DlmException.precondition(
          "node "
              + owner.node()
              + " incarnation "
              + owner.incarnation()
              + " is stale; the current incarnation is "
              + n.incarnation());
    }
    if (n.state() != NodeState.MEMBER) {
      throw DlmException.precondition(
          "node " + owner.node() + " incarnation " + owner.incarnation() + " has left the cluster");
    }
  }

  // ---------------------------------------------------------------- locks

  /**
   * Requests a new lock. A retry with the same (owner, request id) returns the lock the first call
   * made, in whatever state it is now.
   */
  public LockResult acquire(AcquireCommand cmd, Effects fx) {
    requireMember(cmd.owner());
    Names.check("lockspace", cmd.resource().lockspace());
    Names.check("resource", cmd.resource().resource());
    if (cmd.mode() == null) {
      throw DlmException.invalid("lock mode is missing; use one of NL, CR, CW, PR, PW, EX");
    }
    if (cmd.requestId() != null && !cmd.requestId().isEmpty()) {
      Lock earlier = byRequest.get(new RequestKey(cmd.owner(), cmd.requestId()));
      if (earlier != null) {
        return earlier.state == QueueState.GRANTED
            ? new LockResult(Outcome.GRANTED, earlier.view(), grantOf(earlier), true)
            : new LockResult(Outcome.QUEUED, earlier.view(), null, true);
      }
    }
    Resource r =
        lockspaces
            .computeIfAbsent(cmd.resource().lockspace(), k -> new TreeMap<>())
            .get(cmd.resource().resource());
    boolean grantable =
        (r == null
            || (r.converting.isEmpty()
                && r.waiting.isEmpty()
                && r.compatibleWithHolders(cmd.mode(), null)));
    if (!grantable && cmd.noqueue()) {
      dropIfEmptyLockspace(cmd.resource().lockspace());
      return new LockResult(Outcome.WOULD_BLOCK, null, null);
    }
    if (r == null) {
      r = new Resource(cmd.resource());
      lockspaces.get(cmd.resource().lockspace()).put(cmd.resource().resource(), r);
    }
    if (r.lockCount() >= MAX_LOCKS_PER_RESOURCE) {
      throw new DlmException(
          DlmException.Code.RESOURCE_EXHAUSTED,
          r.key
              + " already has "
              + r.lockCount()
              + " locks; the limit is "
              + MAX_LOCKS_PER_RESOURCE);
    }
    Lock l =
        new Lock(
            nextId(),
            r,
            cmd.owner(),
            cmd.sessionId(),
            cmd.persistent(),
            cmd.notifyBlocking(),
            cmd.requestId() == null ? "" : cmd.requestId());
    index(l);
    fx.dirty(r.key);
    if (grantable) {
      l.state = QueueState.GRANTED;
      l.granted = cmd.mode();
      l.token = nextId();
      l.sinceMillis = clock.millis();
      r.granted.add(l);
      Grant g = grantOf(l);
      return new LockResult(Outcome.GRANTED, l.view(), g);
    }
    l.state = QueueState.WAITING;
    l.requested = cmd.mode();
    l.queueSeq = nextId();
    l.sinceMillis = clock.millis();
    r.waiting.add(l);
    notifyBlockers(r, l, fx);
    return new LockResult(Outcome.QUEUED, l.view(), null);
  }

  /**
   * Converts a granted lock to {@code mode}. A retry of a conversion that already happened (or is
   * already queued) returns the current state. {@code requestId} (may be null) names the
   * conversion, so that its caller can {@link #abandonConversion abandon} it if it never hears how
   * it ended.
   */
  public LockResult convert(
      Owner owner,
      long lockId,
      LockMode mode,
      boolean noqueue,
      byte[] valueBlock,
      String requestId,
      Effects fx) {
    requireMember(owner);
    Lock l = owned(owner, lockId);
    if (mode == null) {
      throw DlmException.invalid("lock mode is missing; use one of NL, CR, CW, PR, PW, EX");
    }
    Resource r = l.resource;
    if (l.state == QueueState.WAITING) {
      throw DlmException.precondition(
          "lock " + lockId + " on " + r.key + " is still waiting; it can't be converted yet");
    }
    if (l.state == QueueState.CONVERTING) {
      if (l.requested == mode) {
        noteRepeat(l, requestId, fx);
        return new LockResult(Outcome.QUEUED, l.view(), null); // a retry
      }
      throw DlmException.precondition(
          "lock "
              + lockId
              + " on "
              + r.key
              + " is already converting to "
              + l.requested
              + "; cancel that first");
    }
    // A retry of the latest conversion, which was granted, is answered before the value block is
    // looked at: a down-conversion that wrote it (EX to PR) now holds a mode that may not write,
    // and its retry (its answer lost in a fail-over) must hear that it was done, not refused.
    // lastConversion is persisted with the lock, so this holds on a new leader too.
    if (l.granted == mode && (valueBlock == null || isLatestConversion(l, requestId))) {
      noteRepeat(l, requestId, fx);
      return new LockResult(Outcome.GRANTED, l.view(), grantOf(l)); // nothing to do, or a retry
    }
    if (valueBlock != null) {
      writeValueBlockOnDownConvert(l, mode, valueBlock);
    }
    LockView.Conversion conversion = conversion(requestId, l);
    if (grantableNow(l, mode)) {
      l.lastConversion = conversion;
      grantConversion(l, mode, fx, false);
      fx.dirty(r.key);
      // A down-conversion may unblock others.
      grantPending(r, fx);
      return new LockResult(Outcome.GRANTED, l.view(), grantOf(l));
    }
    if (noqueue) {
      return new LockResult(Outcome.WOULD_BLOCK, l.view(), null);
    }
    // The conversion would queue behind every pending one, and the queue is strictly FIFO. If a
    // conversion ahead of it wants a mode that conflicts with what this lock holds, each would wait
    // for the other forever (the VMS / Linux DLM conversion deadlock).
    for (Lock c : r.converting) {
      if (!c.requested.compatibleWith(l.granted)) {
        return new LockResult(Outcome.DEADLOCK, l.view(), null);
      }
    }
    r.granted.remove(l);
    l.lastConversion = conversion;
    l.state = QueueState.CONVERTING;
    l.requested = mode;
    l.queueSeq = nextId();
    l.sinceMillis = clock.millis();
    l.clearNotified(); // a new request
    r.converting.add(l);
    fx.dirty(r.key);
    notifyBlockers(r, l, fx);
    return new LockResult(Outcome.QUEUED, l.view(), null);
  }

  /**
   * Releases a granted lock (writing the value block if one is given and the lock is PW/EX), or
   * withdraws a waiting request or a whole converting lock.
   */
  public void release(Owner owner, long lockId, byte[] valueBlock, Effects fx) {
    requireMember(owner);
    Lock l = owned(owner, lockId);
    if (valueBlock != null) {
      storeValueBlock(l, valueBlock);
    }
    if (l.state != QueueState.GRANTED) {
      fx.ended(new EndedRequest(l.view(), EndedRequest.Reason.CANCELLED));
    }
    remove(l, fx);
  }

  /**
   * Gives up the acquire that {@code owner} made with {@code requestId}, whose caller stopped
   * waiting without an answer: a waiting request is withdrawn, a granted lock released (nobody
   * knows they hold it). A converting lock is left alone: only a holder that knows the lock
   * converts it. Returns the state the request was found in, or empty if there is none (it never
   * arrived or it ended).
   */
  public Optional<QueueState> abandon(Owner owner, String requestId, Effects fx) {
    requireMember(owner);
    Lock l = byRequest.get(new RequestKey(owner, requestId));
    if (l == null) {
      return Optional.empty();
    }
    QueueState found = l.state;
    switch (found) {
      case WAITING -> cancel(owner, l.id, fx);
      case GRANTED -> release(owner, l.id, null, fx);
      case CONVERTING -> {}
    }
    return Optional.of(found);
  }

  /**
   * A conversion request that changes nothing (it asks for the mode the lock holds or is already
   * converting to) still becomes the lock's latest if it is a new request: its caller was told the
   * lock holds that mode, and an abandon of an earlier conversion must not undo it.
   */
  private static void noteRepeat(Lock l, String requestId, Effects fx) {
    LockView.Conversion c = conversion(requestId, l);
    // A retry of the latest (same id) keeps the mode it was made from.
    if (c != null && !isLatestConversion(l, requestId)) {
      l.lastConversion = c;
      fx.dirty(l.resource.key);
    }
  }

  /** Whether {@code requestId} names {@code l}'s latest conversion (false if it names none). */
  private static boolean isLatestConversion(Lock l, String requestId) {
    return requestId != null
        && !requestId.isEmpty()
        && l.lastConversion != null
        && l.lastConversion.requestId().equals(requestId);
  }

  /**
   * The conversion {@code requestId} (null if it has none) of {@code l}, made from its mode now.
   */
  private static LockView.Conversion conversion(String requestId, Lock l) {
    return requestId == null || requestId.isEmpty()
        ? null
        : new LockView.Conversion(requestId, l.granted);
  }

  /**
   * Whether {@code l} can convert to {@code mode} at once: a down-conversion always can; any other
   * when nothing converts ahead of it and every other holder is compatible.
   */
  private static boolean grantableNow(Lock l, LockMode mode) {
    return mode.isDownConversionFrom(l.granted)
        || (l.resource.converting.isEmpty() && l.resource.compatibleWithHolders(mode, l));
  }

  /**
   * Gives up the conversion of lock {@code lockId} that {@code owner} asked for with {@code
   * requestId}, whose caller stopped waiting without an answer and so believes the lock still holds
   * the mode before it. If it is the lock's latest conversion: a pending one is cancelled, and a
   * granted one is converted back if that can be granted at once (always after an up-conversion,
   * which would otherwise block others in a mode nobody knows it holds; after a sideways or
   * down-conversion if nothing conflicts). Otherwise the lock stays as it is, and the answer gives
   * its mode, which its caller must take instead of the one it believes. Returns the lock's state
   * and mode now, or empty if the lock is gone; {@code reverted} in the result says whether
   * anything was undone.
   */
  public Optional<AbandonedConversion> abandonConversion(
      Owner owner, long lockId, String requestId, Effects fx) {
    requireMember(owner);
    Lock l = locks.get(lockId);
    if (l == null || !l.owner.equals(owner)) {
      return Optional.empty();
    }
    if (!isLatestConversion(l, requestId)) {
      return Optional.of(new AbandonedConversion(l.state, l.granted, false)); // a later one came
    }
    LockView.Conversion c = l.lastConversion;
    l.lastConversion = null;
    fx.dirty(l.resource.key);
    boolean reverted = false;
    if (l.state == QueueState.CONVERTING) {
      cancel(owner, lockId, fx);
      reverted = true;
    } else if (c.before() != l.granted && grantableNow(l, c.before())) {
      grantConversion(l, c.before(), fx, false);
      grantPending(l.resource, fx);
      reverted = true;
    }
    return Optional.of(new AbandonedConversion(l.state, l.granted, reverted));
  }

  /** What {@link #abandonConversion} found and did. */
  public record AbandonedConversion(QueueState state, LockMode mode, boolean reverted) {}

  /**
   * Cancels a waiting request (the lock goes away) or a pending conversion (the lock keeps its
   * granted mode). Returns false if there was nothing to cancel (already granted).
   */
  public boolean cancel(Owner owner, long lockId, Effects fx) {
    if (owner != null) {
      requireMember(owner);
    }
    Lock l = owner == null ? existing(lockId) : owned(owner, lockId);
    Resource r = l.resource;
    switch (l.state) {
      case GRANTED:
        return false;
      case WAITING:
        fx.ended(new EndedRequest(l.view(), EndedRequest.Reason.CANCELLED));
        remove(l, fx);
        return true;
      case CONVERTING:
        fx.ended(new EndedRequest(l.view(), EndedRequest.Reason.CANCELLED));
        r.converting.remove(l);
        l.state = QueueState.GRANTED;
        l.requested = null;
        l.lastConversion = null; // undone: nothing left for an abandon to undo
        l.queueSeq = 0;
        l.clearNotified();
        r.granted.add(l);
        fx.dirty(r.key);
        grantPending(r, fx); // the cancelled conversion may have been the head that blocked others
        return true;
      default:
        throw new IllegalStateException();
    }
  }

  /** The value block, for a holder at PR or above. */
  public Grant readValueBlock(Owner owner, long lockId) {
    requireMember(owner);
    Lock l = owned(owner, lockId);
    if (l.granted == null || !l.granted.readsValueBlock()) {
      throw DlmException.precondition(
          "lock "
              + lockId
              + " is "
              + (l.granted == null ? "not granted" : "held in " + l.granted)
              + "; the value block is readable at PR, PW and EX");
    }
    return grantOf(l);
  }

  /** Writes the value block now, for a holder at PW or EX. */
  public void writeValueBlock(Owner owner, long lockId, byte[] valueBlock, Effects fx) {
    requireMember(owner);
    Lock l = owned(owner, lockId);
    storeValueBlock(l, valueBlock);
    fx.dirty(l.resource.key);
  }

  /** Writes {@code valueBlock} as {@code l}'s holder, which must hold PW or EX. */
  private static void storeValueBlock(Lock l, byte[] valueBlock) {
    if (l.granted == null || !l.granted.writesValueBlock()) {
      throw DlmException.precondition(
          "lock "
              + l.id
              + " is "
              + (l.granted == null ? "not granted" : "held in " + l.granted)
              + "; only PW and EX holders may write the value block");
    }
    Names.checkValueBlock(valueBlock);
    l.resource.valueBlock = valueBlock.clone();
    l.resource.valueBlockValid = true;
  }

  // ---------------------------------------------------------------- views

  public Optional<LockView> lock(long lockId) {
    Lock l = locks.get(lockId);
    return l == null ? Optional.empty() : Optional.of(l.view());
  }

  /**
   * What the holders among {@code lockIds} block now: one event for each request in their
   * resources' queues that a holder is in the way of. For a session that resumes, whose
   * notifications on their way when its stream broke (or its leader died) were lost: each holder is
   * told once per request otherwise, and marked as told even when nobody could hear it, so a
   * request that only later heads the queue would not tell it again.
   */
  public List<BlockingEvent> blockingNow(Collection<Long> lockIds) {
    List<BlockingEvent> out = new ArrayList<>();
    for (long id : lockIds) {
      Lock l = locks.get(id);
      if (l == null || l.state == QueueState.WAITING) {
        continue;
      }
      Resource r = l.resource;
      List<Lock> queued = new ArrayList<>(r.converting);
      queued.addAll(r.waiting);
      for (Lock q : queued) {
        if (r.holdersBlocking(q.requested, q).contains(l)) {
          out.add(new BlockingEvent(l.view(), q.view()));
        }
      }
    }
    return out;
  }

  /**
   * What the persistent holders in the resources {@code keys} block now ({@link #blockingNow}), for
   * the resources with a queue. For a lockspace that a new leader loads after sessions resumed: a
   * resume tells again only what is loaded by then, and a client does not name its persistent locks
   * for the resume to wait for.
   */
  public List<BlockingEvent> blockingByPersistentHolders(Collection<ResourceKey> keys) {
    List<Long> holders = new ArrayList<>();
    for (ResourceKey key : keys) {
      Map<String, Resource> ls = lockspaces.get(key.lockspace());
      Resource r = ls == null ? null : ls.get(key.resource());
      if (r == null || (r.converting.isEmpty() && r.waiting.isEmpty())) {
        continue;
      }
      for (List<Lock> queue : List.of(r.granted, r.converting)) {
        queue.stream().filter(l -> l.persistent).forEach(l -> holders.add(l.id));
      }
    }
    return blockingNow(holders);
  }

  public Optional<Grant> grantState(long lockId) {
    Lock l = locks.get(lockId);
    return l == null || l.state != QueueState.GRANTED ? Optional.empty() : Optional.of(grantOf(l));
  }

  /** The resource as it should be persisted, or empty if it no longer exists. */
  public Optional<ResourceView> resource(ResourceKey key) {
    Map<String, Resource> ls = lockspaces.get(key.lockspace());
    Resource r = ls == null ? null : ls.get(key.resource());
    return r == null ? Optional.empty() : Optional.of(r.view());
  }

  /** Every resource of {@code lockspace} (all lockspaces if null), sorted by name. */
  public List<ResourceView> resources(String lockspace) {
    List<ResourceView> out = new ArrayList<>();
    for (Map.Entry<String, NavigableMap<String, Resource>> e : lockspaces.entrySet()) {
      if (lockspace == null || lockspace.equals(e.getKey())) {
        for (Resource r : e.getValue().values()) {
          out.add(r.view());
        }
      }
    }
    return out;
  }

  /**
   * One page of a listing: the resources after {@code after} (from the first if null) in name
   * order, of {@code lockspace} (of every lockspace if null). Given a {@code node}, only the
   * resources that hold a lock of it in {@code incarnation} (in any if 0), each with only those
   * locks. The page ends at the first of the {@code limits}, so that a listing of a large table
   * neither holds the engine long nor exceeds a message's size.
   *
   * @throws DlmException INVALID_ARGUMENT if {@code after} lies in another lockspace than {@code
   *     lockspace} (a token of another listing)
   */
  public ResourcePage resourcesAfter(
      ResourceKey after, String lockspace, String node, long incarnation, PageLimits limits) {
    NavigableMap<String, NavigableMap<String, Resource>> spaces = lockspaces;
    if (lockspace != null) {
      if (after != null && !after.lockspace().equals(lockspace)) {
        throw DlmException.invalid(
            "page_token is of another listing (lockspace "
                + after.lockspace()
                + ", not "
                + lockspace
                + ")");
      }
      spaces = lockspaces.subMap(lockspace, true, lockspace, true);
    } else if (after != null) {
      spaces = lockspaces.tailMap(after.lockspace(), true);
    }
    List<ResourceView> out = new ArrayList<>();
    int lockCount = 0;
    int scanned = 0;
    for (Map.Entry<String, NavigableMap<String, Resource>> e : spaces.entrySet()) {
      Collection<Resource> resources =
          after != null && after.lockspace().equals(e.getKey())
              ? e.getValue().tailMap(after.resource(), false).values()
              : e.getValue().values();
      for (Resource r : resources) {
        scanned++;
        ResourceView v = node == null ? r.view() : r.viewOf(node, incarnation);
        if (v != null) {
          out.add(v);
          lockCount += v.lockCount();
        }
        if (out.size() >= limits.resources()
            || lockCount >= limits.locks()
            || scanned >= limits.scanned()) {
          return new ResourcePage(out, r.key);
        }
      }
    }
    return new ResourcePage(out, null);
  }

  /**
   * Where a page of a listing ends: after this many resources, after the resource that brings it to
   * this many locks, or after this many resources looked at (a node's few locks in a large table
   * come in several pages, some of them empty).
   */
  public record PageLimits(int resources, int locks, int scanned) {}

  /**
   * A page of a listing. {@code resumeAfter}: the last resource looked at, after which the listing
   * goes on; null once it is complete.
   */
  public record ResourcePage(List<ResourceView> resources, ResourceKey resumeAfter) {}

  public boolean hasLockspace(String lockspace) {
    return lockspaces.containsKey(lockspace);
  }

  public List<LockspaceView> lockspaces() {
    List<LockspaceView> out = new ArrayList<>();
    for (Map.Entry<String, NavigableMap<String, Resource>> e : lockspaces.entrySet()) {
      int g = 0;
      int c = 0;
      int w = 0;
      for (Resource r : e.getValue().values()) {
        g += r.granted.size();
        c += r.converting.size();
        w += r.waiting.size();
      }
      out.add(new LockspaceView(e.getKey(), e.getValue().size(), g, c, w));
    }
    return out;
  }

  public int lockCount() {
    return locks.size();
  }

  public int resourceCount() {
    int n = 0;
    for (NavigableMap<String, Resource> ls : lockspaces.values()) {
      n += ls.size();
    }
    return n;
  }

  /** Ids of the locks a client session holds or requests. */
  public Set<Long> sessionLocks(long sessionId) {
    Set<Lock> mine = bySession.get(sessionId);
    Set<Long> out = new HashSet<>();
    if (mine != null) {
      mine.forEach(l -> out.add(l.id));
    }
    return out;
  }

  /** The owner of a session that owns at least one lock (all of a session's locks share it). */
  public Owner sessionOwner(long sessionId) {
    Set<Lock> mine = bySession.get(sessionId);
    if (mine == null || mine.isEmpty()) {
      throw DlmException.notFound("session " + sessionId + " owns no lock");
    }
    return mine.iterator().next().owner;
  }

  /** Sessions that own at least one lock. */
  public Set<Long> sessions() {
    return Set.copyOf(bySession.keySet());
  }

  // ---------------------------------------------------------------- restore

  /**
   * Rebuilds the table from persisted records, replacing whatever was here. Queue order comes from
   * each lock's queue position; the id counter moves past every id and token seen.
   */
  public void restore(Collection<NodeView> nodeRecords, Collection<ResourceView> resourceRecords) {
    lockspaces.clear();
    locks.clear();
    byOwner.clear();
    bySession.clear();
    byRequest.clear();
    nodes.clear();
    restoreNodes(nodeRecords);
    resourceRecords.forEach(this::restoreResource);
  }

  /** Adds persisted node records to a table being rebuilt (a new engine, or after restore). */
  public void restoreNodes(Collection<NodeView> nodeRecords) {
    for (NodeView n : nodeRecords) {
      nodes.put(n.node(), n);
    }
  }

  /**
   * Adds one persisted resource record to a table being rebuilt, so that a new leader can rebuild
   * while it is still reading the records. The resource must not be in the table yet.
   */
  public void restoreResource(ResourceView rv) {
    Resource r = new Resource(rv.key());
    r.valueBlock = rv.valueBlock().clone();
    r.valueBlockValid = rv.valueBlockValid();
    List<LockView> all = new ArrayList<>(rv.lockCount());
    all.addAll(rv.granted());
    all.addAll(rv.converting());
    all.addAll(rv.waiting());
    all.sort(Comparator.comparingLong(LockView::queueSeq));
    long maxSeen = 0;
    for (LockView v : all) {
      Lock l =
          new Lock(
              v.lockId(),
              r,
              v.owner(),
              v.sessionId(),
              v.persistent(),
              v.notifyBlocking(),
              v.requestId());
      l.state = v.state();
      l.granted = v.grantedMode();
      l.requested = v.requestedMode();
      l.token = v.fencingToken();
      l.queueSeq = v.queueSeq();
      l.sinceMillis = v.sinceMillis();
      l.lastConversion = v.lastConversion();
      switch (l.state) {
        case GRANTED -> r.granted.add(l);
        case CONVERTING -> r.converting.add(l);
        case WAITING -> r.waiting.add(l);
      }
      index(l);
      maxSeen = Math.max(maxSeen, Math.max(v.lockId(), Math.max(v.fencingToken(), v.queueSeq())));
    }
    if (!r.isDisposable()) {
      lockspaces
          .computeIfAbsent(rv.key().lockspace(), k -> new TreeMap<>())
          .put(rv.key().resource(), r);
    }
    nextId = Math.max(nextId, maxSeen);
  }

  // ---------------------------------------------------------------- internals

  private Lock existing(long lockId) {
    Lock l = locks.get(lockId);
    if (l == null) {
      throw DlmException.notFound("no lock with id " + lockId);
    }
    return l;
  }

  private Lock owned(Owner owner, long lockId) {
    Lock l = existing(lockId);
    if (!l.owner.equals(owner)) {
      throw DlmException.denied(
          "lock "
              + lockId
              + " on "
              + l.resource.key
              + " belongs to node "
              + l.owner.node()
              + " incarnation "
              + l.owner.incarnation()
              + ", not to "
              + owner.node()
              + " incarnation "
              + owner.incarnation());
    }
    return l;
  }

  private void writeValueBlockOnDownConvert(Lock l, LockMode to, byte[] valueBlock) {
    if (l.granted.writesValueBlock() && !to.isDownConversionFrom(l.granted)) {
      throw DlmException.precondition(
          "the value block is written on a down-conversion; "
              + l.granted
              + " to "
              + to
              + " is not");
    }
    storeValueBlock(l, valueBlock);
  }

  private Grant grantOf(Lock l) {
    Resource r = l.resource;
    boolean reads = l.granted != null && l.granted.readsValueBlock();
    return new Grant(l.view(), reads ? r.valueBlock.clone() : new byte[0], r.valueBlockValid);
  }

  private void index(Lock l) {
    locks.put(l.id, l);
    byOwner.computeIfAbsent(l.owner, k -> new java.util.LinkedHashSet<>()).add(l);
    if (l.sessionId != 0) {
      bySession.computeIfAbsent(l.sessionId, k -> new java.util.LinkedHashSet<>()).add(l);
    }
    if (!l.requestId.isEmpty()) {
      byRequest.put(new RequestKey(l.owner, l.requestId), l);
    }
  }

  private void unindex(Lock l) {
    locks.remove(l.id);
    removeFrom(byOwner, l.owner, l);
    if (l.sessionId != 0) {
      removeFrom(bySession, l.sessionId, l);
    }
    if (!l.requestId.isEmpty()) {
      byRequest.remove(new RequestKey(l.owner, l.requestId), l);
    }
  }

  private static <K> void removeFrom(Map<K, Set<Lock>> index, K key, Lock l) {
    Set<Lock> set = index.get(key);
    if (set != null) {
      set.remove(l);
      if (set.isEmpty()) {
        index.remove(key);
      }
    }
  }

  /** Takes a lock off its resource and hands the resource on to whoever can go next. */
  private void remove(Lock l, Effects fx) {
    detach(l, fx);
    settle(l.resource, fx);
  }

  /** Takes a lock off its resource and out of every index, granting nothing yet. */
  private void detach(Lock l, Effects fx) {
    Resource r = l.resource;
    r.granted.remove(l);
    r.converting.remove(l);
    r.waiting.remove(l);
    unindex(l);
    fx.dirty(r.key);
  }

  /** Grants what became grantable on {@code r}, and forgets {@code r} if nothing is left of it. */
  private void settle(Resource r, Effects fx) {
    grantPending(r, fx);
    if (r.isDisposable()) {
      Map<String, Resource> ls = lockspaces.get(r.key.lockspace());
      ls.remove(r.key.resource());
      dropIfEmptyLockspace(r.key.lockspace());
    }
  }

  private void dropIfEmptyLockspace(String lockspace) {
    Map<String, Resource> ls = lockspaces.get(lockspace);
    if (ls != null && ls.isEmpty()) {
      lockspaces.remove(lockspace);
    }
  }

  /**
   * Locks that go without their holder releasing them (purge, leave, session end). All of them
   * leave their queues first and only then is anything granted, so none of them is handed a lock
   * (and a token) on its way out, and a request of theirs ends as ended, not as granted.
   */
  private int removeAbnormally(
      List<Lock> gone, boolean invalidateValueBlock, EndedRequest.Reason reason, Effects fx) {
    Set<Resource> touched = new java.util.LinkedHashSet<>();
    for (Lock l : gone) {
      if (l.state != QueueState.GRANTED) {
        fx.ended(new EndedRequest(l.view(), reason));
      }
      if (invalidateValueBlock && l.granted != null && l.granted.writesValueBlock()) {
        // Its holder may have changed what the value block describes without writing it back.
        l.resource.valueBlockValid = false;
      }
      detach(l, fx);
      touched.add(l.resource);
    }
    for (Resource r : touched) {
      settle(r, fx);
    }
    return gone.size();
  }

  private int dropAll(
      Owner owner, boolean invalidateValueBlock, EndedRequest.Reason reason, Effects fx) {
    Set<Lock> mine = byOwner.get(owner);
    if (mine == null) {
      return 0;
    }
    return removeAbnormally(List.copyOf(mine), invalidateValueBlock, reason, fx);
  }

  private void markLeft(Owner owner, int released, Effects fx) {
    NodeView n = nodes.get(owner.node());
    nodes.put(
        owner.node(),
        new NodeView(
            n.node(), n.incarnation(), NodeState.LEFT, n.bootId(), clock.millis(), released));
    fx.dirtyNode(owner.node());
  }

  private void grantConversion(Lock l, LockMode mode, Effects fx, boolean fromQueue) {
    Resource r = l.resource;
    if (fromQueue) {
      r.converting.remove(l);
      r.granted.add(l);
    }
    l.state = QueueState.GRANTED;
    l.granted = mode;
    l.requested = null;
    l.queueSeq = 0;
    l.token = nextId();
    l.sinceMillis = clock.millis();
    if (fromQueue) {
      fx.granted(grantOf(l));
    }
  }

  /**
   * Grants whatever has become grantable, strictly in queue order: the converting queue first,
   * then, only once no conversion is pending, the waiting queue. Then tells the holders that block
   * the new head of the line.
   */
  private void grantPending(Resource r, Effects fx) {
    while (!r.converting.isEmpty()) {
      Lock head = r.converting.iterator().next();
      if (!r.compatibleWithHolders(head.requested, head)) {
        break;
      }
      grantConversion(head, head.requested, fx, true);
      fx.dirty(r.key);
    }
    if (r.converting.isEmpty()) {
      while (!r.waiting.isEmpty()) {
        Lock head = r.waiting.iterator().next();
        if (!r.compatibleWithHolders(head.requested, null)) {
          break;
        }
        r.waiting.remove(head);
        head.state = QueueState.GRANTED;
        head.granted = head.requested;
        head.requested = null;
        head.queueSeq = 0;
        head.token = nextId();
        head.sinceMillis = clock.millis();
        r.granted.add(head);
        fx.granted(grantOf(head));
        fx.dirty(r.key);
      }
    }
    Lock head =
        !r.converting.isEmpty()
            ? r.converting.iterator().next()
            : !r.waiting.isEmpty() ? r.waiting.iterator().next() : null;
    if (head != null) {
      notifyBlockers(r, head, fx);
    }
  }

  /**
   * Tells every holder in the way of the queue's head, once per request: in full those that asked
   * ({@code notifyBlocking}), the others as a hint, so that their client sends a release it would
   * otherwise hold back at once (see {@link BlockingEvent}).
   */
  private void notifyBlockers(Resource r, Lock blocked, Effects fx) {
    for (Lock h : r.holdersBlocking(blocked.requested, blocked)) {
      if (blocked.markNotified(h.id)) {
        fx.blocking(new BlockingEvent(h.view(), blocked.view()));
      }
    }
  }
}
