package io.clusterlvm.clvm.rpc;

import com.google.common.util.concurrent.MoreExecutors;
import com.google.protobuf.ByteString;
import io.clusterlvm.clvm.exec.Cancellation;
import io.clusterlvm.clvm.exec.ClusterRefusalException;
import io.clusterlvm.clvm.exec.CommandExecutor;
import io.clusterlvm.clvm.exec.CommandResult;
import io.clusterlvm.clvm.exec.LockUse;
import io.clusterlvm.clvm.lvm.LogicalVolumeInfo;
import io.clusterlvm.clvm.lvm.LvmResult;
import io.clusterlvm.clvm.lvm.VolumeGroupInfo;
import io.clusterlvm.clvm.proto.Activation;
import io.clusterlvm.clvm.proto.ClvmGrpc;
import io.clusterlvm.clvm.proto.CommandInFlight;
import io.clusterlvm.clvm.proto.HeldLock;
import io.clusterlvm.clvm.proto.HostStatusRequest;
import io.clusterlvm.clvm.proto.HostStatusResponse;
import io.clusterlvm.clvm.proto.ListVolumesRequest;
import io.clusterlvm.clvm.proto.ListVolumesResponse;
import io.clusterlvm.clvm.proto.LogicalVolume;
import io.clusterlvm.clvm.proto.RunCommandRequest;
import io.clusterlvm.clvm.proto.RunCommandResponse;
import io.clusterlvm.clvm.proto.VolumeGroup;
import io.clusterlvm.dlm.client.DlmClient;
import io.clusterlvm.dlm.client.DlmClientException;
import io.clusterlvm.dlm.proto.LockInfo;
import io.clusterlvm.dlm.proto.ResourceInfo;
import io.grpc.Context;
import io.grpc.Status;
import io.grpc.stub.StreamObserver;
import java.time.Duration;
import java.util.List;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.RejectedExecutionException;
import java.util.stream.Collectors;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * The clvm API over gRPC: a thin shell over {@link CommandExecutor}. Commands run on the agent's
 * command threads (which a lost lease may interrupt), never on gRPC's. A client that goes away
 * withdraws a command still waiting for its locks, but does not stop one whose lvm has started:
 * half an lvm run is worse than a result nobody reads.
 */
public final class ClvmService extends ClvmGrpc.ClvmImplBase {

  private static final Logger LOG = LoggerFactory.getLogger(ClvmService.class);

  /**
   * How long {@code clvm --status} waits for the lock service's list of this host's locks, with no
   * retry: an operator runs it when something is wrong, often when the lock service is out of
   * reach, and must get the rest of the status at once rather than after the client's retries.
   */
  private static final Duration HELD_LOCKS_DEADLINE = Duration.ofSeconds(2);

  private final CommandExecutor executor;
  private final DlmClient dlm;
  private final ExecutorService commands;

  /**
   * @param dlm asked which locks this node holds, for {@code HostStatus}
   * @param commands runs the commands (named threads; the caller owns and stops it)
   */
  public ClvmService(CommandExecutor executor, DlmClient dlm, ExecutorService commands) {
    this.executor = executor;
    // HostStatus must answer when the lock service doesn't: ask it briefly, once.
    this.dlm = dlm.withCallDeadline(Duration.ofSeconds(3)).withRetryWindow(Duration.ofSeconds(1));
    this.commands = commands;
  }

  @Override
  public void runCommand(RunCommandRequest req, StreamObserver<RunCommandResponse> out) {
    String line = String.join(" ", req.getArgvList());
    // Logged: no control characters from the wire into the log.
    String client =
        req.getClient().isEmpty()
            ? "unnamed client"
            : req.getClient().replaceAll("\\p{Cntrl}", "?");
    // A client that goes away (Ctrl-C, its --timeout) withdraws a command still waiting for its
    // locks, which would otherwise run later, unseen; one whose lvm has started runs to its end.
    Cancellation cancellation = new Cancellation();
    Context call = Context.current();
    Context.CancellationListener gone =
        ctx ->
            cancellation.cancel(
                ctx.getDeadline() != null && ctx.getDeadline().isExpired()
                    ? "the deadline of its client (" + client + ") passed"
                    : "its client (" + client + ") went away");
    call.addListener(gone, MoreExecutors.directExecutor());
    submit(
        out,
        () -> {
          try {
            CommandResult r = executor.execute(req.getArgvList(), cancellation);
            LvmResult lvm = r.lvm();
            LOG.info(
                "[node={}] lvm {} -> exit {} (locks {} ms, lvm {} ms) for {}",
                executor.node(),
                line,
                lvm.exitCode(),
                r.lockWait().toMillis(),
                lvm.elapsed().toMillis(),
                client);
            RunCommandResponse.Builder b =
                RunCommandResponse.newBuilder()
                    .setStdout(ByteString.copyFrom(lvm.stdoutBytes()))
                    .setStderr(
                        ByteString.copyFromUtf8(
                                r.notes().stream().map(n -> n + "\n").collect(Collectors.joining()))
                            .concat(ByteString.copyFrom(lvm.stderrBytes())))
                    .setExitCode(lvm.exitCode())
                    .setLockWaitNanos(r.lockWait().toNanos())
                    .setLvmNanos(lvm.elapsed().toNanos());
            for (LockUse u : r.locks()) {
              b.addLocks(
                  io.clusterlvm.clvm.proto.LockUse.newBuilder()
                      .setLockspace(u.lockspace())
                      .setResource(u.resource())
                      .setMode(u.mode().name())
                      .setFencingToken(u.fencingToken())
                      .setScope(u.kind().name()));
            }
            return b.build();
          } catch (ClusterRefusalException e) {
            LOG.warn(
                "[node={}] lvm {} refused ({}) for {}: {}",
                executor.node(),
                line,
                e.reason(),
                client,
                e.getMessage());
            throw e;
          } finally {
            call.removeListener(gone);
          }
        });
  }

  @Override
  public void listVolumes(ListVolumesRequest req, StreamObserver<ListVolumesResponse> out) {
    submit(
        out,
        () -> {
          CommandExecutor.Volumes v = executor.listVolumes();
          ListVolumesResponse.Builder b = ListVolumesResponse.newBuilder();
          for (VolumeGroupInfo vg : v.volumeGroups()) {
            b.addVolumeGroups(
                VolumeGroup.newBuilder()
                    .setName(vg.name())
                    .setUuid(vg.uuid())
                    .setSeqno(vg.seqno())
                    .setSizeBytes(vg.sizeBytes())
                    .setFreeBytes(vg.freeBytes())
                    .setLvCount(vg.lvCount())
                    .setPvCount(vg.pvCount())
                    .setLockType(vg.lockType()));
          }
          for (LogicalVolumeInfo lv : v.logicalVolumes()) {
            var mode = v.activeHere().get(lv.volumeGroup() + "/" + lv.name());
            b.addLogicalVolumes(
                LogicalVolume.newBuilder()
                    .setVolumeGroup(lv.volumeGroup())
                    .setName(lv.name())
                    .setUuid(lv.uuid())
                    .setSizeBytes(lv.sizeBytes())
                    .setAttr(lv.attr())
                    .setActiveHere(mode == null ? "" : mode.name()));
          }
          return b.build();
        });
  }

  @Override
  public void hostStatus(HostStatusRequest req, StreamObserver<HostStatusResponse> out) {
    submit(
        out,
        () -> {
          CommandExecutor.Status s = executor.status();
          HostStatusResponse.Builder b =
              HostStatusResponse.newBuilder()
                  .setNode(s.node())
                  .setIncarnation(s.incarnation())
                  .setMember(s.member())
                  .setStorageAllowed(s.storageAllowed())
                  .setMembershipNote(s.membershipNote())
                  .putAllSeenSeqno(s.seenSeqno())
                  .setViewRefreshes(s.viewRefreshes())
                  .setMetadataLog(s.metadataLog());
          s.activations()
              .forEach(
                  (name, lock) -> {
                    String vg = lock.lockspace().replaceFirst("^lvm_", "");
                    b.addActivations(
                        Activation.newBuilder()
                            .setVolumeGroup(vg)
                            .setLogicalVolume(lock.resource())
                            .setMode(lock.mode().name())
                            .setLockId(lock.id())
                            .setFencingToken(lock.fencingToken()));
                  });
          for (CommandExecutor.InFlight c : s.inFlight()) {
            b.addCommandsInFlight(
                CommandInFlight.newBuilder()
                    .setId(c.id())
                    .addAllArgv(c.argv())
                    .setStage(c.stage())
                    .setRunningNanos(c.running().toNanos()));
          }
          try {
            DlmClient once =
                dlm.withCallDeadline(HELD_LOCKS_DEADLINE).withRetryWindow(Duration.ZERO);
            // Without a current incarnation this host holds nothing (0 would ask for every one).
            List<ResourceInfo> mine =
                s.incarnation() == 0 ? List.of() : once.locks(null, s.node(), s.incarnation());
            for (ResourceInfo r : mine) {
              for (LockInfo l : r.getGrantedList()) {
                b.addHeldLocks(
                    HeldLock.newBuilder()
                        .setLockspace(r.getLockspace())
                        .setResource(r.getResource())
                        .setMode(l.getGrantedMode().name())
                        .setLockId(l.getLockId())
                        .setPersistent(l.getPersistent()));
              }
            }
          } catch (DlmClientException e) {
            b.setHeldLocksError("the lock service could not be asked: " + e.getMessage());
          }
          return b.build();
        });
  }

  @FunctionalInterface
  private interface Work<T> {
    T call() throws ClusterRefusalException, InterruptedException;
  }

  private <T> void submit(StreamObserver<T> out, Work<T> work) {
    try {
      commands.execute(
          () -> {
            try {
              T reply = work.call();
              out.onNext(reply);
              out.onCompleted();
            } catch (ClusterRefusalException e) {
              out.onError(Refusals.toStatus(e));
            } catch (InterruptedException e) {
              out.onError(
                  Status.UNAVAILABLE
                      .withDescription("clvm-agent is stopping; the request was not completed")
                      .asRuntimeException());
            } catch (RuntimeException e) {
              LOG.error("[node={}] request failed", executor.node(), e);
              out.onError(
                  Status.INTERNAL
                      .withDescription(
                          "clvm-agent failed: "
                              + e.getClass().getSimpleName()
                              + (e.getMessage() == null ? "" : ": " + e.getMessage()))
                      .asRuntimeException());
            }
          });
    } catch (RejectedExecutionException e) {
      out.onError(
          Status.UNAVAILABLE.withDescription("clvm-agent is stopping").asRuntimeException());
    }
  }
}
