package io.clusterlvm.dlm.server;

import com.google.protobuf.ByteString;
import io.clusterlvm.dlm.engine.BlockingEvent;
import io.clusterlvm.dlm.engine.DlmException;
import io.clusterlvm.dlm.engine.Grant;
import io.clusterlvm.dlm.engine.LockView;
import io.clusterlvm.dlm.engine.Owner;
import io.clusterlvm.dlm.proto.BlockingNotification;
import io.clusterlvm.dlm.proto.LockReply;
import io.clusterlvm.dlm.proto.Outcome;
import io.clusterlvm.dlm.proto.SessionEvent;
import io.grpc.Metadata;
import io.grpc.Status;
import java.time.Duration;

/** Maps engine results and refusals onto gRPC replies and statuses. */
final class GrpcStatuses {
  /** Trailer that tells a client why a lock request was not granted (WOULD_BLOCK, ...). */
  static final Metadata.Key<String> OUTCOME =
      Metadata.Key.of("dlm-outcome", Metadata.ASCII_STRING_MARSHALLER);

  /** Carries an {@link Outcome} on a Status server-side until the trailers are built. */
  private static final class OutcomeMarker extends RuntimeException {
    final Outcome outcome;

    OutcomeMarker(Outcome outcome) {
      super(outcome.name(), null, false, false);
      this.outcome = outcome;
    }
  }

  private GrpcStatuses() {}

  static Status of(DlmException e) {
    Status s =
        switch (e.code()) {
          case INVALID_ARGUMENT -> Status.INVALID_ARGUMENT;
          case NOT_FOUND -> Status.NOT_FOUND;
          case PERMISSION_DENIED -> Status.PERMISSION_DENIED;
          case FAILED_PRECONDITION -> Status.FAILED_PRECONDITION;
          case RESOURCE_EXHAUSTED -> Status.RESOURCE_EXHAUSTED;
        };
    return s.withDescription(e.getMessage());
  }

  static Status withOutcome(Status status, Outcome outcome) {
    return status.withCause(new OutcomeMarker(outcome));
  }

  static Metadata trailers(Status status) {
    Metadata md = new Metadata();
    if (status.getCause() instanceof OutcomeMarker m) {
      md.put(OUTCOME, m.outcome.name());
    }
    return md;
  }

  static io.clusterlvm.dlm.proto.Owner owner(Owner o) {
    return io.clusterlvm.dlm.proto.Owner.newBuilder()
        .setNode(o.node())
        .setIncarnation(o.incarnation())
        .build();
  }

  static LockReply lockReply(Grant g) {
    LockView l = g.lock();
    return LockReply.newBuilder()
        .setLockId(l.lockId())
        .setMode(Records.mode(l.grantedMode()))
        .setFencingToken(l.fencingToken())
        .setValueBlock(ByteString.copyFrom(g.valueBlock()))
        .setValueBlockValid(g.valueBlockValid())
        .setLockspace(l.resource().lockspace())
        .setResource(l.resource().resource())
        .build();
  }

  static SessionEvent blockingEvent(BlockingEvent b) {
    if (!b.holder().notifyBlocking()) {
      return SessionEvent.newBuilder()
          .setBlocking(
              BlockingNotification.newBuilder().setLockId(b.holder().lockId()).setHintOnly(true))
          .build();
    }
    return SessionEvent.newBuilder()
        .setBlocking(
            BlockingNotification.newBuilder()
                .setLockId(b.holder().lockId())
                .setLockspace(b.holder().resource().lockspace())
                .setResource(b.holder().resource().resource())
                .setHeldMode(Records.mode(b.holder().grantedMode()))
                .setBlockedMode(Records.mode(b.blocked().requestedMode()))
                .setBlockedOwner(owner(b.blocked().owner())))
        .build();
  }

  /** "10s", "1.5s", "250ms": how a duration reads in a message. */
  static String format(Duration d) {
    long ms = d.toMillis();
    if (ms % 1000 == 0) {
      return (ms / 1000) + "s";
    }
    return ms < 1000 ? ms + "ms" : String.format("%.1fs", ms / 1000.0);
  }
}
