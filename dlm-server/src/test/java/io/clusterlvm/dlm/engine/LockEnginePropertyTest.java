package io.clusterlvm.dlm.engine;

import static io.clusterlvm.dlm.engine.EngineFixtures.CLOCK;
import static io.clusterlvm.dlm.engine.EngineFixtures.snapshot;

import io.clusterlvm.dlm.engine.EngineFixtures.ResourceSnapshot;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Objects;
import java.util.Set;
import java.util.TreeSet;
import java.util.function.Supplier;
import java.util.stream.Collectors;
import java.util.stream.Stream;
import net.jqwik.api.Arbitraries;
import net.jqwik.api.Arbitrary;
import net.jqwik.api.Combinators;
import net.jqwik.api.EdgeCasesMode;
import net.jqwik.api.ForAll;
import net.jqwik.api.Property;
import net.jqwik.api.Provide;
import net.jqwik.api.ShrinkingMode;
import net.jqwik.api.Tuple;
import net.jqwik.api.statistics.Statistics;

/**
 * Random sequences of requests from several nodes, incarnations and sessions against one engine,
 * with the engine's invariants checked after every step. A failure reports the sequence cut down to
 * the steps that still break an invariant (see {@link #minimise}; jqwik's own shrinking is off),
 * with a trace of what each step did and the table at the end.
 *
 * <p>jqwik does not honour JUnit's {@code @Timeout}; the bounded tries and sequence length keep the
 * property to a few seconds instead.
 */
class LockEnginePropertyTest {
  private static final List<String> NODES = List.of("n1", "n2", "n3");
  private static final List<ResourceKey> RESOURCES =
      List.of(
          new ResourceKey("ls", "r1"), new ResourceKey("ls", "r2"), new ResourceKey("ls2", "r1"));
  private static final List<Long> SESSIONS = List.of(0L, 11L, 12L);

  @Property(tries = 150, shrinking = ShrinkingMode.OFF, edgeCases = EdgeCasesMode.NONE)
  void invariantsHoldAfterEveryStep(@ForAll("actions") List<Action> actions) {
    Throwable failure = run(actions);
    if (failure != null) {
      // jqwik's list shrinking only cuts at the ends; removing steps from the middle finds a much
      // shorter sequence that still breaks an invariant.
      List<Action> shortest = minimise(actions);
      Throwable minimal = run(shortest);
      AssertionError e =
          new AssertionError(
              "invariant broken; the "
                  + actions.size()
                  + " steps shrink to these "
                  + shortest.size()
                  + ":\n"
                  + shortest.stream()
                      .map(Object::toString)
                      .collect(Collectors.joining("\n  ", "  ", "\n"))
                  + minimal.getMessage(),
              minimal);
      e.addSuppressed(failure);
      throw e;
    }
  }

  /** Runs the steps on a fresh engine; returns what broke, or null. */
  private static Throwable run(List<Action> actions) {
    Harness h = new Harness();
    try {
      for (Action a : actions) {
        h.apply(a);
      }
      return null;
    } catch (AssertionError | RuntimeException e) {
      return e;
    }
  }

  /** Removes chunks of steps, then single steps, as long as the rest still fails. */
  private static List<Action> minimise(List<Action> actions) {
    List<Action> current = new ArrayList<>(actions);
    boolean shorter = true;
    while (shorter) {
      shorter = false;
      for (int chunk = Math.max(1, current.size() / 2); chunk >= 1; chunk /= 2) {
        int i = 0;
        while (i + chunk <= current.size()) {
          List<Action> candidate = new ArrayList<>(current.subList(0, i));
          candidate.addAll(current.subList(i + chunk, current.size()));
          if (run(candidate) != null) {
            current = candidate;
            shorter = true;
          } else {
            i += chunk;
          }
        }
      }
    }
    return current;
  }

  // ------------------------------------------------------------------ actions

  enum Lvb {
    NONE,
    SMALL,
    OVERSIZED
  }

  /**
   * One step. Owners and locks are picked by position among those that exist when the step runs, so
   * that a step still means something after others are removed.
   */
  sealed interface Action {}

  /** Joins a node again: it gets a new incarnation, and the old one's locks stay frozen. */
  record Join(int node) implements Action {
    @Override
    public String toString() {
      return "join(" + NODES.get(node) + ")";
    }
  }

  /** {@code owner} 0..2 picks a member, 3 an incarnation that is stale or has left. */
  record Acquire(
      int owner,
      int session,
      int resource,
      LockMode mode,
      boolean noqueue,
      boolean persistent,
      boolean notifyBlocking,
      int requestId)
      implements Action {
    @Override
    public String toString() {
      return "acquire(owner#"
          + owner
          + (session == 0 ? "" : " s" + SESSIONS.get(session))
          + " "
          + RESOURCES.get(resource).lockspace()
          + "/"
          + RESOURCES.get(resource).resource()
          + " "
          + mode
          + (noqueue ? " noqueue" : "")
          + (persistent ? " persistent" : "")
          + (notifyBlocking ? " notify" : "")
          + (requestId > 0 ? " req-" + requestId : "")
          + ")";
    }
  }

  /** A lock picked by position (in id order) among the locks of one resource. */
  record LockPick(int resource, int lock) {
    @Override
    public String toString() {
      return RESOURCES.get(resource).lockspace()
          + "/"
          + RESOURCES.get(resource).resource()
          + "#"
          + lock;
    }
  }

  record Convert(LockPick lock, LockMode mode, boolean noqueue, Lvb lvb) implements Action {
    @Override
    public String toString() {
      return "convert("
          + lock
          + " to "
          + mode
          + (noqueue ? " noqueue" : "")
          + (lvb == Lvb.NONE ? "" : " lvb " + lvb)
          + ")";
    }
  }

  record Release(LockPick lock, Lvb lvb) implements Action {
    @Override
    public String toString() {
      return "release(" + lock + (lvb == Lvb.NONE ? "" : " lvb " + lvb) + ")";
    }
  }

  record Cancel(LockPick lock, boolean admin) implements Action {
    @Override
    public String toString() {
      return "cancel(" + lock + (admin ? " by admin" : "") + ")";
    }
  }

  record WriteValueBlock(LockPick lock, Lvb lvb) implements Action {
    @Override
    public String toString() {
      return "writeValueBlock(" + lock + " " + lvb + ")";
    }
  }

  record Purge(int owner) implements Action {
    @Override
    public String toString() {
      return "purge(owner#" + owner + ")";
    }
  }

  record EndSession(int session) implements Action {
    @Override
    public String toString() {
      return "endSession(s" + SESSIONS.get(session) + ")";
    }
  }

  record Leave(int node) implements Action {
    @Override
    public String toString() {
      return "leave(" + NODES.get(node) + ")";
    }
  }

  /** A new leader: the table is restored from its records into an engine with a higher epoch. */
  record Failover() implements Action {
    @Override
    public String toString() {
      return "failover()";
    }
  }

  @Provide
  Arbitrary<List<Action>> actions() {
    Arbitrary<Integer> node = Arbitraries.integers().between(0, NODES.size() - 1);
    Arbitrary<Integer> owner =
        Arbitraries.frequency(Tuple.of(2, 0), Tuple.of(2, 1), Tuple.of(2, 2), Tuple.of(1, 3));
    Arbitrary<Integer> session = Arbitraries.integers().between(0, SESSIONS.size() - 1);
    Arbitrary<Integer> resource =
        Arbitraries.frequency(Tuple.of(4, 0), Tuple.of(2, 1), Tuple.of(1, 2));
    Arbitrary<LockPick> lock =
        Combinators.combine(resource, Arbitraries.integers().between(0, 5)).as(LockPick::new);
    // Weighted so that readers share and then convert up into each other: queues and conversion
    // deadlocks form.
    Arbitrary<LockMode> mode =
        Arbitraries.frequency(
            Tuple.of(1, LockMode.NL),
            Tuple.of(2, LockMode.CR),
            Tuple.of(1, LockMode.CW),
            Tuple.of(4, LockMode.PR),
            Tuple.of(1, LockMode.PW),
            Tuple.of(2, LockMode.EX));
    Arbitrary<LockMode> convertTo =
        Arbitraries.frequency(
            Tuple.of(1, LockMode.NL),
            Tuple.of(1, LockMode.CR),
            Tuple.of(1, LockMode.CW),
            Tuple.of(2, LockMode.PR),
            Tuple.of(2, LockMode.PW),
            Tuple.of(3, LockMode.EX));
    Arbitrary<Lvb> lvb =
        Arbitraries.frequency(
            Tuple.of(6, Lvb.NONE), Tuple.of(3, Lvb.SMALL), Tuple.of(1, Lvb.OVERSIZED));
    // Most conversions are not down from PW/EX, where a value block would be refused.
    Arbitrary<Lvb> convertLvb =
        Arbitraries.frequency(
            Tuple.of(12, Lvb.NONE), Tuple.of(3, Lvb.SMALL), Tuple.of(1, Lvb.OVERSIZED));
    Arbitrary<Boolean> rarely = Arbitraries.frequency(Tuple.of(4, false), Tuple.of(1, true));
    Arbitrary<Boolean> often = Arbitraries.frequency(Tuple.of(1, false), Tuple.of(2, true));

    Arbitrary<Action> acquire =
        Combinators.combine(
                owner,
                session,
                resource,
                mode,
                rarely,
                rarely,
                often,
                Arbitraries.frequency(Tuple.of(3, 0), Tuple.of(1, 1), Tuple.of(1, 2)))
            .as(Acquire::new);
    Arbitrary<Action> convert =
        Combinators.combine(lock, convertTo, rarely, convertLvb).as(Convert::new);
    Arbitrary<Action> release = Combinators.combine(lock, lvb).as(Release::new);
    Arbitrary<Action> cancel = Combinators.combine(lock, rarely).as(Cancel::new);
    Arbitrary<Action> write =
        Combinators.combine(lock, Arbitraries.of(Lvb.SMALL, Lvb.OVERSIZED))
            .as(WriteValueBlock::new);

    Arbitrary<Action> action =
        Arbitraries.frequencyOf(
            Tuple.of(10, acquire),
            Tuple.of(8, convert),
            Tuple.of(3, release),
            Tuple.of(2, cancel),
            Tuple.of(1, write),
            Tuple.of(1, owner.map(Purge::new)),
            Tuple.of(1, session.map(EndSession::new)),
            Tuple.of(1, node.map(Leave::new)),
            Tuple.of(1, node.map(Join::new)),
            Tuple.of(1, Arbitraries.just(new Failover())));
    return action.list().ofMinSize(40).ofMaxSize(60);
  }

  // ------------------------------------------------------------------ harness

  /**
   * What one step did to the engine, besides its effects.
   *
   * @param wroteTo the resource whose value block the step wrote, if it did
   */
  private record Step(String text, LockResult result, ResourceKey wroteTo, byte[] wrote) {
    Step(String text, LockResult result) {
      this(text, result, null, null);
    }
  }

  private static final class Harness {
    private LockEngine engine = new LockEngine(1, CLOCK);
    private int epoch = 1;
    private int stepNo;
    private final List<String> trace = new ArrayList<>();

    /** Who the current step acts for, if it acts for an owner. */
    private Owner actor;

    /** Every incarnation ever joined, in join order. */
    private final List<Owner> owners = new ArrayList<>();

    /** Highest fencing token ever granted per resource. */
    private final Map<ResourceKey, Long> maxToken = new HashMap<>();

    /** (holder id, blocked id, blocked queueSeq) told by the current engine. */
    private final Set<List<Long>> toldNow = new HashSet<>();

    /** The same, across fail-overs. */
    private final Set<List<Long>> toldEver = new HashSet<>();

    Harness() {
      Effects fx = new Effects();
      for (String n : NODES) {
        owners.add(engine.join(n, "boot-" + n, fx).owner());
      }
    }

    void apply(Action action) {
      stepNo++;
      Map<ResourceKey, ResourceSnapshot> before = snapshot(engine);
      Map<Long, LockView> locksBefore = locks(engine);
      List<NodeView> nodesBefore = engine.nodes();
      Effects fx = new Effects();
      Step step;
      actor = null;
      try {
        step = run(action, fx);
      } catch (DlmException e) {
        step = new Step("refused " + e.code() + ": " + e.getMessage(), null);
        Statistics.label("steps")
            .collect(action.getClass().getSimpleName() + " refused " + e.code());
        trace.add(stepNo + ". " + action + " -> " + step.text());
        check(snapshot(engine).equals(before), () -> "a refused request changed the lock table");
        check(engine.nodes().equals(nodesBefore), () -> "a refused request changed the nodes");
        check(
            fx.grants().isEmpty()
                && fx.ended().isEmpty()
                && fx.blocking().isEmpty()
                && !fx.needsWrite(),
            () -> "a refused request has effects");
        checkInvariants();
        return;
      }
      trace.add(stepNo + ". " + action + " -> " + step.text());
      if (actor != null) {
        NodeView n =
            nodesBefore.stream()
                .filter(x -> x.node().equals(actor.node()))
                .findFirst()
                .orElseThrow();
        check(
            n.incarnation() == actor.incarnation() && n.state() == NodeState.MEMBER,
            () -> "a request of " + actor + ", which is not a member, was not refused");
      }
      Statistics.label("steps")
          .collect(
              action.getClass().getSimpleName()
                  + (step.result() != null
                      ? " " + step.result().outcome()
                      : step.text().equals("no lock") ? " no lock" : ""));
      checkStep(action, step, fx, before, locksBefore, nodesBefore);
      checkInvariants();
    }

    // ---------------------------------------------------------------- running actions

    private Step run(Action action, Effects fx) {
      if (action instanceof Join j) {
        NodeView n = engine.join(NODES.get(j.node()), "boot", fx);
        owners.add(n.owner());
        return new Step("joined " + n.owner(), null);
      }
      if (action instanceof Acquire a) {
        Owner o = pickOwner(a.owner());
        actor = o;
        AcquireCommand cmd =
            new AcquireCommand(
                a.requestId() == 0 ? "" : "req-" + a.requestId(),
                o,
                SESSIONS.get(a.session()),
                RESOURCES.get(a.resource()),
                a.mode(),
                a.noqueue(),
                a.persistent(),
                a.notifyBlocking());
        LockResult r = engine.acquire(cmd, fx);
        return new Step(
            "by " + o + ": " + r.outcome() + (r.lock() == null ? "" : ", " + describe(r.lock())),
            r);
      }
      if (action instanceof Failover) {
        epoch++;
        LockEngine next = new LockEngine(epoch, CLOCK);
        next.restore(engine.nodes(), engine.resources(null));
        engine = next;
        toldNow.clear();
        return new Step("epoch " + epoch, null);
      }
      if (action instanceof Purge p) {
        Owner o = pickOwner(p.owner());
        return new Step(o + ": " + engine.purge(o, fx) + " locks purged", null);
      }
      if (action instanceof EndSession s) {
        return new Step(engine.endSession(SESSIONS.get(s.session()), fx) + " locks dropped", null);
      }
      if (action instanceof Leave l) {
        NodeView n = engine.node(NODES.get(l.node())).orElseThrow();
        actor = n.owner();
        int count = engine.leave(n.owner(), fx);
        return new Step(n.owner() + " left with " + count + " locks", null);
      }
      // The rest act on a lock, on behalf of its owner.
      LockPick pick =
          action instanceof Convert c
              ? c.lock()
              : action instanceof Release r
                  ? r.lock()
                  : action instanceof Cancel c ? c.lock() : ((WriteValueBlock) action).lock();
      // Conversions pick among granted locks; converting a queued request is refused, which the
      // examples cover.
      LockView l = pickLock(pick, action instanceof Convert);
      if (l == null) {
        return new Step("no lock", null);
      }
      actor = action instanceof Cancel c && c.admin() ? null : l.owner();
      if (action instanceof Convert c) {
        byte[] vb = bytes(c.lvb());
        LockResult r = engine.convert(l.owner(), l.lockId(), c.mode(), c.noqueue(), vb, null, fx);
        // A value block goes with a down-conversion, which is always granted at once.
        boolean wrote = vb != null && r.outcome() == Outcome.GRANTED;
        return new Step(
            describe(l) + ": " + r.outcome(), r, wrote ? l.resource() : null, wrote ? vb : null);
      }
      if (action instanceof Release r) {
        byte[] vb = bytes(r.lvb());
        engine.release(l.owner(), l.lockId(), vb, fx);
        return new Step("released " + describe(l), null, vb == null ? null : l.resource(), vb);
      }
      if (action instanceof Cancel c) {
        boolean done = engine.cancel(c.admin() ? null : l.owner(), l.lockId(), fx);
        return new Step(describe(l) + ": " + (done ? "cancelled" : "nothing to cancel"), null);
      }
      byte[] vb = bytes(((WriteValueBlock) action).lvb());
      engine.writeValueBlock(l.owner(), l.lockId(), vb, fx);
      return new Step("wrote through " + describe(l), null, l.resource(), vb);
    }

    /**
     * Picks 0..2 name a member (in join order), 3 an incarnation that is stale or has left, if
     * there is one.
     */
    private Owner pickOwner(int pick) {
      List<Owner> members = new ArrayList<>();
      List<Owner> gone = new ArrayList<>();
      for (Owner o : owners) {
        NodeView n = engine.node(o.node()).orElseThrow();
        boolean member = n.incarnation() == o.incarnation() && n.state() == NodeState.MEMBER;
        (member ? members : gone).add(o);
      }
      if ((pick >= NODES.size() || members.isEmpty()) && !gone.isEmpty()) {
        return gone.get(pick % gone.size());
      }
      return members.get(pick % members.size());
    }

    /**
     * A lock of the pick's resource, in id order; only among the granted ones if {@code granted}
     * and there are any. If the resource has no locks, one of all locks instead.
     */
    private LockView pickLock(LockPick pick, boolean granted) {
      ResourceView r = engine.resource(RESOURCES.get(pick.resource())).orElse(null);
      List<LockView> all = new ArrayList<>();
      if (r != null) {
        all.addAll(r.granted());
        if (!granted || all.isEmpty()) {
          all.addAll(r.converting());
          all.addAll(r.waiting());
        }
      }
      if (all.isEmpty()) {
        all.addAll(locks(engine).values());
      }
      if (all.isEmpty()) {
        return null;
      }
      all.sort((x, y) -> Long.compare(x.lockId(), y.lockId()));
      return all.get(pick.lock() % all.size());
    }

    private byte[] bytes(Lvb lvb) {
      return switch (lvb) {
        case NONE -> null;
        case SMALL -> ("v" + stepNo).getBytes(StandardCharsets.US_ASCII);
        case OVERSIZED -> new byte[Names.MAX_VALUE_BLOCK_BYTES + 1];
      };
    }

    private static String describe(LockView l) {
      return "lock "
          + l.lockId()
          + " of "
          + l.owner()
          + " on "
          + l.resource()
          + " "
          + l.state()
          + (l.grantedMode() == null ? "" : " held " + l.grantedMode())
          + (l.requestedMode() == null ? "" : " wants " + l.requestedMode());
    }

    // ---------------------------------------------------------------- checks of one step

    private void checkStep(
        Action action,
        Step step,
        Effects fx,
        Map<ResourceKey, ResourceSnapshot> before,
        Map<Long, LockView> locksBefore,
        List<NodeView> nodesBefore) {
      Map<ResourceKey, ResourceSnapshot> after = snapshot(engine);
      Map<Long, LockView> locksAfter = locks(engine);
      LockResult result = step.result();

      // Results say what happened.
      if (result != null) {
        switch (result.outcome()) {
          case WOULD_BLOCK, DEADLOCK -> {
            check(after.equals(before), () -> result.outcome() + " changed the lock table");
            check(
                !fx.needsWrite() && fx.grants().isEmpty(), () -> result.outcome() + " has effects");
            if (result.outcome() == Outcome.WOULD_BLOCK) {
              check(
                  action instanceof Acquire a ? a.noqueue() : ((Convert) action).noqueue(),
                  () -> "WOULD_BLOCK without noqueue");
            }
          }
          case GRANTED -> {
            LockView now = locksAfter.get(result.lock().lockId());
            check(
                now != null && now.state() == QueueState.GRANTED,
                () -> "GRANTED lock is not granted");
            check(result.grant() != null, () -> "GRANTED without a grant");
            check(now.fencingToken() == result.grant().lock().fencingToken(), () -> "grant token");
          }
          case QUEUED -> {
            LockView now = locksAfter.get(result.lock().lockId());
            check(
                now != null && now.state() != QueueState.GRANTED,
                () -> "QUEUED lock is not queued: " + now);
          }
        }
        if (action instanceof Acquire a
            && !locksBefore.containsKey(result.lock() == null ? -1 : result.lock().lockId())
            && result.lock() != null) {
          // A new lock: granted exactly when nothing is queued and nothing held conflicts.
          ResourceSnapshot r = before.get(RESOURCES.get(a.resource()));
          boolean grantable =
              r == null
                  || (r.converting().isEmpty()
                      && r.waiting().isEmpty()
                      && holders(r).stream()
                          .allMatch(h -> h.grantedMode().compatibleWith(a.mode())));
          check(
              grantable == (result.outcome() == Outcome.GRANTED),
              () ->
                  "new request "
                      + (grantable ? "not granted though it could be" : "overtook the queue"));
        }
        if (action instanceof Acquire a && a.requestId() > 0) {
          // A retry with the request id of a live lock returns that lock and adds nothing.
          String rid = "req-" + a.requestId();
          LockView earlier =
              locksBefore.values().stream()
                  .filter(l -> l.requestId().equals(rid) && l.owner().equals(actor))
                  .findFirst()
                  .orElse(null);
          if (earlier != null) {
            check(
                result.lock() != null
                    && result.lock().lockId() == earlier.lockId()
                    && locksAfter.size() == locksBefore.size()
                    && after.equals(before),
                () -> "a retry of " + rid + " did not return lock " + earlier.lockId());
          }
        }
        if (action instanceof Acquire a && result.outcome() == Outcome.WOULD_BLOCK) {
          ResourceSnapshot r = before.get(RESOURCES.get(a.resource()));
          check(
              r != null
                  && (!r.converting().isEmpty()
                      || !r.waiting().isEmpty()
                      || holders(r).stream()
                          .anyMatch(h -> !h.grantedMode().compatibleWith(a.mode()))),
              () -> "WOULD_BLOCK though the request was grantable");
        }
      }

      // (c) Fencing tokens: every grant in this step takes a token above any earlier one.
      Set<Long> grantIds = new HashSet<>();
      for (Grant g : fx.grants()) {
        grantIds.add(g.lock().lockId());
        LockView now = locksAfter.get(g.lock().lockId());
        check(
            now != null && now.state() == QueueState.GRANTED && now.equals(g.lock()),
            () ->
                "granted lock " + g.lock().lockId() + " is not held as granted at the end: " + now);
        ResourceSnapshot r = after.get(g.lock().resource());
        check(
            g.valueBlockValid() == r.valueBlockValid(),
            () -> "grant shows a stale value block validity");
        String expectVb = g.lock().grantedMode().readsValueBlock() ? r.valueBlock() : "";
        check(
            java.util.HexFormat.of().formatHex(g.valueBlock()).equals(expectVb),
            () -> "grant carries the wrong value block");
      }
      if (result != null && result.grant() != null && result.outcome() == Outcome.GRANTED) {
        grantIds.add(result.lock().lockId());
      }
      Map<ResourceKey, List<Long>> newTokens = new HashMap<>();
      for (LockView l : locksAfter.values()) {
        LockView was = locksBefore.get(l.lockId());
        if (l.fencingToken() != 0 && (was == null || was.fencingToken() != l.fencingToken())) {
          newTokens.computeIfAbsent(l.resource(), k -> new ArrayList<>()).add(l.fencingToken());
          check(
              grantIds.contains(l.lockId()),
              () -> "lock " + l.lockId() + " got a new token without a grant being reported");
        }
      }
      for (Map.Entry<ResourceKey, List<Long>> e : newTokens.entrySet()) {
        long floor = maxToken.getOrDefault(e.getKey(), 0L);
        for (long t : e.getValue()) {
          check(t > floor, () -> "token " + t + " on " + e.getKey() + " is not above " + floor);
        }
        check(new HashSet<>(e.getValue()).size() == e.getValue().size(), () -> "duplicate tokens");
        maxToken.put(e.getKey(), Math.max(floor, e.getValue().stream().max(Long::compare).get()));
      }
      Map<ResourceKey, Long> lastInStep = new HashMap<>();
      for (Grant g : fx.grants()) {
        long prev = lastInStep.getOrDefault(g.lock().resource(), 0L);
        check(g.lock().fencingToken() > prev, () -> "grants of one step are not in token order");
        lastInStep.put(g.lock().resource(), g.lock().fencingToken());
      }

      // A lock whose held mode changed was granted, and took a new token.
      for (LockView l : locksAfter.values()) {
        LockView was = locksBefore.get(l.lockId());
        if (was != null && l.grantedMode() != null && was.grantedMode() != l.grantedMode()) {
          check(
              l.fencingToken() != was.fencingToken(),
              () -> describe(l) + " changed mode without a new fencing token");
        }
      }

      // Value blocks: written by the step if it says so, lost when a PW/EX holder was purged or
      // its session ended, unchanged otherwise.
      Set<ResourceKey> keys = new HashSet<>(before.keySet());
      keys.addAll(after.keySet());
      for (ResourceKey k : keys) {
        ResourceSnapshot was = before.get(k);
        ResourceSnapshot now = after.get(k);
        String value = was == null ? "" : was.valueBlock();
        boolean valid = was == null || was.valueBlockValid();
        if (k.equals(step.wroteTo())) {
          value = java.util.HexFormat.of().formatHex(step.wrote());
          valid = true;
        }
        if (action instanceof Purge || action instanceof EndSession) {
          for (LockView l : locksBefore.values()) {
            if (l.resource().equals(k)
                && !locksAfter.containsKey(l.lockId())
                && l.grantedMode() != null
                && l.grantedMode().writesValueBlock()) {
              valid = false;
            }
          }
        }
        String expectValue = value;
        boolean expectValid = valid;
        check(
            (now == null ? "" : now.valueBlock()).equals(expectValue)
                && (now == null || now.valueBlockValid()) == expectValid,
            () ->
                k
                    + " value block is "
                    + (now == null ? "gone" : now.valueBlock() + " valid=" + now.valueBlockValid())
                    + ", expected "
                    + expectValue
                    + " valid="
                    + expectValid);
      }

      // (b) Nobody overtook: a request granted from a queue had nobody still queued ahead of it,
      // and a waiter goes only once no conversion is pending.
      for (LockView l : locksAfter.values()) {
        LockView was = locksBefore.get(l.lockId());
        if (was == null || was.state() == QueueState.GRANTED || l.state() != QueueState.GRANTED) {
          continue;
        }
        if (was.fencingToken() == l.fencingToken()) {
          continue; // a cancelled conversion, not a grant
        }
        ResourceSnapshot r = after.get(l.resource());
        List<LockView> queue = was.state() == QueueState.WAITING ? r.waiting() : r.converting();
        for (LockView q : queue) {
          check(
              q.queueSeq() > was.queueSeq(),
              () -> "lock " + l.lockId() + " overtook lock " + q.lockId() + " in the queue");
        }
        if (was.state() == QueueState.WAITING) {
          check(r.converting().isEmpty(), () -> "a waiter went ahead of a pending conversion");
        }
      }

      // Every request that left its queue without a grant is reported as ended, with the reason.
      Set<Long> endedIds = new HashSet<>();
      for (EndedRequest e : fx.ended()) {
        check(endedIds.add(e.lock().lockId()), () -> "ended twice: " + e.lock().lockId());
        LockView was = locksBefore.get(e.lock().lockId());
        check(
            was != null && was.state() != QueueState.GRANTED,
            () -> "ended a request that was not queued: " + e.lock().lockId());
        EndedRequest.Reason expected =
            action instanceof Purge || action instanceof Leave
                ? EndedRequest.Reason.PURGED
                : action instanceof EndSession
                    ? EndedRequest.Reason.SESSION_ENDED
                    : EndedRequest.Reason.CANCELLED;
        check(e.reason() == expected, () -> "ended with " + e.reason() + ", expected " + expected);
      }
      for (LockView was : locksBefore.values()) {
        if (was.state() == QueueState.GRANTED) {
          continue;
        }
        LockView now = locksAfter.get(was.lockId());
        boolean grantedNow =
            now != null
                && now.state() == QueueState.GRANTED
                && now.fencingToken() != was.fencingToken();
        boolean stillQueued = now != null && now.equals(was);
        boolean ended = endedIds.contains(was.lockId());
        check(
            grantedNow || stillQueued || ended,
            () ->
                "request "
                    + was.lockId()
                    + " vanished or changed without a grant or an end: "
                    + now);
        check(!(ended && (grantedNow || stillQueued)), () -> "request ended and yet " + now);
      }

      // Effects name every resource and node that changed.
      Set<ResourceKey> changed = new HashSet<>(before.keySet());
      changed.addAll(after.keySet());
      changed.removeIf(k -> Objects.equals(before.get(k), after.get(k)));
      if (!(action instanceof Failover)) {
        check(
            fx.dirtyResources().containsAll(changed),
            () -> "changed " + changed + " but dirty only " + fx.dirtyResources());
        Set<String> nodesChanged = new HashSet<>();
        Map<String, NodeView> was =
            nodesBefore.stream().collect(Collectors.toMap(NodeView::node, n -> n));
        for (NodeView n : engine.nodes()) {
          if (!n.equals(was.get(n.node()))) {
            nodesChanged.add(n.node());
          }
        }
        check(fx.dirtyNodes().containsAll(nodesChanged), () -> "node change not marked dirty");
      }

      // Blocking events go to holders that block the request, once per request (in full to those
      // that asked, as a hint to the others: the server decides that from the holder's view).
      for (BlockingEvent e : fx.blocking()) {
        check(e.holder().lockId() != e.blocked().lockId(), () -> "told a lock it blocks itself");
        check(e.holder().grantedMode() != null, () -> "told a holder that holds nothing");
        check(
            !e.holder().grantedMode().compatibleWith(e.blocked().requestedMode()),
            () -> "told a holder that does not block the request: " + e);
        List<Long> key = List.of(e.holder().lockId(), e.blocked().lockId(), e.blocked().queueSeq());
        check(toldNow.add(key), () -> "told a holder twice about the same request: " + e);
        toldEver.add(key);
      }
    }

    // ---------------------------------------------------------------- invariants

    private void checkInvariants() {
      List<ResourceView> views = engine.resources(null);
      Map<Long, LockView> all = new HashMap<>();
      Map<String, Integer> perNode = new HashMap<>();
      Map<Long, Set<Long>> perSession = new HashMap<>();
      for (ResourceView r : views) {
        ResourceKey k = r.key();
        check(r.valueBlock().length <= Names.MAX_VALUE_BLOCK_BYTES, () -> "value block too big");
        check(
            r.lockCount() > 0 || r.valueBlock().length > 0 || !r.valueBlockValid(),
            () -> k + " kept with nothing to remember");
        for (LockView l : r.granted()) {
          check(
              l.state() == QueueState.GRANTED
                  && l.grantedMode() != null
                  && l.requestedMode() == null
                  && l.queueSeq() == 0
                  && l.fencingToken() > 0,
              () -> "bad granted lock " + l);
        }
        for (LockView l : r.converting()) {
          check(
              l.state() == QueueState.CONVERTING
                  && l.grantedMode() != null
                  && l.requestedMode() != null
                  && l.requestedMode() != l.grantedMode()
                  && l.fencingToken() > 0,
              () -> "bad converting lock " + l);
        }
        for (LockView l : r.waiting()) {
          check(
              l.state() == QueueState.WAITING
                  && l.grantedMode() == null
                  && l.requestedMode() != null
                  && l.fencingToken() == 0,
              () -> "bad waiting lock " + l);
        }

        // (a) No two conflicting modes held at once.
        List<LockView> holders = holders(snapshot(r));
        for (int i = 0; i < holders.size(); i++) {
          for (int j = i + 1; j < holders.size(); j++) {
            LockView x = holders.get(i);
            LockView y = holders.get(j);
            check(
                x.grantedMode().compatibleWith(y.grantedMode()),
                () ->
                    "conflicting modes held on " + k + ": " + describe(x) + " and " + describe(y));
          }
        }

        // (b) Queues in strictly increasing queue order.
        checkIncreasing(r.converting(), k + " converting");
        checkIncreasing(r.waiting(), k + " waiting");

        // (d) Nothing grantable is left waiting.
        if (!r.converting().isEmpty()) {
          LockView head = r.converting().get(0);
          check(
              !holders.stream()
                  .filter(h -> h.lockId() != head.lockId())
                  .allMatch(h -> h.grantedMode().compatibleWith(head.requestedMode())),
              () -> "converting head " + describe(head) + " could be granted but is not");
        } else if (!r.waiting().isEmpty()) {
          LockView head = r.waiting().get(0);
          check(
              !holders.stream().allMatch(h -> h.grantedMode().compatibleWith(head.requestedMode())),
              () -> "waiting head " + describe(head) + " could be granted but is not");
        }

        // No conversion waits for one queued behind it (that would be a deadlock).
        for (int i = 0; i < r.converting().size(); i++) {
          for (int j = i + 1; j < r.converting().size(); j++) {
            LockView ahead = r.converting().get(i);
            LockView behind = r.converting().get(j);
            check(
                ahead.requestedMode().compatibleWith(behind.grantedMode()),
                () -> "conversion deadlock: " + describe(ahead) + " waits for " + describe(behind));
          }
        }

        // Holders that asked have been told about the head of the line they block.
        LockView head =
            !r.converting().isEmpty()
                ? r.converting().get(0)
                : !r.waiting().isEmpty() ? r.waiting().get(0) : null;
        if (head != null) {
          for (LockView h : holders) {
            if (h.lockId() != head.lockId()
                && h.notifyBlocking()
                && !h.grantedMode().compatibleWith(head.requestedMode())) {
              check(
                  toldEver.contains(List.of(h.lockId(), head.lockId(), head.queueSeq())),
                  () -> describe(h) + " was never told that it blocks " + describe(head));
            }
          }
        }

        // (e) Indexes agree with the queues.
        for (LockView l :
            Stream.of(r.granted(), r.converting(), r.waiting()).flatMap(List::stream).toList()) {
          check(
              l.resource().equals(k),
              () -> "lock " + l.lockId() + " filed under the wrong resource");
          check(all.put(l.lockId(), l) == null, () -> "lock " + l.lockId() + " is on two queues");
          check(
              engine.lock(l.lockId()).map(l::equals).orElse(false),
              () -> "lock(" + l.lockId() + ") disagrees with the queue");
          perNode.merge(l.owner().node(), 1, Integer::sum);
          if (l.sessionId() != 0) {
            perSession.computeIfAbsent(l.sessionId(), s -> new TreeSet<>()).add(l.lockId());
          }
          NodeView n = engine.node(l.owner().node()).orElse(null);
          check(n != null, () -> "lock of a node that never joined");
          check(l.owner().incarnation() <= n.incarnation(), () -> "lock of a future incarnation");
          check(
              l.owner().incarnation() < n.incarnation() || n.state() == NodeState.MEMBER,
              () -> "lock " + l.lockId() + " survived its owner leaving");
        }
      }
      check(engine.lockCount() == all.size(), () -> "lockCount() disagrees with the queues");
      for (String n : NODES) {
        check(
            engine.lockCount(n) == perNode.getOrDefault(n, 0),
            () -> "lockCount(" + n + ") disagrees with the queues");
      }
      check(
          engine.sessions().equals(perSession.keySet()),
          () -> "sessions() disagrees with the locks");
      for (Map.Entry<Long, Set<Long>> e : perSession.entrySet()) {
        check(
            engine.sessionLocks(e.getKey()).equals(e.getValue()),
            () -> "sessionLocks(" + e.getKey() + ") disagrees with the locks");
      }
      check(engine.resourceCount() == views.size(), () -> "resourceCount() disagrees");
      int g = 0;
      int c = 0;
      int w = 0;
      for (LockspaceView ls : engine.lockspaces()) {
        g += ls.granted();
        c += ls.converting();
        w += ls.waiting();
      }
      check(g + c + w == all.size(), () -> "lockspaces() counts disagree");

      // (f) A new leader restoring the records sees the same table, and its ids come after all.
      LockEngine restored = new LockEngine(epoch + 1, CLOCK);
      restored.restore(engine.nodes(), views);
      check(
          snapshot(restored).equals(snapshot(engine)), () -> "restore() rebuilt a different table");
      check(restored.nodes().equals(engine.nodes()), () -> "restore() rebuilt different nodes");
      check(restored.lockCount() == engine.lockCount(), () -> "restore() lost locks");
      check(restored.sessions().equals(engine.sessions()), () -> "restore() lost sessions");
      for (LockView l : all.values()) {
        check(
            restored.lock(l.lockId()).map(l::equals).orElse(false), () -> "restore() lost a lock");
      }
      long next = restored.nextId();
      for (LockView l : all.values()) {
        check(
            next > l.lockId() && next > l.fencingToken() && next > l.queueSeq(),
            () -> "restored engine would reuse an id or token");
      }
    }

    private void checkIncreasing(List<LockView> queue, String what) {
      for (int i = 1; i < queue.size(); i++) {
        check(
            queue.get(i - 1).queueSeq() < queue.get(i).queueSeq(),
            () -> what + " queue out of order");
      }
    }

    private void check(boolean ok, Supplier<String> what) {
      if (!ok) {
        throw new AssertionError(
            what.get()
                + "\n  after:\n    "
                + String.join("\n    ", trace)
                + "\n  table:\n    "
                + engine.resources(null).stream()
                    .map(r -> snapshot(r).toString())
                    .collect(Collectors.joining("\n    ")));
      }
    }
  }

  private static Map<Long, LockView> locks(LockEngine engine) {
    Map<Long, LockView> out = new HashMap<>();
    for (ResourceView r : engine.resources(null)) {
      Stream.of(r.granted(), r.converting(), r.waiting())
          .flatMap(List::stream)
          .forEach(l -> out.put(l.lockId(), l));
    }
    return out;
  }

  /** Locks that hold a mode: granted ones and converting ones (which keep theirs). */
  private static List<LockView> holders(ResourceSnapshot r) {
    List<LockView> out = new ArrayList<>(r.granted());
    out.addAll(r.converting());
    return out;
  }
}
