package io.clusterlvm.dlm.server;

import com.google.protobuf.ByteString;
import io.clusterlvm.dlm.engine.LockMode;
import io.clusterlvm.dlm.engine.LockView;
import io.clusterlvm.dlm.engine.NodeState;
import io.clusterlvm.dlm.engine.NodeView;
import io.clusterlvm.dlm.engine.Owner;
import io.clusterlvm.dlm.engine.QueueState;
import io.clusterlvm.dlm.engine.ResourceKey;
import io.clusterlvm.dlm.engine.ResourceView;
import io.clusterlvm.dlm.proto.LockState;
import io.clusterlvm.dlm.proto.Mode;
import io.clusterlvm.dlm.store.LockRecord;
import io.clusterlvm.dlm.store.NodeRecord;
import io.clusterlvm.dlm.store.ResourceRecord;
import java.util.ArrayList;
import java.util.List;

/** Conversions between engine values and their protobuf forms (wire and store). */
final class Records {
  private Records() {}

  static Mode mode(LockMode m) {
    return m == null ? Mode.MODE_UNSPECIFIED : Mode.forNumber(m.ordinal() + 1);
  }

  /** Null for MODE_UNSPECIFIED or an unknown number. */
  static LockMode mode(Mode m) {
    if (m == Mode.UNRECOGNIZED) {
      return null;
    }
    int n = m.getNumber();
    return n >= 1 && n <= 6 ? LockMode.values()[n - 1] : null;
  }

  static LockState state(QueueState s) {
    return switch (s) {
      case GRANTED -> LockState.STATE_GRANTED;
      case CONVERTING -> LockState.STATE_CONVERTING;
      case WAITING -> LockState.STATE_WAITING;
    };
  }

  static QueueState state(LockState s) {
    return switch (s) {
      case STATE_GRANTED -> QueueState.GRANTED;
      case STATE_CONVERTING -> QueueState.CONVERTING;
      case STATE_WAITING -> QueueState.WAITING;
      default -> throw new IllegalArgumentException("bad lock state in store: " + s);
    };
  }

  static io.clusterlvm.dlm.proto.NodeState nodeState(NodeState s) {
    return s == NodeState.MEMBER
        ? io.clusterlvm.dlm.proto.NodeState.NODE_MEMBER
        : io.clusterlvm.dlm.proto.NodeState.NODE_LEFT;
  }

  static NodeRecord toRecord(NodeView n) {
    return NodeRecord.newBuilder()
        .setNode(n.node())
        .setIncarnation(n.incarnation())
        .setState(nodeState(n.state()))
        .setBootId(n.bootId() == null ? "" : n.bootId())
        .setSinceEpochMillis(n.sinceMillis())
        .setReleasedLocks(n.releasedLocks())
        .build();
  }

  static NodeView fromRecord(NodeRecord r) {
    return new NodeView(
        r.getNode(),
        r.getIncarnation(),
        r.getState() == io.clusterlvm.dlm.proto.NodeState.NODE_MEMBER
            ? NodeState.MEMBER
            : NodeState.LEFT,
        r.getBootId(),
        r.getSinceEpochMillis(),
        r.getReleasedLocks());
  }

  static ResourceRecord toRecord(ResourceView r) {
    ResourceRecord.Builder b =
        ResourceRecord.newBuilder()
            .setLockspace(r.key().lockspace())
            .setResource(r.key().resource())
            .setValueBlock(ByteString.copyFrom(r.valueBlock()))
            .setValueBlockValid(r.valueBlockValid());
    for (List<LockView> q : List.of(r.granted(), r.converting(), r.waiting())) {
      for (LockView l : q) {
        LockRecord.Builder lb =
            b.addLocksBuilder()
                .setLockId(l.lockId())
                .setNode(l.owner().node())
                .setIncarnation(l.owner().incarnation())
                .setSessionId(l.sessionId())
                .setState(state(l.state()))
                .setGrantedMode(mode(l.grantedMode()))
                .setRequestedMode(mode(l.requestedMode()))
                .setFencingToken(l.fencingToken())
                .setPersistent(l.persistent())
                .setNotifyBlocking(l.notifyBlocking())
                .setQueueSeq(l.queueSeq())
                .setRequestId(l.requestId())
                .setSinceEpochMillis(l.sinceMillis());
        if (l.lastConversion() != null) {
          lb.setConversionRequestId(l.lastConversion().requestId())
              .setModeBeforeConversion(mode(l.lastConversion().before()));
        }
      }
    }
    return b.build();
  }

  static ResourceView fromRecord(ResourceRecord r) {
    ResourceKey key = new ResourceKey(r.getLockspace(), r.getResource());
    List<LockView> granted = new ArrayList<>();
    List<LockView> converting = new ArrayList<>();
    List<LockView> waiting = new ArrayList<>();
    for (LockRecord l : r.getLocksList()) {
      LockView v =
          new LockView(
              l.getLockId(),
              key,
              new Owner(l.getNode(), l.getIncarnation()),
              l.getSessionId(),
              state(l.getState()),
              mode(l.getGrantedMode()),
              mode(l.getRequestedMode()),
              l.getFencingToken(),
              l.getPersistent(),
              l.getNotifyBlocking(),
              l.getQueueSeq(),
              l.getRequestId(),
              l.getSinceEpochMillis(),
              l.getConversionRequestId().isEmpty()
                  ? null
                  : new LockView.Conversion(
                      l.getConversionRequestId(), mode(l.getModeBeforeConversion())));
      switch (v.state()) {
        case GRANTED -> granted.add(v);
        case CONVERTING -> converting.add(v);
        case WAITING -> waiting.add(v);
      }
    }
    return new ResourceView(
        key, r.getValueBlock().toByteArray(), r.getValueBlockValid(), granted, converting, waiting);
  }
}
