package io.clusterlvm.clvm.rpc;

import io.clusterlvm.clvm.exec.ClusterRefusalException;
import io.clusterlvm.clvm.proto.Refusal;
import io.clusterlvm.clvm.proto.RefusalDetail;
import io.grpc.Metadata;
import io.grpc.Status;
import io.grpc.StatusRuntimeException;
import io.grpc.protobuf.ProtoUtils;

/**
 * How a {@link ClusterRefusalException} travels: a specific gRPC status with the operator's message
 * as its description, and a {@link RefusalDetail} in the trailers for clients that act on the kind
 * of refusal (the clvm wrapper's exit codes).
 */
public final class Refusals {

  /** Trailer key of the {@link RefusalDetail}. */
  public static final Metadata.Key<RefusalDetail> DETAIL =
      ProtoUtils.keyForProto(RefusalDetail.getDefaultInstance());

  private Refusals() {}

  static StatusRuntimeException toStatus(ClusterRefusalException e) {
    Status status = statusOf(e.reason()).withDescription(e.getMessage());
    RefusalDetail.Builder d =
        RefusalDetail.newBuilder()
            .setReason(refusalOf(e.reason()))
            .setMessage(e.getMessage())
            .setLvmStarted(e.lvmStarted());
    if (e.lock() != null) {
      d.setLock(e.lock());
    }
    if (e.holder() != null) {
      d.setHolder(e.holder());
    }
    Metadata trailers = new Metadata();
    trailers.put(DETAIL, d.build());
    return status.asRuntimeException(trailers);
  }

  static Status statusOf(ClusterRefusalException.Reason reason) {
    return switch (reason) {
      case NOT_MEMBER, LOCK_HELD_ELSEWHERE -> Status.FAILED_PRECONDITION;
      case SUSPENDED, LOCK_SERVICE_UNAVAILABLE -> Status.UNAVAILABLE;
      case LOCK_TIMEOUT -> Status.DEADLINE_EXCEEDED;
      case LEASE_LOST_IN_FLIGHT, STALE_FENCING_TOKEN -> Status.ABORTED;
      case UNSUPPORTED_COMMAND -> Status.INVALID_ARGUMENT;
      case LVM_FAILED -> Status.INTERNAL;
      case CANCELLED -> Status.CANCELLED;
    };
  }

  static Refusal refusalOf(ClusterRefusalException.Reason reason) {
    return switch (reason) {
      case NOT_MEMBER -> Refusal.NOT_MEMBER;
      case SUSPENDED -> Refusal.SUSPENDED;
      case LOCK_TIMEOUT -> Refusal.LOCK_TIMEOUT;
      case LOCK_HELD_ELSEWHERE -> Refusal.LOCK_HELD_ELSEWHERE;
      case LEASE_LOST_IN_FLIGHT -> Refusal.LEASE_LOST_IN_FLIGHT;
      case UNSUPPORTED_COMMAND -> Refusal.UNSUPPORTED_COMMAND;
      case STALE_FENCING_TOKEN -> Refusal.STALE_FENCING_TOKEN;
      case LOCK_SERVICE_UNAVAILABLE -> Refusal.LOCK_SERVICE_UNAVAILABLE;
      case LVM_FAILED -> Refusal.LVM_FAILED;
      case CANCELLED -> Refusal.CANCELLED;
    };
  }

  /** The detail of a failed call, or null if the failure carried none (e.g. agent unreachable). */
  public static RefusalDetail detailOf(Throwable t) {
    Metadata trailers = Status.trailersFromThrowable(t);
    return trailers == null ? null : trailers.get(DETAIL);
  }
}
