package io.clusterlvm.dlm.server;

import com.google.protobuf.ByteString;
import io.clusterlvm.dlm.engine.AcquireCommand;
import io.clusterlvm.dlm.engine.DlmException;
import io.clusterlvm.dlm.engine.Effects;
import io.clusterlvm.dlm.engine.Grant;
import io.clusterlvm.dlm.engine.LockEngine;
import io.clusterlvm.dlm.engine.LockMode;
import io.clusterlvm.dlm.engine.LockResult;
import io.clusterlvm.dlm.engine.LockView;
import io.clusterlvm.dlm.engine.LockspaceView;
import io.clusterlvm.dlm.engine.Names;
import io.clusterlvm.dlm.engine.NodeView;
import io.clusterlvm.dlm.engine.Owner;
import io.clusterlvm.dlm.engine.QueueState;
import io.clusterlvm.dlm.engine.ResourceKey;
import io.clusterlvm.dlm.engine.ResourceView;
import io.clusterlvm.dlm.proto.AbandonRequest;
import io.clusterlvm.dlm.proto.AbandonResponse;
import io.clusterlvm.dlm.proto.AcquireRequest;
import io.clusterlvm.dlm.proto.CancelRequest;
import io.clusterlvm.dlm.proto.CancelResponse;
import io.clusterlvm.dlm.proto.CloseSessionRequest;
import io.clusterlvm.dlm.proto.CloseSessionResponse;
import io.clusterlvm.dlm.proto.ConvertRequest;
import io.clusterlvm.dlm.proto.DlmGrpc;
import io.clusterlvm.dlm.proto.JoinRequest;
import io.clusterlvm.dlm.proto.JoinResponse;
import io.clusterlvm.dlm.proto.LeaveRequest;
import io.clusterlvm.dlm.proto.LeaveResponse;
import io.clusterlvm.dlm.proto.ListLocksRequest;
import io.clusterlvm.dlm.proto.ListLocksResponse;
import io.clusterlvm.dlm.proto.ListLockspacesRequest;
import io.clusterlvm.dlm.proto.ListLockspacesResponse;
import io.clusterlvm.dlm.proto.ListNodesRequest;
import io.clusterlvm.dlm.proto.ListNodesResponse;
import io.clusterlvm.dlm.proto.LockCallResults;
import io.clusterlvm.dlm.proto.LockCalls;
import io.clusterlvm.dlm.proto.LockInfo;
import io.clusterlvm.dlm.proto.LockReply;
import io.clusterlvm.dlm.proto.LockState;
import io.clusterlvm.dlm.proto.LockspaceInfo;
import io.clusterlvm.dlm.proto.NodeInfo;
import io.clusterlvm.dlm.proto.OpenSessionRequest;
import io.clusterlvm.dlm.proto.Outcome;
import io.clusterlvm.dlm.proto.PurgeRequest;
import io.clusterlvm.dlm.proto.PurgeResponse;
import io.clusterlvm.dlm.proto.ReadValueBlockRequest;
import io.clusterlvm.dlm.proto.ReleaseRequest;
import io.clusterlvm.dlm.proto.ReleaseResponse;
import io.clusterlvm.dlm.proto.ResourceInfo;
import io.clusterlvm.dlm.proto.ServerStatusRequest;
import io.clusterlvm.dlm.proto.ServerStatusResponse;
import io.clusterlvm.dlm.proto.SessionEvent;
import io.clusterlvm.dlm.proto.SessionOpened;
import io.clusterlvm.dlm.proto.ValueBlockReply;
import io.clusterlvm.dlm.proto.WriteValueBlockRequest;
import io.grpc.Status;
import io.grpc.stub.ServerCallStreamObserver;
import io.grpc.stub.StreamObserver;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Optional;
import java.util.Set;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.atomic.AtomicLong;
import java.util.concurrent.atomic.AtomicReference;
import java.util.function.Supplier;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * The gRPC front of the lock service: checks the shape of each request, turns it into a task for
 * the leader's engine thread, and maps the answer back. Holds no lock state of its own.
 */
final class DlmGrpcService extends DlmGrpc.DlmImplBase {
  private static final Logger LOG = LoggerFactory.getLogger(DlmGrpcService.class);

  private final Supplier<LeaderCore> leader;
  private final ServerInfo info;

  interface ServerInfo {
    String serverId();

    String zookeeper();

    String leaderId();

    /**
     * The leader's id as a recent lookup found it, for a status request: {@link #leaderId} may
     * answer from a lookup made long ago, which is fine for a redirect that the client follows (and
     * corrects) at once, but not for what an operator reads.
     */
    default CompletableFuture<String> freshLeaderId() {
      return CompletableFuture.completedFuture(leaderId());
    }
  }

  private final Set<LockStreamHandler> lockStreams = ConcurrentHashMap.newKeySet();

  DlmGrpcService(Supplier<LeaderCore> leader, ServerInfo info) {
    this.leader = leader;
    this.info = info;
  }

  /**
   * Ends the open lock streams once their answers are sent (the server is stopping; their clients
   * retry elsewhere).
   */
  void close() {
    for (LockStreamHandler h : lockStreams) {
      h.close(Status.UNAVAILABLE.withDescription("dlm-server is shutting down; retry"));
    }
  }

  /** The leader core, or null after failing the call with UNAVAILABLE. */
  private LeaderCore core(StreamObserver<?> caller) {
    LeaderCore c = leader.get();
    if (c == null) {
      String l = info.leaderId();
      LeaderCore.fail(
          caller,
          Status.UNAVAILABLE.withDescription(
              "this dlm-server is not the leader"
                  + (l == null || l.isEmpty()
                      ? " and knows of none (none is elected yet, or this server lost ZooKeeper)"
                      : "; the leader is " + l)));
    }
    return c;
  }

  private static Owner owner(io.clusterlvm.dlm.proto.Owner o) {
    if (o.getNode().isEmpty()) {
      throw new DlmException(DlmException.Code.INVALID_ARGUMENT, "owner node is missing");
    }
    return new Owner(o.getNode(), o.getIncarnation());
  }

  private static LockMode mode(io.clusterlvm.dlm.proto.Mode m) {
    LockMode mode = Records.mode(m);
    if (mode == null) {
      throw new DlmException(
          DlmException.Code.INVALID_ARGUMENT,
          "unknown lock mode "
              + (m == io.clusterlvm.dlm.proto.Mode.UNRECOGNIZED ? "(unrecognized number)" : m)
              + "; use one of NL, CR, CW, PR, PW, EX");
    }
    return mode;
  }

  /**
   * The longest lock wait a request may ask for; 0 (unset) waits for as long as the call lasts.
   * Longer ones overflowed when the wait was scheduled, on the engine thread, which took that for a
   * bug and reloaded the whole table (found in review).
   */
  static final Duration MAX_TIMEOUT = Duration.ofDays(365);

  private static Duration timeout(com.google.protobuf.Duration d) {
    Duration t;
    try {
      t = Duration.ofSeconds(d.getSeconds(), d.getNanos());
    } catch (ArithmeticException | java.time.DateTimeException e) {
      throw new DlmException(
          DlmException.Code.INVALID_ARGUMENT,
          "timeout of " + d.getSeconds() + " s and " + d.getNanos() + " ns is out of range");
    }
    if (t.isNegative()) {
      throw new DlmException(DlmException.Code.INVALID_ARGUMENT, "timeout is negative: " + t);
    }
    if (t.compareTo(MAX_TIMEOUT) > 0) {
      throw new DlmException(
          DlmException.Code.INVALID_ARGUMENT,
          "timeout of "
              + t.getSeconds()
              + " s is longer than the longest wait ("
              + MAX_TIMEOUT.toDays()
              + " days); leave it unset to wait for as long as the call lasts");
    }
    return t;
  }

  /** Runs shape checks that need no engine; on failure answers the caller and returns false. */
  private static boolean checked(StreamObserver<?> caller, Runnable check) {
    try {
      check.run();
      return true;
    } catch (DlmException e) {
      LeaderCore.fail(caller, GrpcStatuses.of(e));
      return false;
    }
  }

  // ---------------------------------------------------------------- membership

  @Override
  public void join(JoinRequest req, StreamObserver<JoinResponse> caller) {
    LeaderCore c = core(caller);
    if (c == null || !checked(caller, () -> Names.check("node", req.getNode()))) {
      return;
    }
    c.submit(
        caller,
        LeaderCore.Needs.NODES,
        (engine, fx) -> {
          NodeView n = engine.join(req.getNode(), req.getBootId(), fx);
          LOG.info(
              "[node={}] joined with incarnation {} (boot id {})",
              n.node(),
              n.incarnation(),
              n.bootId());
          return () ->
              LeaderCore.reply(
                  caller, JoinResponse.newBuilder().setIncarnation(n.incarnation()).build());
        });
  }

  @Override
  public void leave(LeaveRequest req, StreamObserver<LeaveResponse> caller) {
    LeaderCore c = core(caller);
    if (c == null) {
      return;
    }
    c.submit(
        caller,
        (engine, fx) -> {
          Owner o = owner(req.getOwner());
          if (engine.hasLeft(o)) {
            // A leave asked again (its answer was lost): what it asked for holds already.
            return () ->
                LeaderCore.reply(caller, LeaveResponse.newBuilder().setAlreadyLeft(true).build());
          }
          int n = engine.leave(o, fx);
          c.forgetSessionsOf(o);
          LOG.info(
              "[node={}] left cleanly (incarnation {}); released {} locks",
              o.node(),
              o.incarnation(),
              n);
          return () ->
              LeaderCore.reply(caller, LeaveResponse.newBuilder().setReleasedLocks(n).build());
        });
  }

  @Override
  public void purge(PurgeRequest req, StreamObserver<PurgeResponse> caller) {
    LeaderCore c = core(caller);
    if (c == null) {
      return;
    }
    c.submit(
        caller,
        (engine, fx) -> {
          Owner o = owner(req.getOwner());
          NodeView before =
              engine
                  .node(o.node())
                  .orElseThrow(
                      () ->
                          new DlmException(
                              DlmException.Code.NOT_FOUND, "no node named " + o.node()));
          boolean wasMember = before.isMember(o);
          int n = engine.purge(o, fx);
          boolean alreadyGone = n == 0 && !wasMember;
          int releasedEarlier =
              alreadyGone && before.incarnation() == o.incarnation() ? before.releasedLocks() : 0;
          c.forgetSessionsOf(o);
          c.endOpenSessionsOf(o, engine, fx, req.getReason());
          LOG.warn(
              "[node={}] purged incarnation {}: {}; reason: {}",
              o.node(),
              o.incarnation(),
              alreadyGone
                  ? "nothing left (it had left or been purged already)"
                  : n + " locks dropped",
              req.getReason().isEmpty() ? "(none given)" : req.getReason());
          return () ->
              LeaderCore.reply(
                  caller,
                  PurgeResponse.newBuilder()
                      .setPurgedLocks(n)
                      .setAlreadyGone(alreadyGone)
                      .setReleasedEarlier(releasedEarlier)
                      .build());
        });
  }

  @Override
  public void openSession(OpenSessionRequest req, StreamObserver<SessionEvent> caller) {
    LeaderCore c = core(caller);
    if (c == null) {
      return;
    }
    ServerCallStreamObserver<SessionEvent> stream = (ServerCallStreamObserver<SessionEvent>) caller;
    // gRPC lets the handlers be set only here; the session they need is known once the engine ran.
    AtomicReference<LeaderCore.Session> session = new AtomicReference<>();
    stream.setOnCancelHandler(
        () ->
            c.submit(
                null,
                (e, fx) -> {
                  LeaderCore.Session s = session.get();
                  return s == null ? null : c.streamEnded(s.id, stream, e, fx);
                }));
    // Blocking notifications held back while the client did not read go out once it does.
    stream.setOnReadyHandler(
        () -> {
          LeaderCore.Session s = session.get();
          if (s != null && s.holding) {
            c.submit(null, LeaderCore.Needs.NODES, (e, fx) -> c.sessionStreamReady(s.id, stream));
          }
        });
    c.submit(
        caller,
        req.getResumeSessionId() != 0
            ? LeaderCore.Needs.resume(req.getResumeSessionId(), req.getHeldLockIdsList())
            : LeaderCore.Needs.NODES,
        (engine, fx) -> {
          Owner o = owner(req.getOwner());
          LeaderCore.Session s =
              c.openSession(
                  o,
                  req.getClientName(),
                  req.getResumeSessionId(),
                  req.getHeldLockIdsList(),
                  stream);
          long id = s.id;
          session.set(s);
          if (stream.isCancelled()) {
            return c.streamEnded(id, stream, engine, fx);
          }
          // A resumed session hears again whom its locks block: what was on its way when its
          // stream broke, or its leader died, was lost, and a holder that waits to be told before
          // it releases would keep its waiters waiting for good. The non-persistent locks its
          // client says it holds (a listener must not hear of a lock whose grant has not reached
          // it; one that did not reach it is released with the session if the resume fails), and
          // its persistent ones, which the client does not track: a grant of one that never
          // reached it is abandoned by the client, and a notification naming a lock it does not
          // know is dropped by its listener.
          List<Long> tell = new ArrayList<>(req.getHeldLockIdsList());
          if (req.getResumeSessionId() != 0) {
            for (long lockId : engine.sessionLocks(id)) {
              if (engine.lock(lockId).filter(l -> l.persistent()).isPresent()) {
                tell.add(lockId);
              }
            }
          }
          List<SessionEvent> blocking =
              engine.blockingNow(tell).stream().map(GrpcStatuses::blockingEvent).toList();
          return () -> {
            try {
              stream.onNext(
                  SessionEvent.newBuilder()
                      .setOpened(SessionOpened.newBuilder().setSessionId(id))
                      .build());
              blocking.forEach(stream::onNext);
            } catch (RuntimeException e) {
              LOG.debug("session {} stream gone before it opened: {}", id, e.toString());
            }
          };
        });
  }

  @Override
  public void closeSession(CloseSessionRequest req, StreamObserver<CloseSessionResponse> caller) {
    LeaderCore c = core(caller);
    if (c == null) {
      return;
    }
    c.submit(
        caller,
        (engine, fx) -> {
          int n = c.closeSession(req.getSessionId(), owner(req.getOwner()), engine, fx);
          return () ->
              LeaderCore.reply(
                  caller, CloseSessionResponse.newBuilder().setReleasedLocks(n).build());
        });
  }

  // ---------------------------------------------------------------- locks

  @Override
  public void acquire(AcquireRequest req, StreamObserver<LockReply> caller) {
    LeaderCore c = core(caller);
    if (c == null) {
      return;
    }
    ServerCallStreamObserver<LockReply> call = (ServerCallStreamObserver<LockReply>) caller;
    AtomicLong unheardGrant = new AtomicLong();
    AtomicReference<LeaderCore.Waiter> parked = onCancelWithdraw(c, call, unheardGrant);
    AcquireCommand[] cmd = new AcquireCommand[1];
    Duration[] timeout = new Duration[1];
    boolean ok =
        checked(
            caller,
            () -> {
              ResourceKey key =
                  new ResourceKey(
                      Names.check("lockspace", req.getLockspace()),
                      Names.check("resource", req.getResource()));
              cmd[0] =
                  new AcquireCommand(
                      req.getRequestId(),
                      owner(req.getOwner()),
                      req.getSessionId(),
                      key,
                      mode(req.getMode()),
                      req.getNoqueue(),
                      req.getPersistent(),
                      req.getNotifyBlocking());
              timeout[0] = timeout(req.getTimeout());
            });
    if (!ok) {
      return;
    }
    c.submit(
        caller,
        LeaderCore.Needs.lockspace(cmd[0].resource().lockspace(), cmd[0].owner().node()),
        (engine, fx) -> {
          c.checkSession(cmd[0].sessionId(), cmd[0].owner());
          LockResult r = engine.acquire(cmd[0], fx);
          return outcome(
              c, engine, fx, r, call, parked, unheardGrant, timeout[0], cmd[0].resource());
        });
  }

  @Override
  public void convert(ConvertRequest req, StreamObserver<LockReply> caller) {
    LeaderCore c = core(caller);
    if (c == null) {
      return;
    }
    ServerCallStreamObserver<LockReply> call = (ServerCallStreamObserver<LockReply>) caller;
    AtomicReference<LeaderCore.Waiter> parked = onCancelWithdraw(c, call, null);
    c.submit(
        caller,
        LeaderCore.Needs.lock(req.getLockId(), req.getOwner().getNode()),
        (engine, fx) -> {
          Owner o = owner(req.getOwner());
          LockMode m = mode(req.getMode());
          Duration t = timeout(req.getTimeout());
          byte[] lvb = req.hasValueBlock() ? req.getValueBlock().toByteArray() : null;
          LockResult r =
              engine.convert(o, req.getLockId(), m, req.getNoqueue(), lvb, req.getRequestId(), fx);
          return outcome(c, engine, fx, r, call, parked, null, t, r.lock().resource());
        });
  }

  /**
   * When the caller goes away (deadline, cancel, disconnect) while parked, withdraws its request;
   * while the answer to a new grant waits for its write ({@code unheardGrant}, acquires only),
   * gives the lock back. gRPC only lets the handler be set before the service method returns, so
   * what it acts on is filled in later by the engine thread.
   */
  private static AtomicReference<LeaderCore.Waiter> onCancelWithdraw(
      LeaderCore c, ServerCallStreamObserver<LockReply> call, AtomicLong unheardGrant) {
    AtomicReference<LeaderCore.Waiter> parked = new AtomicReference<>();
    call.setOnCancelHandler(
        () ->
            c.submit(
                null,
                // A parked waiter's or a new grant's lockspace is loaded; else nothing to do.
                LeaderCore.Needs.NODES,
                (e, fx) -> {
                  LeaderCore.Waiter w = parked.get();
                  if (w != null) {
                    return c.callerGone(w, e, fx);
                  }
                  long granted = unheardGrant == null ? 0 : unheardGrant.get();
                  if (granted != 0) {
                    c.grantUnheard(granted, e, fx);
                  }
                  return null;
                }));
    return parked;
  }

  /** Answers at once, or parks the caller until the grant (engine thread). */
  private Runnable outcome(
      LeaderCore c,
      LockEngine engine,
      Effects fx,
      LockResult r,
      ServerCallStreamObserver<LockReply> call,
      AtomicReference<LeaderCore.Waiter> parked,
      AtomicLong unheardGrant,
      Duration timeout,
      ResourceKey key) {
    boolean conversion = unheardGrant == null;
    switch (r.outcome()) {
      case GRANTED:
        Grant g = r.grant();
        long lockId = g.lock().lockId();
        if (call.isCancelled() && !conversion) {
          // The caller went away before the request ran (it may have waited for a new leader
          // to load its lockspace). Not if this call found the lock by its request id: an
          // earlier call of the same request may still wait to be told of it, or this may be a
          // stale attempt, arriving after a retry was told it holds the lock (a client that
          // never heard of the lock abandons it).
          if (!r.retry()) {
            LeaderCore.releaseUnclaimed(g.lock(), engine, fx);
          }
          return null;
        }
        if (conversion) {
          return () -> LeaderCore.reply(call, GrpcStatuses.lockReply(g));
        }
        if (r.retry()) {
          // A retry, told of a grant whose write may be on its way: the first call going away
          // now must not give the lock back.
          c.claim(lockId);
          return () -> LeaderCore.reply(call, GrpcStatuses.lockReply(g));
        }
        // A new grant, answered once its write is durable. A caller that goes away meanwhile
        // would never hear of it: its cancel task gives it back (LeaderCore.grantUnheard).
        unheardGrant.set(lockId);
        c.grantAwaitsAnswer(lockId);
        return () -> {
          if (call.isCancelled()) {
            return; // the cancel handler's task, submitted already, gives the lock back
          }
          c.grantHeard(lockId);
          LeaderCore.reply(call, GrpcStatuses.lockReply(g));
        };
      case WOULD_BLOCK:
        {
          Status s =
              GrpcStatuses.withOutcome(
                  Status.ABORTED.withDescription("would block: " + key + " is " + c.holders(key)),
                  Outcome.WOULD_BLOCK);
          return () -> LeaderCore.fail(call, s);
        }
      case DEADLOCK:
        {
          Status s =
              GrpcStatuses.withOutcome(
                  Status.ABORTED.withDescription(
                      "conversion deadlock on "
                          + key
                          + ": another holder is converting to a mode this lock blocks"
                          + " while this lock's conversion is blocked by it; the lock keeps "
                          + r.lock().grantedMode()),
                  Outcome.DEADLOCK);
          return () -> LeaderCore.fail(call, s);
        }
      case QUEUED:
        LeaderCore.Waiter w = new LeaderCore.Waiter(call, r.lock().lockId(), timeout, conversion);
        c.park(w, fx);
        parked.set(w);
        if (call.isCancelled()) {
          // Cancelled before it was parked: the cancel task has run and found nothing.
          return c.callerGone(w, engine, fx);
        }
        return null;
      default:
        throw new IllegalStateException(r.outcome().name());
    }
  }

  @Override
  public void release(ReleaseRequest req, StreamObserver<ReleaseResponse> caller) {
    LeaderCore c = core(caller);
    if (c == null) {
      return;
    }
    c.submit(
        caller,
        LeaderCore.Needs.lock(req.getLockId(), req.getOwner().getNode()),
        req.getDeferrable(),
        (engine, fx) -> {
          byte[] lvb = req.hasValueBlock() ? req.getValueBlock().toByteArray() : null;
          engine.release(owner(req.getOwner()), req.getLockId(), lvb, fx);
          return () -> LeaderCore.reply(caller, ReleaseResponse.getDefaultInstance());
        });
  }

  @Override
  public void abandon(AbandonRequest req, StreamObserver<AbandonResponse> caller) {
    LeaderCore c = core(caller);
    if (c == null) {
      return;
    }
    String lockspace = req.getLockspace();
    if (!checked(caller, () -> Names.check("lockspace", lockspace))) {
      return;
    }
    if (req.getLockId() != 0) {
      abandonConversion(c, req, caller);
      return;
    }
    c.submit(
        caller,
        LeaderCore.Needs.lockspace(lockspace, req.getOwner().getNode()),
        (engine, fx) -> {
          Owner o = owner(req.getOwner());
          Optional<QueueState> found = engine.abandon(o, req.getRequestId(), fx);
          found.ifPresent(
              s ->
                  LOG.info(
                      "[node={}] request {} in {} was abandoned by its caller; {}",
                      o.node(),
                      req.getRequestId(),
                      lockspace,
                      switch (s) {
                        case WAITING -> "withdrew it";
                        case GRANTED -> "released the lock granted for it";
                        case CONVERTING -> "its lock is converting, left alone";
                      }));
          AbandonResponse r =
              AbandonResponse.newBuilder()
                  .setFound(found.map(Records::state).orElse(LockState.LOCK_STATE_UNSPECIFIED))
                  .build();
          return () -> LeaderCore.reply(caller, r);
        });
  }

  private void abandonConversion(
      LeaderCore c, AbandonRequest req, StreamObserver<AbandonResponse> caller) {
    c.submit(
        caller,
        LeaderCore.Needs.lock(req.getLockId(), req.getOwner().getNode()),
        (engine, fx) -> {
          Owner o = owner(req.getOwner());
          Optional<LockEngine.AbandonedConversion> found =
              engine.abandonConversion(o, req.getLockId(), req.getRequestId(), fx);
          AbandonResponse.Builder r = AbandonResponse.newBuilder();
          found.ifPresent(
              a -> {
                r.setFound(Records.state(a.state())).setMode(Records.mode(a.mode()));
                r.setReverted(a.reverted());
                LOG.info(
                    "[node={}] conversion {} of lock {} was abandoned by its caller; {}",
                    o.node(),
                    req.getRequestId(),
                    req.getLockId(),
                    a.reverted()
                        ? "undone: the lock holds " + a.mode()
                        : "the lock holds " + a.mode());
              });
          return () -> LeaderCore.reply(caller, r.build());
        });
  }

  @Override
  public StreamObserver<LockCalls> lockStream(StreamObserver<LockCallResults> answers) {
    LockStreamHandler[] h = new LockStreamHandler[1];
    h[0] =
        new LockStreamHandler(
            this,
            (ServerCallStreamObserver<LockCallResults>) answers,
            () -> lockStreams.remove(h[0]));
    lockStreams.add(h[0]);
    return h[0];
  }

  @Override
  public void cancel(CancelRequest req, StreamObserver<CancelResponse> caller) {
    LeaderCore c = core(caller);
    if (c == null) {
      return;
    }
    c.submit(
        caller,
        LeaderCore.Needs.lock(req.getLockId(), req.getOwner().getNode()),
        (engine, fx) -> {
          Owner o = owner(req.getOwner());
          engine.requireMember(o);
          if (!engine.cancel(o, req.getLockId(), fx)) {
            throw new DlmException(
                DlmException.Code.FAILED_PRECONDITION,
                "lock " + req.getLockId() + " is granted; there is no request to cancel");
          }
          return () -> LeaderCore.reply(caller, CancelResponse.getDefaultInstance());
        });
  }

  @Override
  public void readValueBlock(ReadValueBlockRequest req, StreamObserver<ValueBlockReply> caller) {
    LeaderCore c = core(caller);
    if (c == null) {
      return;
    }
    c.submit(
        caller,
        LeaderCore.Needs.lock(req.getLockId(), req.getOwner().getNode()),
        (engine, fx) -> {
          Grant g = engine.readValueBlock(owner(req.getOwner()), req.getLockId());
          ValueBlockReply reply =
              ValueBlockReply.newBuilder()
                  .setValueBlock(ByteString.copyFrom(g.valueBlock()))
                  .setValid(g.valueBlockValid())
                  .build();
          return () -> LeaderCore.reply(caller, reply);
        });
  }

  @Override
  public void writeValueBlock(WriteValueBlockRequest req, StreamObserver<ValueBlockReply> caller) {
    LeaderCore c = core(caller);
    if (c == null) {
      return;
    }
    c.submit(
        caller,
        LeaderCore.Needs.lock(req.getLockId(), req.getOwner().getNode()),
        (engine, fx) -> {
          byte[] lvb = req.getValueBlock().toByteArray();
          engine.writeValueBlock(owner(req.getOwner()), req.getLockId(), lvb, fx);
          ValueBlockReply reply =
              ValueBlockReply.newBuilder()
                  .setValueBlock(req.getValueBlock())
                  .setValid(true)
                  .build();
          return () -> LeaderCore.reply(caller, reply);
        });
  }

  // ---------------------------------------------------------------- listings

  @Override
  public void listLockspaces(
      ListLockspacesRequest req, StreamObserver<ListLockspacesResponse> caller) {
    LeaderCore c = core(caller);
    if (c == null) {
      return;
    }
    c.submit(
        caller,
        (engine, fx) -> {
          ListLockspacesResponse.Builder b = ListLockspacesResponse.newBuilder();
          for (LockspaceView v : engine.lockspaces()) {
            b.addLockspaces(
                LockspaceInfo.newBuilder()
                    .setName(v.name())
                    .setResources(v.resources())
                    .setGranted(v.granted())
                    .setConverting(v.converting())
                    .setWaiting(v.waiting()));
          }
          ListLockspacesResponse reply = b.build();
          return () -> LeaderCore.reply(caller, reply);
        });
  }

  @Override
  public void listLocks(ListLocksRequest req, StreamObserver<ListLocksResponse> caller) {
    LeaderCore c = core(caller);
    if (c == null) {
      return;
    }
    ListingQuery q;
    try {
      q = ListingQuery.of(req);
    } catch (DlmException e) {
      LeaderCore.fail(caller, GrpcStatuses.of(e));
      return;
    }
    c.submit(
        caller,
        (engine, fx) -> {
          // Only for the first page: a lockspace that emptied during a listing just ends it.
          if (q.lockspace() != null && q.after() == null && !engine.hasLockspace(q.lockspace())) {
            throw new DlmException(
                DlmException.Code.NOT_FOUND,
                "no lockspace named " + q.lockspace() + " (a lockspace exists while it has locks)");
          }
          LockEngine.ResourcePage page =
              engine.resourcesAfter(
                  q.after(), q.lockspace(), q.node(), q.incarnation(), q.limits());
          ListLocksResponse.Builder b = ListLocksResponse.newBuilder();
          for (ResourceView r : page.resources()) {
            ResourceInfo.Builder rb =
                ResourceInfo.newBuilder()
                    .setLockspace(r.key().lockspace())
                    .setResource(r.key().resource())
                    .setValueBlockSize(r.valueBlock().length)
                    .setValueBlockValid(r.valueBlockValid());
            r.granted().forEach(l -> rb.addGranted(info(l)));
            r.converting().forEach(l -> rb.addConverting(info(l)));
            r.waiting().forEach(l -> rb.addWaiting(info(l)));
            b.addResources(rb);
          }
          if (page.resumeAfter() != null) {
            b.setNextPageToken(PageToken.after(page.resumeAfter()));
          }
          ListLocksResponse reply = b.build();
          return () -> LeaderCore.reply(caller, reply);
        });
  }

  private static LockInfo info(LockView l) {
    return LockInfo.newBuilder()
        .setLockId(l.lockId())
        .setOwner(GrpcStatuses.owner(l.owner()))
        .setSessionId(l.sessionId())
        .setState(Records.state(l.state()))
        .setGrantedMode(Records.mode(l.grantedMode()))
        .setRequestedMode(Records.mode(l.requestedMode()))
        .setFencingToken(l.fencingToken())
        .setPersistent(l.persistent())
        .setSinceEpochMillis(l.sinceMillis())
        .build();
  }

  @Override
  public void listNodes(ListNodesRequest req, StreamObserver<ListNodesResponse> caller) {
    LeaderCore c = core(caller);
    if (c == null) {
      return;
    }
    c.submit(
        caller,
        (engine, fx) -> {
          ListNodesResponse.Builder b = ListNodesResponse.newBuilder();
          List<NodeView> nodes = engine.nodes();
          for (NodeView n : nodes) {
            b.addNodes(
                NodeInfo.newBuilder()
                    .setNode(n.node())
                    .setIncarnation(n.incarnation())
                    .setState(Records.nodeState(n.state()))
                    .setBootId(n.bootId() == null ? "" : n.bootId())
                    .setSinceEpochMillis(n.sinceMillis())
                    .setLocks(engine.lockCount(n.node())));
          }
          ListNodesResponse reply = b.build();
          return () -> LeaderCore.reply(caller, reply);
        });
  }

  @Override
  public void serverStatus(ServerStatusRequest req, StreamObserver<ServerStatusResponse> caller) {
    info.freshLeaderId()
        .whenComplete(
            (leaderId, lookupFailed) -> {
              LeaderCore c = leader.get();
              ServerStatusResponse.Builder b =
                  ServerStatusResponse.newBuilder()
                      .setServerId(info.serverId())
                      .setLeader(c != null)
                      .setLeaderId(leaderId == null ? "" : leaderId)
                      .setZookeeper(info.zookeeper());
              if (c != null) {
                b.setEpoch(c.epoch())
                    .setLocks(c.lockCount())
                    .setResources(c.resourceCount())
                    .setTableLoading(c.tableLoading())
                    .addAllUnreadableLockspaces(c.unreadableLockspaces());
              }
              LeaderCore.reply(caller, b.build());
            });
  }
}
