package io.clusterlvm.dlm.engine;

import static io.clusterlvm.dlm.engine.EngineFixtures.CLOCK;
import static io.clusterlvm.dlm.engine.EngineFixtures.bytes;
import static io.clusterlvm.dlm.engine.EngineFixtures.cmd;
import static io.clusterlvm.dlm.engine.EngineFixtures.notifyingCmd;
import static io.clusterlvm.dlm.engine.EngineFixtures.sessionCmd;
import static io.clusterlvm.dlm.engine.EngineFixtures.snapshot;
import static io.clusterlvm.dlm.engine.EngineFixtures.tryCmd;
import static io.clusterlvm.dlm.engine.LockMode.CR;
import static io.clusterlvm.dlm.engine.LockMode.CW;
import static io.clusterlvm.dlm.engine.LockMode.EX;
import static io.clusterlvm.dlm.engine.LockMode.NL;
import static io.clusterlvm.dlm.engine.LockMode.PR;
import static io.clusterlvm.dlm.engine.LockMode.PW;
import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;
import static org.assertj.core.api.Assertions.tuple;

import io.clusterlvm.dlm.engine.DlmException.Code;
import io.clusterlvm.dlm.engine.EndedRequest.Reason;
import java.util.ArrayList;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Objects;
import java.util.Set;
import java.util.stream.Stream;
import org.assertj.core.api.ThrowableAssert.ThrowingCallable;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Nested;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.Arguments;
import org.junit.jupiter.params.provider.MethodSource;

/** Examples of the lock engine's rules, one rule per test. */
@Timeout(10)
class LockEngineTest {
  private static final ResourceKey VG = new ResourceKey("clvm", "vg0");
  private static final ResourceKey VG1 = new ResourceKey("clvm", "vg1");
  private static final ResourceKey LV = new ResourceKey("lv", "vg0-lv0");

  private LockEngine engine = new LockEngine(1, CLOCK);
  private Effects fx = new Effects();
  private Owner a;
  private Owner b;
  private Owner c;
  private Owner d;

  @BeforeEach
  void joinNodes() {
    a = engine.join("node-a", "boot-a", fx).owner();
    b = engine.join("node-b", "boot-b", fx).owner();
    c = engine.join("node-c", "boot-c", fx).owner();
    d = engine.join("node-d", "boot-d", fx).owner();
    fx = new Effects();
  }

  // ------------------------------------------------------------------ helpers

  private Effects fresh() {
    fx = new Effects();
    return fx;
  }

  private LockResult acquire(Owner o, ResourceKey key, LockMode mode) {
    return engine.acquire(cmd(o, key, mode), fx);
  }

  private long granted(Owner o, ResourceKey key, LockMode mode) {
    LockResult r = acquire(o, key, mode);
    assertThat(r.outcome()).as("%s %s on %s", o, mode, key).isEqualTo(Outcome.GRANTED);
    return r.lock().lockId();
  }

  private long queued(Owner o, ResourceKey key, LockMode mode) {
    LockResult r = acquire(o, key, mode);
    assertThat(r.outcome()).as("%s %s on %s", o, mode, key).isEqualTo(Outcome.QUEUED);
    return r.lock().lockId();
  }

  private LockResult convert(Owner o, long id, LockMode mode) {
    return engine.convert(o, id, mode, false, null, null, fx);
  }

  private void release(Owner o, long id) {
    engine.release(o, id, null, fx);
  }

  private LockView lock(long id) {
    return engine.lock(id).orElseThrow(() -> new AssertionError("no lock " + id));
  }

  private ResourceView res(ResourceKey key) {
    return engine.resource(key).orElseThrow(() -> new AssertionError("no resource " + key));
  }

  private static List<Long> ids(List<LockView> views) {
    return views.stream().map(LockView::lockId).toList();
  }

  private List<Long> grantedIds() {
    return fx.grants().stream().map(g -> g.lock().lockId()).toList();
  }

  private List<Long> tokensOf(List<Grant> grants) {
    return grants.stream().map(g -> g.lock().fencingToken()).toList();
  }

  /**
   * Runs a request the engine must refuse, and checks that the refusal carries {@code code} and
   * changed nothing: no resource, no node, no effect.
   */
  private DlmException refused(Code code, ThrowingCallable call) {
    Map<ResourceKey, EngineFixtures.ResourceSnapshot> before = snapshot(engine);
    List<NodeView> nodesBefore = engine.nodes();
    int locksBefore = engine.lockCount();
    fresh();
    DlmException[] caught = new DlmException[1];
    assertThatThrownBy(call)
        .isInstanceOfSatisfying(
            DlmException.class,
            e -> {
              assertThat(e.code()).as(e.getMessage()).isEqualTo(code);
              caught[0] = e;
            });
    assertThat(snapshot(engine)).isEqualTo(before);
    assertThat(engine.nodes()).isEqualTo(nodesBefore);
    assertThat(engine.lockCount()).isEqualTo(locksBefore);
    assertNoEffects(fx);
    return caught[0];
  }

  private static void assertNoEffects(Effects e) {
    assertThat(e.grants()).isEmpty();
    assertThat(e.blocking()).isEmpty();
    assertThat(e.ended()).isEmpty();
    assertThat(e.dirtyResources()).isEmpty();
    assertThat(e.dirtyNodes()).isEmpty();
  }

  // ------------------------------------------------------------------ queueing

  @Nested
  class Queueing {
    @Test
    void compatibleRequestsAreGrantedAtOnceAndAnIncompatibleOneWaits() {
      LockResult first = acquire(a, VG, PR);
      LockResult second = acquire(b, VG, PR);
      LockResult third = acquire(c, VG, EX);

      assertThat(first.outcome()).isEqualTo(Outcome.GRANTED);
      assertThat(first.grant()).isNotNull();
      assertThat(first.lock().state()).isEqualTo(QueueState.GRANTED);
      assertThat(first.lock().grantedMode()).isEqualTo(PR);
      assertThat(first.lock().requestedMode()).isNull();
      assertThat(second.outcome()).isEqualTo(Outcome.GRANTED);
      assertThat(third.outcome()).isEqualTo(Outcome.QUEUED);
      assertThat(third.grant()).isNull();
      assertThat(third.lock().state()).isEqualTo(QueueState.WAITING);
      assertThat(third.lock().grantedMode()).isNull();
      assertThat(third.lock().requestedMode()).isEqualTo(EX);
      assertThat(third.lock().fencingToken()).isZero();

      ResourceView r = res(VG);
      assertThat(ids(r.granted())).containsExactly(first.lock().lockId(), second.lock().lockId());
      assertThat(r.converting()).isEmpty();
      assertThat(ids(r.waiting())).containsExactly(third.lock().lockId());
    }

    @Test
    void aCompatibleRequestDoesNotOvertakeAnEarlierIncompatibleWaiter() {
      long holder = granted(a, VG, PR);
      long writer = queued(b, VG, EX);
      // PR is compatible with the PR holder, but the EX request came first.
      long reader = queued(c, VG, PR);
      assertThat(ids(res(VG).waiting())).containsExactly(writer, reader);

      fresh();
      release(a, holder);
      assertThat(grantedIds()).containsExactly(writer);
      assertThat(lock(writer).grantedMode()).isEqualTo(EX);
      assertThat(lock(reader).state()).isEqualTo(QueueState.WAITING);

      fresh();
      release(b, writer);
      assertThat(grantedIds()).containsExactly(reader);
    }

    @Test
    void waitersAreGrantedInQueueOrderUpToTheFirstOneThatConflicts() {
      long holder = granted(a, VG, EX);
      long r1 = queued(b, VG, PR);
      long r2 = queued(c, VG, CR);
      long w = queued(d, VG, PW);
      long r3 = queued(b, VG, PR);

      fresh();
      release(a, holder);

      assertThat(grantedIds()).containsExactly(r1, r2);
      assertThat(ids(res(VG).waiting())).containsExactly(w, r3);
    }

    @Test
    void noqueueRequestThatWouldBlockFailsAtOnceAndChangesNothing() {
      granted(a, VG, EX);
      Map<ResourceKey, EngineFixtures.ResourceSnapshot> before = snapshot(engine);

      fresh();
      LockResult r = engine.acquire(tryCmd(b, VG, PR), fx);

      assertThat(r.outcome()).isEqualTo(Outcome.WOULD_BLOCK);
      assertThat(r.lock()).isNull();
      assertThat(r.grant()).isNull();
      assertThat(snapshot(engine)).isEqualTo(before);
      assertThat(engine.lockCount()).isEqualTo(1);
      assertThat(engine.lockCount("node-b")).isZero();
      assertNoEffects(fx);
    }

    @Test
    void noqueueRequestDoesNotOvertakeWaitersEither() {
      granted(a, VG, PR);
      queued(b, VG, EX);

      LockResult r = engine.acquire(tryCmd(c, VG, PR), fresh());

      assertThat(r.outcome()).isEqualTo(Outcome.WOULD_BLOCK);
      assertNoEffects(fx);
    }

    @Test
    void noqueueRequestThatCanBeGrantedIsGranted() {
      granted(a, VG, PR);
      LockResult r = engine.acquire(tryCmd(b, VG, CR), fx);
      assertThat(r.outcome()).isEqualTo(Outcome.GRANTED);
      assertThat(r.lock().grantedMode()).isEqualTo(CR);
    }
  }

  // ------------------------------------------------------------------ conversions

  /**
   * What a resumed session is told again: every queued request its held locks are in the way of.
   */
  @Test
  void blockingNowNamesEveryQueuedRequestAHeldLockIsInTheWayOf() {
    long aCr = granted(a, VG, CR);
    long bPr = granted(b, VG, PR);
    assertThat(engine.blockingNow(List.of(aCr, bPr))).isEmpty(); // nobody waits

    assertThat(convert(b, bPr, EX).outcome()).isEqualTo(Outcome.QUEUED); // a's CR is in its way
    long waitsPw = queued(a, VG, PW); // b's PR is in its way, not a's own CR
    // b's conversion is not in its own way; a waiting lock holds nothing; 999999 is no lock.
    assertThat(engine.blockingNow(List.of(aCr, bPr, waitsPw, 999_999L)))
        .extracting(e -> e.holder().lockId() + " blocks " + e.blocked().lockId())
        .containsExactlyInAnyOrder(aCr + " blocks " + bPr, bPr + " blocks " + waitsPw);
  }

  @Nested
  class Conversions {
    /** A conversion whose caller never heard how it ended, and believes the old mode. */
    @Test
    void anAbandonedPendingUpConversionIsCancelled() {
      long mine = granted(a, VG, PR);
      granted(b, VG, PR);
      assertThat(engine.convert(a, mine, EX, false, null, "conv-1", fx).outcome())
          .isEqualTo(Outcome.QUEUED);

      LockEngine.AbandonedConversion r =
          engine.abandonConversion(a, mine, "conv-1", fresh()).orElseThrow();

      assertThat(r.reverted()).isTrue();
      assertThat(r.mode()).isEqualTo(PR);
      assertThat(lock(mine).state()).isEqualTo(QueueState.GRANTED);
      assertThat(lock(mine).grantedMode()).isEqualTo(PR);
      assertThat(res(VG).converting()).isEmpty();
    }

    @Test
    void anAbandonedGrantedUpConversionIsConvertedBackAndWakesWhoItBlocks() {
      long mine = granted(a, VG, PR);
      assertThat(engine.convert(a, mine, EX, false, null, "conv-1", fx).outcome())
          .isEqualTo(Outcome.GRANTED);
      long theirs = queued(b, VG, PR);

      LockEngine.AbandonedConversion r =
          engine.abandonConversion(a, mine, "conv-1", fresh()).orElseThrow();

      assertThat(r.reverted()).isTrue();
      assertThat(lock(mine).grantedMode()).isEqualTo(PR);
      assertThat(grantedIds()).containsExactly(theirs);
      // Said once: a second abandon finds nothing more to undo.
      assertThat(engine.abandonConversion(a, mine, "conv-1", fresh()).orElseThrow().reverted())
          .isFalse();
    }

    @Test
    void anAbandonLeavesALaterConversionAloneAndADownConversionIfGoingBackWouldWait() {
      long mine = granted(a, VG, PR);
      engine.convert(a, mine, EX, false, null, "conv-1", fx);
      engine.convert(a, mine, PW, false, null, "conv-2", fx);
      assertThat(engine.abandonConversion(a, mine, "conv-1", fresh()).orElseThrow().reverted())
          .isFalse();
      assertThat(lock(mine).grantedMode()).isEqualTo(PW);

      granted(b, VG, CR); // fits beside PW, not beside EX
      LockEngine.AbandonedConversion down =
          engine.abandonConversion(a, mine, "conv-2", fresh()).orElseThrow();
      assertThat(down.reverted()).isFalse();
      assertThat(down.mode()).isEqualTo(PW);
      assertThat(lock(mine).grantedMode()).isEqualTo(PW);
      assertThat(engine.abandonConversion(b, mine, "conv-2", fresh())).isEmpty();
    }

    @Test
    void aLateAbandonDoesNotUndoWhatALaterRequestForTheSameModeWasTold() {
      long mine = granted(a, VG, PR);
      engine.convert(a, mine, EX, false, null, "conv-1", fx);
      assertThat(engine.convert(a, mine, EX, false, null, "conv-2", fresh()).outcome())
          .isEqualTo(Outcome.GRANTED);

      assertThat(engine.abandonConversion(a, mine, "conv-1", fresh()).orElseThrow().reverted())
          .isFalse();
      assertThat(lock(mine).grantedMode()).isEqualTo(EX);
    }

    @Test
    void anAbandonAfterTheConversionWasCancelledChangesNothing() {
      long mine = granted(a, VG, PR);
      granted(b, VG, PR);
      engine.convert(a, mine, EX, false, null, "conv-1", fx);
      engine.cancel(a, mine, fresh()); // withdrawn when its caller went away
      long token = lock(mine).fencingToken();

      assertThat(engine.abandonConversion(a, mine, "conv-1", fresh()).orElseThrow().reverted())
          .isFalse();
      assertThat(lock(mine).grantedMode()).isEqualTo(PR);
      assertThat(lock(mine).fencingToken()).isEqualTo(token);
    }

    /** CW to PR is neither up nor down; undone when nothing holds a mode CW conflicts with. */
    @Test
    void anAbandonedSidewaysConversionIsUndoneIfNothingConflicts() {
      long mine = granted(a, VG, CW);
      engine.convert(a, mine, PR, false, null, "conv-1", fx);
      assertThat(lock(mine).grantedMode()).isEqualTo(PR);

      assertThat(engine.abandonConversion(a, mine, "conv-1", fresh()).orElseThrow().reverted())
          .isTrue();
      assertThat(lock(mine).grantedMode()).isEqualTo(CW);

      engine.convert(a, mine, PR, false, null, "conv-2", fx);
      granted(b, VG, PR); // PR conflicts with CW: going back would have to wait
      LockEngine.AbandonedConversion kept =
          engine.abandonConversion(a, mine, "conv-2", fresh()).orElseThrow();
      assertThat(kept.reverted()).isFalse();
      assertThat(kept.mode()).isEqualTo(PR);
    }

    @Test
    void theLatestConversionOutlivesARestore() {
      long mine = granted(a, VG, PR);
      engine.convert(a, mine, EX, false, null, "conv-1", fx);
      LockEngine next = new LockEngine(2, CLOCK);
      next.restore(engine.nodes(), List.of(res(VG)));

      assertThat(next.abandonConversion(a, mine, "conv-1", fresh()).orElseThrow().reverted())
          .isTrue();
      assertThat(next.lock(mine).orElseThrow().grantedMode()).isEqualTo(PR);
    }

    @Test
    void upConversionWithNobodyInTheWayIsGrantedAtOnceWithANewToken() {
      long id = granted(a, VG, PR);
      long oldToken = lock(id).fencingToken();

      LockResult r = convert(a, id, EX);

      assertThat(r.outcome()).isEqualTo(Outcome.GRANTED);
      assertThat(r.grant()).isNotNull();
      assertThat(lock(id).grantedMode()).isEqualTo(EX);
      assertThat(lock(id).requestedMode()).isNull();
      assertThat(lock(id).state()).isEqualTo(QueueState.GRANTED);
      assertThat(lock(id).fencingToken()).isGreaterThan(oldToken);
    }

    @Test
    void upConversionWaitsForAConflictingHolderAndKeepsItsModeMeanwhile() {
      long mine = granted(a, VG, PR);
      long other = granted(b, VG, PR);
      long oldToken = lock(mine).fencingToken();

      LockResult r = convert(a, mine, EX);

      assertThat(r.outcome()).isEqualTo(Outcome.QUEUED);
      LockView v = lock(mine);
      assertThat(v.state()).isEqualTo(QueueState.CONVERTING);
      assertThat(v.grantedMode()).isEqualTo(PR);
      assertThat(v.requestedMode()).isEqualTo(EX);
      assertThat(v.fencingToken()).isEqualTo(oldToken);
      assertThat(ids(res(VG).converting())).containsExactly(mine);
      // Nothing new overtakes the pending conversion.
      assertThat(engine.acquire(tryCmd(c, VG, CR), fresh()).outcome())
          .isEqualTo(Outcome.WOULD_BLOCK);

      fresh();
      release(b, other);
      assertThat(grantedIds()).containsExactly(mine);
      assertThat(fx.grants().get(0).lock().grantedMode()).isEqualTo(EX);
      assertThat(lock(mine).fencingToken()).isGreaterThan(oldToken);
    }

    @Test
    void aQueuedConversionGoesAheadOfEarlierWaiters() {
      long mine = granted(a, VG, PR);
      long other = granted(b, VG, PR);
      long waiter = queued(c, VG, EX);
      assertThat(convert(a, mine, PW).outcome()).isEqualTo(Outcome.QUEUED);

      fresh();
      release(b, other);

      assertThat(grantedIds()).containsExactly(mine);
      assertThat(lock(mine).grantedMode()).isEqualTo(PW);
      assertThat(lock(waiter).state()).isEqualTo(QueueState.WAITING);
    }

    @Test
    void aWaiterDoesNotGoAheadOfAPendingConversion() {
      long mine = granted(a, VG, PR);
      long other = granted(b, VG, PR);
      long idle = granted(d, VG, NL);
      assertThat(convert(a, mine, EX).outcome()).isEqualTo(Outcome.QUEUED);
      // CR is compatible with both PR holders, but a conversion is pending.
      long reader = queued(c, VG, CR);

      fresh();
      release(d, idle);
      assertThat(fx.grants()).isEmpty();
      assertThat(lock(reader).state()).isEqualTo(QueueState.WAITING);

      fresh();
      release(b, other);
      assertThat(grantedIds()).containsExactly(mine);
      assertThat(lock(reader).state()).isEqualTo(QueueState.WAITING);
    }

    @Test
    void aCompatibleConversionIsGrantedAtOnceEvenWithWaitersQueued() {
      long mine = granted(a, VG, CR);
      long waiter = queued(b, VG, EX);

      LockResult r = convert(a, mine, PR);

      assertThat(r.outcome()).isEqualTo(Outcome.GRANTED);
      assertThat(lock(mine).grantedMode()).isEqualTo(PR);
      assertThat(lock(waiter).state()).isEqualTo(QueueState.WAITING);
    }

    @Test
    void downConversionIsGrantedAtOnceAndLetsCompatibleWaitersIn() {
      long writer = granted(a, VG, EX);
      long reader = queued(b, VG, PR);
      long oldToken = lock(writer).fencingToken();

      fresh();
      LockResult r = convert(a, writer, PR);

      assertThat(r.outcome()).isEqualTo(Outcome.GRANTED);
      assertThat(lock(writer).grantedMode()).isEqualTo(PR);
      assertThat(lock(writer).fencingToken()).isGreaterThan(oldToken);
      assertThat(grantedIds()).containsExactly(reader);
      assertThat(lock(reader).fencingToken()).isGreaterThan(lock(writer).fencingToken());
    }

    @Test
    void downConversionIsGrantedAtOnceEvenWithConversionsQueued() {
      long first = granted(a, VG, PR);
      granted(b, VG, PR);
      long third = granted(c, VG, PR);
      assertThat(convert(a, first, EX).outcome()).isEqualTo(Outcome.QUEUED);

      LockResult r = convert(c, third, NL);

      assertThat(r.outcome()).isEqualTo(Outcome.GRANTED);
      assertThat(lock(third).grantedMode()).isEqualTo(NL);
      assertThat(lock(third).state()).isEqualTo(QueueState.GRANTED);
      assertThat(ids(res(VG).converting())).containsExactly(first);
    }

    @Test
    void twoReadersBothConvertingToExclusiveIsADeadlockForTheSecond() {
      long first = granted(a, VG, PR);
      long second = granted(b, VG, PR);
      assertThat(convert(a, first, EX).outcome()).isEqualTo(Outcome.QUEUED);
      Map<ResourceKey, EngineFixtures.ResourceSnapshot> before = snapshot(engine);

      fresh();
      LockResult r = convert(b, second, EX);

      assertThat(r.outcome()).isEqualTo(Outcome.DEADLOCK);
      assertThat(r.grant()).isNull();
      assertThat(lock(second).state()).isEqualTo(QueueState.GRANTED);
      assertThat(lock(second).grantedMode()).isEqualTo(PR);
      assertThat(snapshot(engine)).isEqualTo(before);
      assertThat(fx.dirtyResources()).isEmpty();

      // Once the second reader gives up, the first one's conversion goes through.
      fresh();
      release(b, second);
      assertThat(grantedIds()).containsExactly(first);
    }

    @Test
    void conversionThatWouldQueueBehindAConversionWaitingForItIsADeadlock() {
      // a (NL) wants EX and waits for b's CR. If b's CR->PR queued behind a, each would wait for
      // the other forever: a for b's CR to go, b for a to leave the head of the queue.
      long first = granted(a, VG, NL);
      long second = granted(b, VG, CR);
      assertThat(convert(a, first, EX).outcome()).isEqualTo(Outcome.QUEUED);

      LockResult r = convert(b, second, PR);

      assertThat(r.outcome()).isEqualTo(Outcome.DEADLOCK);
      assertThat(lock(second).state()).isEqualTo(QueueState.GRANTED);
      assertThat(lock(second).grantedMode()).isEqualTo(CR);
      fresh();
      release(b, second);
      assertThat(grantedIds()).containsExactly(first);
    }

    @Test
    void noqueueConversionThatWouldBlockChangesNothing() {
      long mine = granted(a, VG, PR);
      granted(b, VG, PR);
      Map<ResourceKey, EngineFixtures.ResourceSnapshot> before = snapshot(engine);

      fresh();
      LockResult r = engine.convert(a, mine, EX, true, null, null, fx);

      assertThat(r.outcome()).isEqualTo(Outcome.WOULD_BLOCK);
      assertThat(snapshot(engine)).isEqualTo(before);
      assertNoEffects(fx);
    }

    @Test
    void aRetriedConversionReturnsTheCurrentStateAndAnotherModeIsRefused() {
      long mine = granted(a, VG, PR);
      granted(b, VG, PR);
      convert(a, mine, EX);
      Map<ResourceKey, EngineFixtures.ResourceSnapshot> before = snapshot(engine);

      fresh();
      assertThat(convert(a, mine, EX).outcome()).isEqualTo(Outcome.QUEUED);
      assertThat(snapshot(engine)).isEqualTo(before);
      assertNoEffects(fx);
      refused(Code.FAILED_PRECONDITION, () -> convert(a, mine, PW));
    }

    @Test
    void convertingToTheModeAlreadyHeldChangesNothing() {
      long mine = granted(a, VG, PR);
      long token = lock(mine).fencingToken();

      fresh();
      LockResult r = convert(a, mine, PR);

      assertThat(r.outcome()).isEqualTo(Outcome.GRANTED);
      assertThat(r.grant().lock().fencingToken()).isEqualTo(token);
      assertNoEffects(fx);
    }

    @Test
    void aWaitingLockCannotBeConverted() {
      granted(a, VG, EX);
      long waiter = queued(b, VG, PR);
      refused(Code.FAILED_PRECONDITION, () -> convert(b, waiter, NL));
    }
  }

  // ------------------------------------------------------------------ cancel

  @Nested
  class Cancel {
    @Test
    void cancellingAWaitingRequestRemovesItAndEndsIt() {
      long holder = granted(a, VG, EX);
      long waiter = queued(b, VG, PR);
      LockView holderBefore = lock(holder);

      fresh();
      assertThat(engine.cancel(b, waiter, fx)).isTrue();

      assertThat(engine.lock(waiter)).isEmpty();
      assertThat(res(VG).waiting()).isEmpty();
      assertThat(lock(holder)).isEqualTo(holderBefore);
      assertThat(fx.ended()).hasSize(1);
      assertThat(fx.ended().get(0).lock().lockId()).isEqualTo(waiter);
      assertThat(fx.ended().get(0).reason()).isEqualTo(Reason.CANCELLED);
      assertThat(fx.grants()).isEmpty();
    }

    @Test
    void cancellingTheHeadWaiterLetsTheNextOneIn() {
      granted(a, VG, PR);
      long writer = queued(b, VG, EX);
      long reader = queued(c, VG, PR);

      fresh();
      engine.cancel(b, writer, fx);

      assertThat(grantedIds()).containsExactly(reader);
    }

    @Test
    void cancellingAConversionKeepsTheOldModeAndLetsOthersGo() {
      long mine = granted(a, VG, PR);
      granted(b, VG, PR);
      LockView before = lock(mine);
      assertThat(convert(a, mine, EX).outcome()).isEqualTo(Outcome.QUEUED);
      // PR is compatible with every holder, but must wait behind the pending conversion.
      long reader = queued(c, VG, PR);

      fresh();
      assertThat(engine.cancel(a, mine, fx)).isTrue();

      LockView after = lock(mine);
      assertThat(after.state()).isEqualTo(QueueState.GRANTED);
      assertThat(after.grantedMode()).isEqualTo(PR);
      assertThat(after.requestedMode()).isNull();
      assertThat(after.fencingToken()).isEqualTo(before.fencingToken());
      assertThat(res(VG).converting()).isEmpty();
      assertThat(fx.ended())
          .singleElement()
          .satisfies(
              e -> {
                assertThat(e.lock().lockId()).isEqualTo(mine);
                assertThat(e.lock().state()).isEqualTo(QueueState.CONVERTING);
                assertThat(e.reason()).isEqualTo(Reason.CANCELLED);
              });
      assertThat(grantedIds()).containsExactly(reader);
    }

    @Test
    void cancellingAGrantedLockReturnsFalseAndChangesNothing() {
      long mine = granted(a, VG, EX);
      Map<ResourceKey, EngineFixtures.ResourceSnapshot> before = snapshot(engine);

      assertThat(engine.cancel(a, mine, fresh())).isFalse();

      assertThat(snapshot(engine)).isEqualTo(before);
      assertNoEffects(fx);
    }

    @Test
    void releasingAWaitingRequestEndsItAsCancelled() {
      granted(a, VG, EX);
      long waiter = queued(b, VG, PR);

      fresh();
      release(b, waiter);

      assertThat(engine.lock(waiter)).isEmpty();
      assertThat(fx.ended()).extracting(EndedRequest::reason).containsExactly(Reason.CANCELLED);
    }
  }

  // ------------------------------------------------------------------ fencing tokens

  @Nested
  class FencingTokens {
    @Test
    void tokensStrictlyIncreaseWithEveryGrantOfAResource() {
      List<Long> tokens = new ArrayList<>();
      LockResult r1 = acquire(a, VG, PR);
      tokens.add(r1.grant().lock().fencingToken());
      acquire(b, VG1, EX); // another resource in between
      LockResult r2 = acquire(b, VG, PR);
      tokens.add(r2.grant().lock().fencingToken());
      assertThat(convert(a, r1.lock().lockId(), EX).outcome()).isEqualTo(Outcome.QUEUED);
      long waiter = queued(c, VG, PR);

      fresh();
      release(b, r2.lock().lockId());
      tokens.addAll(tokensOf(fx.grants()));
      fresh();
      LockResult down = convert(a, r1.lock().lockId(), CR);
      tokens.add(down.grant().lock().fencingToken());
      tokens.addAll(tokensOf(fx.grants()));
      assertThat(fx.grants()).extracting(g -> g.lock().lockId()).containsExactly(waiter);
      tokens.add(acquire(d, VG, NL).grant().lock().fencingToken());

      assertThat(tokens).hasSize(6).isSorted().doesNotHaveDuplicates();
    }

    @Test
    void aRestoredEngineWithAHigherEpochGrantsHigherTokens() {
      long holder = granted(a, VG, EX);
      long waiter = queued(b, VG, PR);
      long maxBefore =
          engine.resources(null).stream()
              .flatMap(r -> r.granted().stream())
              .mapToLong(LockView::fencingToken)
              .max()
              .orElseThrow();

      LockEngine next = new LockEngine(2, CLOCK);
      next.restore(engine.nodes(), engine.resources(null));
      Effects after = new Effects();
      LockResult other = next.acquire(cmd(c, VG1, EX), after);
      next.release(a, holder, null, after);

      assertThat(other.grant().lock().fencingToken()).isGreaterThan(maxBefore);
      assertThat(other.grant().lock().fencingToken()).isGreaterThan(2L << 32);
      assertThat(after.grants())
          .singleElement()
          .satisfies(
              g -> {
                assertThat(g.lock().lockId()).isEqualTo(waiter);
                assertThat(g.lock().fencingToken())
                    .isGreaterThan(other.grant().lock().fencingToken());
              });
    }

    /**
     * An id past the end of its epoch's range would be handed out again by the next epoch's leader,
     * whose tokens would then go backwards: the engine refuses it.
     */
    @Test
    void idsNeverRunIntoTheNextEpochsRange() {
      long lastOfEpoch2 = (2L << 32) | 0xffff_ffffL;
      long holder = granted(a, VG, EX);
      ResourceView held = engine.resource(VG).orElseThrow();
      LockView h = held.granted().get(0);
      assertThat(h.lockId()).isEqualTo(holder);
      // A table whose ids reached three short of the end of epoch 2's range.
      LockView late =
          new LockView(
              lastOfEpoch2 - 3,
              h.resource(),
              h.owner(),
              h.sessionId(),
              h.state(),
              h.grantedMode(),
              h.requestedMode(),
              lastOfEpoch2 - 4,
              h.persistent(),
              h.notifyBlocking(),
              h.queueSeq(),
              h.requestId(),
              h.sinceMillis(),
              h.lastConversion());
      LockEngine next = new LockEngine(2, CLOCK);
      next.restoreNodes(engine.nodes());
      next.restoreResource(
          new ResourceView(
              held.key(),
              held.valueBlock(),
              held.valueBlockValid(),
              List.of(late),
              List.of(),
              List.of()));

      assertThat(next.idsLeft()).isEqualTo(3);
      assertThat(List.of(next.nextId(), next.nextId(), next.nextId()))
          .containsExactly(lastOfEpoch2 - 2, lastOfEpoch2 - 1, lastOfEpoch2);
      assertThat(next.idsLeft()).isZero();
      assertThatThrownBy(next::nextId)
          .isInstanceOf(IllegalStateException.class)
          .hasMessageContaining("epoch 2");
      assertThatThrownBy(() -> next.acquire(cmd(b, VG1, EX), new Effects()))
          .isInstanceOf(IllegalStateException.class);
    }
  }

  // ------------------------------------------------------------------ restore

  @Nested
  class Restore {
    @Test
    void restoreRebuildsIdenticalQueuesOrderTokensAndValueBlocks() {
      // vg0: a reader, two NL locks converting up in the opposite order of their ids, two waiters.
      long ra =
          engine
              .acquire(new AcquireCommand("req-1", a, 5, VG, NL, false, false, true), fx)
              .lock()
              .lockId();
      granted(b, VG, PR);
      long nl = granted(c, VG, NL);
      assertThat(convert(c, nl, EX).outcome()).isEqualTo(Outcome.QUEUED);
      assertThat(convert(a, ra, CR).outcome()).isEqualTo(Outcome.QUEUED);
      assertThat(ids(res(VG).converting())).containsExactly(nl, ra);
      engine.acquire(new AcquireCommand("req-2", d, 6, VG, EX, false, true, false), fx);
      queued(a, VG, CW);
      // vg1: no locks, but a written value block keeps the record.
      long w = granted(b, VG1, EX);
      engine.release(b, w, bytes("seqno=17"), fx);
      // lv: a lost value block (its EX holder was purged), and a waiter that got the lock.
      Owner e = engine.join("node-e", "boot-e", fx).owner();
      granted(e, LV, EX);
      long lvReader = queued(d, LV, PR);
      engine.purge(e, fx);
      assertThat(lock(lvReader).state()).isEqualTo(QueueState.GRANTED);

      List<ResourceView> records = engine.resources(null);
      LockEngine restored = new LockEngine(2, CLOCK);
      restored.restore(engine.nodes(), records);

      assertThat(snapshot(restored)).isEqualTo(snapshot(engine));
      assertThat(snapshot(restored).keySet()).containsExactly(VG, VG1, LV);
      assertThat(restored.nodes()).isEqualTo(engine.nodes());
      assertThat(restored.lockCount()).isEqualTo(engine.lockCount());
      assertThat(restored.resourceCount()).isEqualTo(engine.resourceCount());
      assertThat(restored.lockspaces()).isEqualTo(engine.lockspaces());
      assertThat(restored.sessions()).isEqualTo(engine.sessions());
      for (long s : engine.sessions()) {
        assertThat(restored.sessionLocks(s)).isEqualTo(engine.sessionLocks(s));
      }
      for (ResourceView r : records) {
        Stream.of(r.granted(), r.converting(), r.waiting())
            .flatMap(List::stream)
            .forEach(v -> assertThat(restored.lock(v.lockId())).contains(v));
      }
      for (NodeView n : engine.nodes()) {
        assertThat(restored.lockCount(n.node())).isEqualTo(engine.lockCount(n.node()));
      }
      // Request ids survive: a retry finds the same lock.
      LockResult retry =
          restored.acquire(
              new AcquireCommand("req-1", a, 5, VG, NL, false, false, true), new Effects());
      assertThat(retry.lock().lockId()).isEqualTo(ra);

      // And both engines go on the same way.
      long rb = ids(res(VG).granted()).get(0);
      Effects fromOriginal = new Effects();
      Effects fromRestored = new Effects();
      engine.release(b, rb, null, fromOriginal);
      restored.release(b, rb, null, fromRestored);
      assertThat(fromRestored.grants())
          .extracting(g -> g.lock().lockId())
          .containsExactlyElementsOf(
              fromOriginal.grants().stream().map(g -> g.lock().lockId()).toList())
          .containsExactly(nl);
    }

    @Test
    void restoreReplacesWhateverWasThere() {
      granted(a, VG, EX);
      LockEngine other = new LockEngine(3, CLOCK);
      Effects e = new Effects();
      Owner x = other.join("node-x", "boot-x", e).owner();
      other.acquire(cmd(x, LV, EX), e);

      other.restore(engine.nodes(), engine.resources(null));

      assertThat(snapshot(other)).isEqualTo(snapshot(engine));
      assertThat(other.node("node-x")).isEmpty();
      assertThat(other.resource(LV)).isEmpty();
      assertThat(other.lockCount()).isEqualTo(1);
    }
  }

  // ------------------------------------------------------------------ value block

  @Nested
  class ValueBlock {
    private long writeAndRelease(String value) {
      long w = granted(a, VG, EX);
      engine.release(a, w, bytes(value), fx);
      return w;
    }

    @Test
    void valueBlockIsReturnedOnlyAtProtectedReadAndAbove() {
      writeAndRelease("seqno=42");
      for (LockMode m : LockMode.values()) {
        LockResult r = acquire(b, VG, m);
        assertThat(r.outcome()).isEqualTo(Outcome.GRANTED);
        assertThat(r.grant().valueBlockValid()).isTrue();
        if (m.compareTo(PR) >= 0) {
          assertThat(r.grant().valueBlock()).as("%s", m).isEqualTo(bytes("seqno=42"));
          assertThat(engine.readValueBlock(b, r.lock().lockId()).valueBlock())
              .isEqualTo(bytes("seqno=42"));
        } else {
          assertThat(r.grant().valueBlock()).as("%s", m).isEmpty();
          long id = r.lock().lockId();
          refused(Code.FAILED_PRECONDITION, () -> engine.readValueBlock(b, id));
        }
        release(b, r.lock().lockId());
      }
    }

    @Test
    void valueBlockIsWrittenOnReleaseFromExclusive() {
      writeAndRelease("v1");
      assertThat(res(VG).valueBlock()).isEqualTo(bytes("v1"));
      assertThat(res(VG).lockCount()).isZero();
      LockResult r = acquire(b, VG, PR);
      assertThat(r.grant().valueBlock()).isEqualTo(bytes("v1"));
    }

    @Test
    void valueBlockIsWrittenOnDownConversionFromProtectedWrite() {
      long w = granted(a, VG, PW);
      long reader = queued(b, VG, PR);

      fresh();
      LockResult r = engine.convert(a, w, CR, false, bytes("v2"), null, fx);

      assertThat(r.outcome()).isEqualTo(Outcome.GRANTED);
      assertThat(res(VG).valueBlock()).isEqualTo(bytes("v2"));
      assertThat(fx.grants())
          .singleElement()
          .satisfies(
              g -> {
                assertThat(g.lock().lockId()).isEqualTo(reader);
                assertThat(g.valueBlock()).isEqualTo(bytes("v2"));
              });
    }

    /**
     * The answer to a down-conversion that wrote the value block was lost in a fail-over; its retry
     * (same request id) reaches a new leader, where the lock already holds PR, which may not write.
     */
    @Test
    void aRetriedDownConversionThatWroteTheValueBlockIsAnsweredAsDone() {
      long w = granted(a, VG, EX);
      assertThat(engine.convert(a, w, PR, false, bytes("v2"), "conv-1", fx).outcome())
          .isEqualTo(Outcome.GRANTED);
      long token = lock(w).fencingToken();
      LockEngine next = new LockEngine(2, CLOCK);
      next.restore(engine.nodes(), List.of(res(VG)));

      for (LockEngine e : List.of(engine, next)) {
        Effects retryFx = fresh();
        LockResult r = e.convert(a, w, PR, false, bytes("v2"), "conv-1", retryFx);

        assertThat(r.outcome()).isEqualTo(Outcome.GRANTED);
        assertThat(r.grant().valueBlock()).isEqualTo(bytes("v2"));
        assertThat(r.lock().grantedMode()).isEqualTo(PR);
        assertThat(r.lock().fencingToken()).isEqualTo(token);
        assertNoEffects(retryFx);
      }
      // A new request to write it at PR is still refused.
      refused(
          Code.FAILED_PRECONDITION,
          () -> engine.convert(a, w, PR, false, bytes("v3"), "conv-2", fx));
      assertThat(res(VG).valueBlock()).isEqualTo(bytes("v2"));
    }

    @Test
    void protectedReadHolderCannotWriteTheValueBlock() {
      writeAndRelease("v1");
      long reader = granted(b, VG, PR);

      refused(Code.FAILED_PRECONDITION, () -> engine.release(b, reader, bytes("x"), fx));
      refused(
          Code.FAILED_PRECONDITION,
          () -> engine.convert(b, reader, NL, false, bytes("x"), null, fx));
      refused(Code.FAILED_PRECONDITION, () -> engine.writeValueBlock(b, reader, bytes("x"), fx));
      assertThat(lock(reader).grantedMode()).isEqualTo(PR);
      assertThat(res(VG).valueBlock()).isEqualTo(bytes("v1"));
    }

    @Test
    void upConversionCannotWriteTheValueBlock() {
      long w = granted(a, VG, PW);
      refused(
          Code.FAILED_PRECONDITION, () -> engine.convert(a, w, EX, false, bytes("x"), null, fx));
      assertThat(lock(w).grantedMode()).isEqualTo(PW);
    }

    @Test
    void valueBlockOver32BytesIsRefused() {
      long w = granted(a, VG, EX);
      byte[] tooBig = new byte[Names.MAX_VALUE_BLOCK_BYTES + 1];

      DlmException e =
          refused(Code.INVALID_ARGUMENT, () -> engine.writeValueBlock(a, w, tooBig, fx));
      assertThat(e.getMessage()).contains("33").contains("32");
      refused(Code.INVALID_ARGUMENT, () -> engine.release(a, w, tooBig, fx));
      refused(Code.INVALID_ARGUMENT, () -> engine.convert(a, w, NL, false, tooBig, null, fx));
      assertThat(lock(w).grantedMode()).isEqualTo(EX);

      byte[] justRight = new byte[Names.MAX_VALUE_BLOCK_BYTES];
      justRight[31] = 7;
      engine.writeValueBlock(a, w, justRight, fresh());
      assertThat(res(VG).valueBlock()).isEqualTo(justRight);
      assertThat(fx.dirtyResources()).containsExactly(VG);
    }

    @Test
    void purgeOfAnExclusiveHolderThatDidNotWriteInvalidatesTheValueBlockUntilRewritten() {
      writeAndRelease("v1");
      long dead = granted(b, VG, EX);
      long reader = queued(c, VG, PR);

      fresh();
      engine.purge(b, fx);

      assertThat(engine.lock(dead)).isEmpty();
      assertThat(fx.grants())
          .singleElement()
          .satisfies(
              g -> {
                assertThat(g.lock().lockId()).isEqualTo(reader);
                assertThat(g.valueBlockValid()).isFalse();
              });
      assertThat(res(VG).valueBlockValid()).isFalse();

      // The news that it is lost outlives the last lock.
      release(c, reader);
      assertThat(res(VG).lockCount()).isZero();
      assertThat(res(VG).valueBlockValid()).isFalse();

      long w = granted(a, VG, EX);
      assertThat(engine.readValueBlock(a, w).valueBlockValid()).isFalse();
      engine.writeValueBlock(a, w, bytes("v2"), fx);
      assertThat(res(VG).valueBlockValid()).isTrue();
      release(a, w);

      LockResult r = acquire(c, VG, PR);
      assertThat(r.grant().valueBlockValid()).isTrue();
      assertThat(r.grant().valueBlock()).isEqualTo(bytes("v2"));
    }

    @Test
    void purgeOfAReaderKeepsTheValueBlockValid() {
      writeAndRelease("v1");
      granted(b, VG, PR);
      engine.purge(b, fresh());
      assertThat(res(VG).valueBlockValid()).isTrue();
      assertThat(res(VG).valueBlock()).isEqualTo(bytes("v1"));
    }

    @Test
    void endOfTheSessionOfAnExclusiveHolderInvalidatesTheValueBlock() {
      writeAndRelease("v1");
      engine.acquire(sessionCmd(b, 9, VG, EX, false), fx);
      engine.endSession(9, fresh());
      assertThat(res(VG).valueBlockValid()).isFalse();
    }
  }

  // ------------------------------------------------------------------ membership

  @Nested
  class Membership {
    @Test
    void purgeReleasesEveryLockOfTheIncarnationAndGrantsWaiters() {
      long bEx = granted(b, VG, EX);
      long bOwnWaiter = queued(b, VG, PR); // waits behind its own EX
      long aWaiter = queued(a, VG, PR);
      granted(c, VG1, EX);
      long bWaiterVg1 = queued(b, VG1, PR);
      long bLv = granted(b, LV, PR);
      granted(c, LV, PR);
      assertThat(convert(b, bLv, EX).outcome()).isEqualTo(Outcome.QUEUED);
      long aLvWaiter = queued(a, LV, CR);

      fresh();
      int n = engine.purge(b, fx);

      assertThat(n).isEqualTo(4);
      assertThat(engine.lockCount("node-b")).isZero();
      for (long id : List.of(bEx, bOwnWaiter, bWaiterVg1, bLv)) {
        assertThat(engine.lock(id)).as("lock %d", id).isEmpty();
      }
      // Only locks that still exist are granted; b's own waiter is not handed the lock on its way
      // out.
      assertThat(grantedIds()).containsExactlyInAnyOrder(aWaiter, aLvWaiter);
      for (Grant g : fx.grants()) {
        assertThat(engine.lock(g.lock().lockId())).contains(g.lock());
      }
      assertThat(fx.ended())
          .allSatisfy(e -> assertThat(e.reason()).isEqualTo(Reason.PURGED))
          .extracting(e -> e.lock().lockId())
          .containsExactlyInAnyOrder(bOwnWaiter, bWaiterVg1, bLv);
      assertThat(fx.dirtyResources()).containsExactlyInAnyOrder(VG, VG1, LV);
      assertThat(fx.dirtyNodes()).containsExactly("node-b");
      assertThat(engine.node("node-b").orElseThrow().state()).isEqualTo(NodeState.LEFT);
      DlmException e = refused(Code.FAILED_PRECONDITION, () -> acquire(b, VG, NL));
      assertThat(e.getMessage()).contains("node-b");
    }

    @Test
    void purgeOfAnEarlierIncarnationLeavesTheRejoinedNodeAMember() {
      long old = granted(b, VG, EX);
      Owner b2 = engine.join("node-b", "boot-b2", fx).owner();
      assertThat(b2.incarnation()).isEqualTo(b.incarnation() + 1);
      // The old incarnation's lock stays held until it is purged.
      long fresh = queued(b2, VG, EX);
      assertThat(lock(old).state()).isEqualTo(QueueState.GRANTED);

      fresh();
      assertThat(engine.purge(b, fx)).isEqualTo(1);

      assertThat(grantedIds()).containsExactly(fresh);
      NodeView n = engine.node("node-b").orElseThrow();
      assertThat(n.state()).isEqualTo(NodeState.MEMBER);
      assertThat(n.incarnation()).isEqualTo(b2.incarnation());
      engine.requireMember(b2);
    }

    @Test
    void leaveReleasesEverythingAndKeepsTheValueBlockValid() {
      long w = granted(b, VG, EX);
      engine.writeValueBlock(b, w, bytes("v9"), fx);
      long reader = queued(a, VG, PR);
      granted(c, VG1, EX);
      long bWaiter = queued(b, VG1, CR);

      fresh();
      assertThat(engine.leave(b, fx)).isEqualTo(2);

      assertThat(engine.lockCount("node-b")).isZero();
      assertThat(fx.grants())
          .singleElement()
          .satisfies(
              g -> {
                assertThat(g.lock().lockId()).isEqualTo(reader);
                assertThat(g.valueBlockValid()).isTrue();
                assertThat(g.valueBlock()).isEqualTo(bytes("v9"));
              });
      assertThat(fx.ended())
          .singleElement()
          .satisfies(
              e -> {
                assertThat(e.lock().lockId()).isEqualTo(bWaiter);
                assertThat(e.reason()).isEqualTo(Reason.PURGED);
              });
      assertThat(engine.node("node-b").orElseThrow().state()).isEqualTo(NodeState.LEFT);
      assertThat(fx.dirtyNodes()).containsExactly("node-b");
      refused(Code.FAILED_PRECONDITION, () -> acquire(b, VG, NL));

      NodeView again = engine.join("node-b", "boot-b", fresh());
      assertThat(again.incarnation()).isEqualTo(b.incarnation() + 1);
      assertThat(again.state()).isEqualTo(NodeState.MEMBER);
      assertThat(acquire(again.owner(), LV, NL).outcome()).isEqualTo(Outcome.GRANTED);
    }

    @Test
    void endSessionDropsOnlyTheSessionsNonPersistentLocks() {
      long plain = engine.acquire(sessionCmd(a, 7, VG, PR, false), fx).lock().lockId();
      long persistent = engine.acquire(sessionCmd(a, 7, LV, CR, true), fx).lock().lockId();
      granted(b, VG1, EX);
      long waiting = engine.acquire(sessionCmd(a, 7, VG1, PR, false), fx).lock().lockId();
      long otherSession = engine.acquire(sessionCmd(a, 8, VG, PR, false), fx).lock().lockId();
      long nodeLevel = granted(a, VG, CR);

      fresh();
      assertThat(engine.endSession(7, fx)).isEqualTo(2);

      assertThat(engine.lock(plain)).isEmpty();
      assertThat(engine.lock(waiting)).isEmpty();
      assertThat(engine.lock(persistent)).isPresent();
      assertThat(engine.lock(otherSession)).isPresent();
      assertThat(engine.lock(nodeLevel)).isPresent();
      assertThat(engine.sessionLocks(7)).containsExactly(persistent);
      assertThat(engine.sessions()).containsExactlyInAnyOrder(7L, 8L);
      assertThat(fx.ended())
          .singleElement()
          .satisfies(
              e -> {
                assertThat(e.lock().lockId()).isEqualTo(waiting);
                assertThat(e.reason()).isEqualTo(Reason.SESSION_ENDED);
              });
      assertThat(engine.endSession(42, fresh())).isZero();
      assertNoEffects(fx);
    }

    @Test
    void endSessionDoesNotHandTheSessionsOwnWaiterTheLockOnTheWayOut() {
      engine.acquire(sessionCmd(a, 7, VG, EX, false), fx);
      long own = engine.acquire(sessionCmd(a, 7, VG, PR, false), fx).lock().lockId();
      long other = queued(b, VG, PR);

      fresh();
      engine.endSession(7, fx);

      assertThat(grantedIds()).containsExactly(other);
      assertThat(fx.ended()).extracting(e -> e.lock().lockId()).containsExactly(own);
    }
  }

  // ------------------------------------------------------------------ requests and refusals

  @Nested
  class Requests {
    @Test
    void aRetryWithTheSameRequestIdReturnsTheSameLock() {
      AcquireCommand first = new AcquireCommand("r-1", a, 0, VG, EX, false, false, false);
      LockResult r1 = engine.acquire(first, fx);
      AcquireCommand waiting = new AcquireCommand("r-2", b, 0, VG, PR, false, false, false);
      LockResult w1 = engine.acquire(waiting, fx);
      Map<ResourceKey, EngineFixtures.ResourceSnapshot> before = snapshot(engine);

      fresh();
      LockResult r2 = engine.acquire(first, fx);
      LockResult w2 = engine.acquire(waiting, fx);

      assertThat(r2.outcome()).isEqualTo(Outcome.GRANTED);
      assertThat(r2.lock()).isEqualTo(r1.lock());
      assertThat(r2.grant().lock().fencingToken()).isEqualTo(r1.grant().lock().fencingToken());
      assertThat(w2.outcome()).isEqualTo(Outcome.QUEUED);
      assertThat(w2.lock().lockId()).isEqualTo(w1.lock().lockId());
      assertThat(snapshot(engine)).isEqualTo(before);
      assertNoEffects(fx);

      // The id is the owner's: another node using the same id asks for a lock of its own.
      LockResult other =
          engine.acquire(new AcquireCommand("r-1", c, 0, VG, NL, false, false, false), fx);
      assertThat(other.lock().lockId()).isNotEqualTo(r1.lock().lockId());
    }

    static Stream<Arguments> badNames() {
      return Stream.of(
          Arguments.of("", "empty"),
          Arguments.of("a".repeat(65), "64"),
          Arguments.of("é".repeat(33), "64"),
          Arguments.of("vg 0", "printable"),
          Arguments.of("vg\t0", "printable"),
          Arguments.of("vg\n0", "printable"),
          Arguments.of("vg\u0000", "printable"),
          Arguments.of("vg\u007f", "printable"),
          Arguments.of("vgé", "printable"));
    }

    @ParameterizedTest(name = "[{index}] rule: {1}")
    @MethodSource("badNames")
    void badNamesAreRefusedNamingTheRule(String name, String rule) {
      DlmException res =
          refused(Code.INVALID_ARGUMENT, () -> acquire(a, new ResourceKey("clvm", name), EX));
      assertThat(res.getMessage()).contains("resource").contains(rule);
      DlmException ls =
          refused(Code.INVALID_ARGUMENT, () -> acquire(a, new ResourceKey(name, "vg0"), EX));
      assertThat(ls.getMessage()).contains("lockspace").contains(rule);
      DlmException node = refused(Code.INVALID_ARGUMENT, () -> engine.join(name, "boot", fx));
      assertThat(node.getMessage()).contains("node").contains(rule);
      assertThat(res.getMessage()).doesNotContain("\n", "\t", "\u0000", "\u007f");
    }

    @Test
    void namesOf64PrintableBytesAreAccepted() {
      String name = "x".repeat(63) + "~";
      assertThat(acquire(a, new ResourceKey(name, name), EX).outcome()).isEqualTo(Outcome.GRANTED);
      assertThat(engine.join(name, "boot", fx).node()).isEqualTo(name);
    }

    @Test
    void aMissingModeIsRefused() {
      refused(Code.INVALID_ARGUMENT, () -> acquire(a, VG, null));
      long id = granted(a, VG, EX);
      refused(Code.INVALID_ARGUMENT, () -> convert(a, id, null));
    }

    @Test
    void anotherNodeCannotTouchTheLock() {
      long id = granted(a, VG, EX);
      DlmException e = refused(Code.PERMISSION_DENIED, () -> release(b, id));
      assertThat(e.getMessage()).contains("node-a").contains("node-b");
      refused(Code.PERMISSION_DENIED, () -> convert(b, id, NL));
      refused(Code.PERMISSION_DENIED, () -> engine.cancel(b, id, fx));
      refused(Code.PERMISSION_DENIED, () -> engine.readValueBlock(b, id));
      refused(Code.PERMISSION_DENIED, () -> engine.writeValueBlock(b, id, bytes("x"), fx));
      assertThat(lock(id).grantedMode()).isEqualTo(EX);
    }

    @Test
    void anUnknownLockIsNotFound() {
      granted(a, VG, EX);
      long nope = 12345;
      refused(Code.NOT_FOUND, () -> release(a, nope));
      refused(Code.NOT_FOUND, () -> convert(a, nope, NL));
      refused(Code.NOT_FOUND, () -> engine.cancel(a, nope, fx));
      refused(Code.NOT_FOUND, () -> engine.cancel(null, nope, fx));
      refused(Code.NOT_FOUND, () -> engine.readValueBlock(a, nope));
      refused(Code.NOT_FOUND, () -> engine.writeValueBlock(a, nope, bytes("x"), fx));
    }

    @Test
    void aStaleIncarnationIsRefused() {
      long id = granted(a, VG, PR);
      granted(b, VG1, EX);
      long waiting = queued(a, VG1, PR);
      engine.join("node-a", "boot-a2", fx);

      DlmException e = refused(Code.FAILED_PRECONDITION, () -> acquire(a, LV, EX));
      assertThat(e.getMessage()).contains("stale");
      refused(Code.FAILED_PRECONDITION, () -> convert(a, id, EX));
      refused(Code.FAILED_PRECONDITION, () -> release(a, id));
      refused(Code.FAILED_PRECONDITION, () -> engine.readValueBlock(a, id));
      refused(Code.FAILED_PRECONDITION, () -> engine.cancel(a, waiting, fx));
      refused(Code.FAILED_PRECONDITION, () -> engine.leave(a, fx));
    }

    @Test
    void aNodeThatNeverJoinedIsRefused() {
      DlmException e =
          refused(Code.FAILED_PRECONDITION, () -> acquire(new Owner("node-z", 1), VG, EX));
      assertThat(e.getMessage()).contains("node-z").contains("join");
    }
  }

  // ------------------------------------------------------------------ blocking notifications

  @Nested
  class Blocking {
    private final List<BlockingEvent> all = new ArrayList<>();

    private void collect() {
      all.addAll(fx.blocking());
      fresh();
    }

    @Test
    void everyHolderInTheWayIsToldExactlyOncePerBlockedRequest() {
      long told = engine.acquire(notifyingCmd(a, VG, PR), fx).lock().lockId();
      long hinted = granted(b, VG, PR);
      collect();

      long w1 = queued(c, VG, EX);
      assertThat(fx.blocking())
          .extracting(e -> e.holder().lockId(), e -> e.blocked().lockId())
          .containsExactlyInAnyOrder(tuple(told, w1), tuple(hinted, w1));
      // Only the holder that asked is told in full; the other only as a hint to its library.
      assertThat(fx.blocking())
          .filteredOn(e -> e.holder().notifyBlocking())
          .extracting(e -> e.holder().lockId())
          .containsExactly(told);
      collect();
      long w2 = queued(d, VG, PW);
      assertThat(fx.blocking())
          .extracting(e -> e.holder().lockId(), e -> e.blocked().lockId())
          .containsExactlyInAnyOrder(tuple(told, w2), tuple(hinted, w2));
      collect();
      // Things happen on the resource while w1 stays at the head.
      engine.cancel(d, w2, fx);
      collect();
      long w3 = queued(d, VG, CW);
      collect();
      release(d, w3);
      collect();
      release(b, hinted);
      collect();

      assertThat(all)
          .extracting(e -> e.holder().lockId(), e -> e.blocked().lockId())
          .containsExactlyInAnyOrder(
              tuple(told, w1),
              tuple(hinted, w1),
              tuple(told, w2),
              tuple(hinted, w2),
              tuple(told, w3),
              tuple(hinted, w3));
    }

    @Test
    void aQueuedConversionTellsTheHoldersInItsWay() {
      long told = engine.acquire(notifyingCmd(a, VG, PR), fx).lock().lockId();
      long mine = granted(b, VG, PR);

      fresh();
      convert(b, mine, EX);

      assertThat(fx.blocking())
          .singleElement()
          .satisfies(
              e -> {
                assertThat(e.holder().lockId()).isEqualTo(told);
                assertThat(e.blocked().lockId()).isEqualTo(mine);
                assertThat(e.blocked().requestedMode()).isEqualTo(EX);
              });
    }

    @Test
    void aHolderThatComesInAheadOfTheQueueIsToldItBlocksTheHead() {
      long late = engine.acquire(notifyingCmd(a, VG, NL), fx).lock().lockId();
      granted(b, VG, CR);
      long waiter = queued(c, VG, EX);

      fresh();
      assertThat(convert(a, late, PR).outcome()).isEqualTo(Outcome.GRANTED);

      assertThat(fx.blocking())
          .singleElement()
          .satisfies(
              e -> {
                assertThat(e.holder().lockId()).isEqualTo(late);
                assertThat(e.blocked().lockId()).isEqualTo(waiter);
              });
    }

    @Test
    void aHolderIsNotToldAboutARequestItDoesNotBlock() {
      engine.acquire(notifyingCmd(a, VG, NL), fx);
      long blocker = granted(b, VG, EX);
      fresh();
      queued(c, VG, PR);
      assertThat(fx.blocking()).extracting(e -> e.holder().lockId()).containsExactly(blocker);
    }
  }

  // ------------------------------------------------------------------ effects

  @Nested
  class Dirty {
    private final Set<ResourceKey> everChanged = new HashSet<>();

    /** Runs one operation and checks that its effects name exactly the resources it changed. */
    private Effects step(Runnable op) {
      Map<ResourceKey, EngineFixtures.ResourceSnapshot> before = snapshot(engine);
      fresh();
      op.run();
      Map<ResourceKey, EngineFixtures.ResourceSnapshot> after = snapshot(engine);
      Set<ResourceKey> changed = new HashSet<>(before.keySet());
      changed.addAll(after.keySet());
      changed.removeIf(k -> Objects.equals(before.get(k), after.get(k)));
      assertThat(fx.dirtyResources()).containsExactlyInAnyOrderElementsOf(changed);
      assertThat(fx.needsWrite()).isEqualTo(!changed.isEmpty() || !fx.dirtyNodes().isEmpty());
      everChanged.addAll(changed);
      return fx;
    }

    @Test
    void effectsNameEveryResourceThatChanged() {
      long[] id = new long[8];
      step(() -> id[0] = granted(a, VG, PR));
      step(() -> id[1] = granted(b, VG, PR));
      step(() -> id[2] = queued(c, VG, EX));
      step(() -> convert(a, id[0], PW)); // queued conversion
      step(() -> assertThat(convert(b, id[1], EX).outcome()).isEqualTo(Outcome.DEADLOCK));
      step(() -> engine.acquire(tryCmd(d, VG, NL), fx));
      step(() -> engine.cancel(a, id[0], fx));
      step(() -> id[3] = granted(b, VG1, EX));
      step(() -> engine.writeValueBlock(b, id[3], bytes("v"), fx));
      step(() -> id[4] = granted(b, LV, PW));
      step(() -> engine.convert(b, id[4], CR, false, bytes("w"), null, fx));
      step(() -> id[5] = queued(a, LV, EX));
      step(() -> engine.purge(b, fx)); // touches vg0, vg1 and lv
      step(() -> engine.release(a, id[5], null, fx));
      step(() -> id[6] = engine.acquire(sessionCmd(d, 3, LV, EX, false), fx).lock().lockId());
      step(() -> engine.endSession(3, fx));
      step(() -> engine.leave(a, fx));
      step(() -> engine.release(c, id[2], null, fx));

      assertThat(everChanged).containsExactlyInAnyOrder(VG, VG1, LV);
    }

    @Test
    void membershipChangesNameTheNode() {
      assertThat(engine.join("node-e", "boot", fresh()).node()).isEqualTo("node-e");
      assertThat(fx.dirtyNodes()).containsExactly("node-e");
      assertThat(fx.dirtyResources()).isEmpty();
      engine.leave(c, fresh());
      assertThat(fx.dirtyNodes()).containsExactly("node-c");
      engine.purge(d, fresh());
      assertThat(fx.dirtyNodes()).containsExactly("node-d");
    }
  }

  @Test
  void anEpochOutOfRangeIsRefused() {
    assertThatThrownBy(() -> new LockEngine(0, CLOCK)).isInstanceOf(IllegalArgumentException.class);
    assertThatThrownBy(() -> new LockEngine(1L << 31, CLOCK))
        .isInstanceOf(IllegalArgumentException.class);
    assertThat(new LockEngine(2, CLOCK).nextId()).isGreaterThan(2L << 32);
  }

  @Test
  void viewsCountLocksPerLockspace() {
    granted(a, VG, PR);
    granted(b, VG, PR);
    long mine = granted(c, VG, PR);
    convert(c, mine, EX);
    queued(d, VG, EX);
    granted(a, LV, EX);
    assertThat(engine.lockspaces())
        .containsExactly(
            new LockspaceView("clvm", 1, 2, 1, 1), new LockspaceView("lv", 1, 1, 0, 0));
    assertThat(engine.hasLockspace("clvm")).isTrue();
    assertThat(engine.resourceCount()).isEqualTo(2);
    assertThat(engine.lockCount()).isEqualTo(5);
    assertThat(engine.lockCount("node-a")).isEqualTo(2);
    assertThat(engine.resources("lv")).extracting(ResourceView::key).containsExactly(LV);
  }

  @Test
  void aListingComesInPagesInNameOrderAndResumesAfterTheLastResource() {
    ResourceKey vg2 = new ResourceKey("clvm", "vg2");
    granted(a, VG1, PR);
    granted(b, VG1, PR);
    granted(a, LV, EX);
    granted(b, VG, EX);
    queued(a, VG, EX);
    granted(c, vg2, EX);

    LockEngine.ResourcePage first = engine.resourcesAfter(null, null, null, 0, limits(2, 100));
    assertThat(first.resources()).extracting(ResourceView::key).containsExactly(VG, VG1);
    assertThat(first.resumeAfter()).isEqualTo(VG1);
    // Past a lockspace's end, into the next one.
    LockEngine.ResourcePage second = engine.resourcesAfter(VG1, null, null, 0, limits(2, 100));
    assertThat(second.resources()).extracting(ResourceView::key).containsExactly(vg2, LV);
    assertThat(second.resumeAfter()).isEqualTo(LV);
    LockEngine.ResourcePage last = engine.resourcesAfter(LV, null, null, 0, limits(2, 100));
    assertThat(last).isEqualTo(new LockEngine.ResourcePage(List.of(), null));

    // A page ends at the resource that brings it to the lock budget.
    assertThat(engine.resourcesAfter(null, null, null, 0, limits(100, 2)).resources())
        .extracting(ResourceView::key)
        .containsExactly(VG);
    // One lockspace; a position in another one is a token of another listing.
    assertThat(engine.resourcesAfter(null, "lv", null, 0, limits(100, 100)).resources())
        .extracting(ResourceView::key)
        .containsExactly(LV);
    assertThat(engine.resourcesAfter(VG, "clvm", null, 0, limits(100, 100)).resources())
        .extracting(ResourceView::key)
        .containsExactly(VG1, vg2);
    for (String other : List.of("a", "lv", "zz")) {
      assertThatThrownBy(() -> engine.resourcesAfter(VG1, other, null, 0, limits(100, 100)))
          .isInstanceOfSatisfying(
              DlmException.class,
              e -> assertThat(e.code()).isEqualTo(DlmException.Code.INVALID_ARGUMENT));
    }
    // A node's resources: those it holds or waits for a lock on, in one incarnation or any.
    assertThat(engine.resourcesAfter(null, null, "node-a", 0, limits(100, 100)).resources())
        .extracting(ResourceView::key)
        .containsExactly(VG, VG1, LV);
    // Each with only that node's locks (node-b's on VG and VG1 are left out); the lock budget
    // counts the locks shown, so two of node-a's come before the page ends.
    LockEngine.ResourcePage ofA = engine.resourcesAfter(null, null, "node-a", 0, limits(100, 2));
    assertThat(ofA.resumeAfter()).isEqualTo(VG1);
    assertThat(ofA.resources().get(0).granted()).isEmpty();
    assertThat(ofA.resources().get(0).waiting())
        .extracting(l -> l.owner().node())
        .containsExactly("node-a");
    assertThat(ofA.resources().get(1).granted())
        .extracting(l -> l.owner().node())
        .containsExactly("node-a");
    assertThat(
            engine.resourcesAfter(VG, null, "node-a", a.incarnation(), limits(1, 100)).resources())
        .extracting(ResourceView::key)
        .containsExactly(VG1);
    assertThat(engine.resourcesAfter(null, null, "node-a", a.incarnation() + 1, limits(100, 100)))
        .isEqualTo(new LockEngine.ResourcePage(List.of(), null));
    // A page also ends after so many resources looked at: node-c's one lock comes on the third.
    LockEngine.PageLimits scanTwo = new LockEngine.PageLimits(100, 100, 2);
    LockEngine.ResourcePage scanned = engine.resourcesAfter(null, null, "node-c", 0, scanTwo);
    assertThat(scanned).isEqualTo(new LockEngine.ResourcePage(List.of(), VG1));
    assertThat(engine.resourcesAfter(VG1, null, "node-c", 0, scanTwo).resources())
        .extracting(ResourceView::key)
        .containsExactly(vg2);
  }

  private static LockEngine.PageLimits limits(int resources, int locks) {
    return new LockEngine.PageLimits(resources, locks, Integer.MAX_VALUE);
  }

  @Test
  void aResourceWithNothingToRememberIsForgotten() {
    long id = granted(a, VG, EX);
    release(a, id);
    assertThat(engine.resource(VG)).isEmpty();
    assertThat(engine.hasLockspace("clvm")).isFalse();
    assertThat(engine.resourceCount()).isZero();
  }
}
