package io.clusterlvm.dlm.server;

import io.clusterlvm.fence.config.ClusterConfig;
import io.clusterlvm.fence.config.ClusterConfigException;
import io.clusterlvm.fence.config.ConfigProblem;
import io.clusterlvm.fence.domain.FenceStore;
import io.clusterlvm.fence.domain.StaleConfigException;
import io.clusterlvm.fence.proto.AcknowledgeRequest;
import io.clusterlvm.fence.proto.AcknowledgeResponse;
import io.clusterlvm.fence.proto.ActivateConfigRequest;
import io.clusterlvm.fence.proto.ActivateConfigResponse;
import io.clusterlvm.fence.proto.ConfigRecord;
import io.clusterlvm.fence.proto.FenceDomainGrpc;
import io.clusterlvm.fence.proto.FenceNodeInfo;
import io.clusterlvm.fence.proto.FenceNodeRecord;
import io.clusterlvm.fence.proto.FenceRequest;
import io.clusterlvm.fence.proto.FenceResponse;
import io.clusterlvm.fence.proto.GetConfigRequest;
import io.clusterlvm.fence.proto.HistoryRequest;
import io.clusterlvm.fence.proto.HistoryResponse;
import io.clusterlvm.fence.proto.ListFenceNodesRequest;
import io.clusterlvm.fence.proto.ListFenceNodesResponse;
import io.clusterlvm.fence.proto.MembershipRequest;
import io.grpc.Status;
import io.grpc.stub.StreamObserver;
import java.util.List;
import java.util.concurrent.Executor;
import java.util.concurrent.RejectedExecutionException;
import org.apache.zookeeper.KeeperException;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * Serves the fence domain's records to dlmctl. It holds no state: the records live in ZooKeeper and
 * every change is a compare-and-set there, so any dlm-server (leader or not) can serve it, and the
 * elected fencer among the agents acts on what it writes.
 */
final class FenceDomainGrpcService extends FenceDomainGrpc.FenceDomainImplBase {
  private static final Logger LOG = LoggerFactory.getLogger(FenceDomainGrpcService.class);

  private final FenceStore store;
  private final Executor calls;

  /**
   * @param calls runs the calls, which block on ZooKeeper (the server's transport threads must not)
   */
  FenceDomainGrpcService(FenceStore store, Executor calls) {
    this.store = store;
    this.calls = calls;
  }

  @FunctionalInterface
  private interface Body<T> {
    T run() throws Exception;
  }

  /**
   * Answers a read: runs it on {@link #calls} and maps failures to statuses an operator can act on.
   */
  private <T> void serve(StreamObserver<T> caller, Body<T> body) {
    serve(caller, false, body);
  }

  /**
   * Answers a change: a ZooKeeper failure is UNKNOWN, not UNAVAILABLE, since the change may have
   * been made (a connection lost after the write); a client would take UNAVAILABLE for "not done"
   * and ask the next server, which then refuses it for a confusing reason.
   */
  private <T> void change(StreamObserver<T> caller, Body<T> body) {
    serve(caller, true, body);
  }

  private <T> void serve(StreamObserver<T> caller, boolean change, Body<T> body) {
    try {
      calls.execute(() -> answer(caller, change, body));
    } catch (RejectedExecutionException e) {
      LeaderCore.fail(caller, Status.UNAVAILABLE.withDescription("dlm-server is shutting down"));
    }
  }

  private static <T> void answer(StreamObserver<T> caller, boolean change, Body<T> body) {
    T reply;
    try {
      reply = body.run();
    } catch (IllegalArgumentException e) {
      LeaderCore.fail(caller, Status.NOT_FOUND.withDescription(e.getMessage()));
      return;
    } catch (IllegalStateException | StaleConfigException e) {
      LeaderCore.fail(caller, Status.FAILED_PRECONDITION.withDescription(e.getMessage()));
      return;
    } catch (ClusterConfigException e) {
      LeaderCore.fail(caller, Status.INVALID_ARGUMENT.withDescription(e.getMessage()));
      return;
    } catch (com.google.protobuf.InvalidProtocolBufferException e) {
      // Written by hand or by a newer version: say so, not that ZooKeeper is down.
      LOG.error("fence domain call failed: a record in ZooKeeper does not parse", e);
      LeaderCore.fail(
          caller,
          Status.DATA_LOSS.withDescription(
              "a fence domain record in ZooKeeper does not parse: " + e));
      return;
    } catch (KeeperException | InterruptedException e) {
      if (e instanceof InterruptedException) {
        Thread.currentThread().interrupt();
      }
      LOG.warn("fence domain call failed: {}", e.toString());
      LeaderCore.fail(
          caller,
          change
              ? Status.UNKNOWN.withDescription(
                  "ZooKeeper failed during the change, which may or may not have been made;"
                      + " look with 'dlmctl nodes' before asking again: "
                      + e)
              : Status.UNAVAILABLE.withDescription("ZooKeeper is not reachable: " + e));
      return;
    } catch (Exception e) {
      // A bug: the operator should not be sent to check ZooKeeper.
      LOG.error("fence domain call failed", e);
      LeaderCore.fail(caller, Status.INTERNAL.withDescription("dlm-server failed: " + e));
      return;
    }
    LeaderCore.reply(caller, reply);
  }

  private static ClusterConfig parsedOrNull(ConfigRecord active) {
    try {
      return ClusterConfig.parsePublished(active.getXml());
    } catch (ClusterConfigException e) {
      return null;
    }
  }

  @Override
  public void listNodes(ListFenceNodesRequest req, StreamObserver<ListFenceNodesResponse> caller) {
    serve(
        caller,
        () -> {
          ConfigRecord active = store.activeConfig().orElse(null);
          ClusterConfig config = active == null ? null : parsedOrNull(active);
          // A lease that does not parse is held all the same: its holder's session lives.
          FenceStore.Leases leases = store.leases();
          ListFenceNodesResponse.Builder b = ListFenceNodesResponse.newBuilder();
          java.util.Set<String> seen = new java.util.TreeSet<>();
          for (String n : store.nodeNames()) {
            seen.add(n);
            try {
              var v = store.nodeRecord(n);
              if (v.isPresent()) {
                b.addNodes(info(v.get().value(), leases, config));
              }
            } catch (com.google.protobuf.InvalidProtocolBufferException e) {
              // One record nobody can read must not hide the others from an operator.
              b.addNodes(
                  info(FenceNodeRecord.newBuilder().setNode(n).build(), leases, config).toBuilder()
                      .setRecordError("its fence record does not parse: " + e.getMessage()));
            }
          }
          // Nodes in cluster.conf that never joined are part of the picture too.
          if (config != null) {
            for (var n : config.nodes()) {
              if (!seen.contains(n.name())) {
                b.addNodes(
                    info(FenceNodeRecord.newBuilder().setNode(n.name()).build(), leases, config));
              }
            }
          }
          if (active != null) {
            b.setConfigVersion(active.getConfigVersion());
          }
          b.setFencer(fencer());
          return b.build();
        });
  }

  private String fencer() {
    try {
      List<String> children = store.curator().getChildren().forPath(store.fencerPath());
      children.sort(java.util.Comparator.comparing(c -> c.substring(c.lastIndexOf('-') + 1)));
      if (children.isEmpty()) {
        return "";
      }
      return new String(
          store.curator().getData().forPath(store.fencerPath() + "/" + children.get(0)),
          java.nio.charset.StandardCharsets.UTF_8);
    } catch (Exception e) {
      return "";
    }
  }

  private static FenceNodeInfo info(
      FenceNodeRecord r, FenceStore.Leases leases, ClusterConfig config) {
    var node =
        config == null
            ? java.util.Optional.<io.clusterlvm.fence.config.ClusterNode>empty()
            : config.node(r.getNode());
    return FenceNodeInfo.newBuilder()
        .setRecord(r)
        .setLeaseHeld(leases.held(r.getNode()))
        .setInConfig(node.isPresent())
        .setHasFenceMethod(
            node.map(io.clusterlvm.fence.config.ClusterNode::hasFenceMethod).orElse(false))
        .build();
  }

  @Override
  public void acknowledge(AcknowledgeRequest req, StreamObserver<AcknowledgeResponse> caller) {
    change(
        caller,
        () -> {
          FenceNodeRecord r =
              store.acknowledge(
                  req.getNode(), req.getIncarnation(), operator(req.getOperator()), req.getForce());
          LOG.warn(
              "[node={}] manual fence acknowledgement of incarnation {} by {}{}: the node counts"
                  + " as FENCED",
              req.getNode(),
              r.getIncarnation(),
              operator(req.getOperator()),
              req.getForce() ? " (forced, whatever its lease)" : "");
          return AcknowledgeResponse.newBuilder().setRecord(r).build();
        });
  }

  @Override
  public void fence(FenceRequest req, StreamObserver<FenceResponse> caller) {
    change(
        caller,
        () -> {
          FenceNodeRecord r = store.requestFence(req.getNode(), operator(req.getOperator()));
          LOG.warn("[node={}] fence requested by {}", req.getNode(), operator(req.getOperator()));
          return FenceResponse.newBuilder().setRecord(r).build();
        });
  }

  @Override
  public void requestLeave(MembershipRequest req, StreamObserver<FenceResponse> caller) {
    change(
        caller,
        () ->
            FenceResponse.newBuilder()
                .setRecord(
                    store.requestMembership(req.getNode(), true, operator(req.getOperator())))
                .build());
  }

  @Override
  public void requestJoin(MembershipRequest req, StreamObserver<FenceResponse> caller) {
    change(
        caller,
        () ->
            FenceResponse.newBuilder()
                .setRecord(
                    store.requestMembership(req.getNode(), false, operator(req.getOperator())))
                .build());
  }

  @Override
  public void history(HistoryRequest req, StreamObserver<HistoryResponse> caller) {
    serve(
        caller,
        () ->
            HistoryResponse.newBuilder()
                .addAllEvents(
                    store.history(
                        req.getNode().isEmpty() ? null : req.getNode(),
                        req.getLimit() == 0 ? 100 : req.getLimit()))
                .build());
  }

  @Override
  public void getConfig(GetConfigRequest req, StreamObserver<ConfigRecord> caller) {
    serve(
        caller,
        () ->
            store
                .activeConfig()
                .orElseThrow(
                    () -> new IllegalArgumentException("no cluster.conf has been activated yet")));
  }

  @Override
  public void activateConfig(
      ActivateConfigRequest req, StreamObserver<ActivateConfigResponse> caller) {
    change(
        caller,
        () -> {
          List<ConfigProblem> warnings = store.activate(req.getXml(), operator(req.getOperator()));
          ConfigRecord now = store.activeConfig().orElseThrow();
          LOG.info(
              "cluster.conf config_version {} activated by {}",
              now.getConfigVersion(),
              operator(req.getOperator()));
          return ActivateConfigResponse.newBuilder()
              .setConfigVersion(now.getConfigVersion())
              .addAllWarnings(warnings.stream().map(ConfigProblem::toString).toList())
              .build();
        });
  }

  private static String operator(String given) {
    return given == null || given.isEmpty() ? "(unnamed operator)" : given;
  }
}
