package io.clusterlvm.it.ha;

import static org.assertj.core.api.Assertions.assertThat;

import io.clusterlvm.dlm.client.DlmClient;
import io.clusterlvm.dlm.proto.AcquireRequest;
import io.clusterlvm.dlm.proto.DlmGrpc;
import io.clusterlvm.dlm.proto.JoinRequest;
import io.clusterlvm.dlm.proto.LockInfo;
import io.clusterlvm.dlm.proto.LockReply;
import io.clusterlvm.dlm.proto.Mode;
import io.clusterlvm.dlm.proto.Owner;
import io.clusterlvm.dlm.proto.ResourceInfo;
import io.grpc.ManagedChannel;
import io.grpc.Status;
import io.grpc.netty.NettyChannelBuilder;
import java.time.Duration;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.UUID;
import java.util.concurrent.ConcurrentLinkedQueue;
import java.util.concurrent.Executors;
import java.util.concurrent.ScheduledExecutorService;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;

/**
 * Sends one server (not the cluster: no client-side fail-over) a NOQUEUE EX acquire of a fresh
 * resource every 10 ms and records each answer, to see exactly when that server grants and when it
 * refuses.
 */
final class Prober implements AutoCloseable {

  /** One acquire: when it was sent and answered, how, and what it got. */
  record Probe(
      long sent, long answered, Status.Code code, String description, long lockId, long token) {
    boolean granted() {
      return code == Status.Code.OK;
    }
  }

  private final ManagedChannel channel;
  private final ScheduledExecutorService timer;
  private final Owner owner;
  private final ConcurrentLinkedQueue<Probe> seen = new ConcurrentLinkedQueue<>();
  private final AtomicInteger n = new AtomicInteger();

  /** Joins node {@code node} through {@code server} and starts probing it. */
  Prober(DlmServerProcess server, String node) {
    channel = NettyChannelBuilder.forTarget(server.address()).usePlaintext().build();
    long incarnation =
        DlmGrpc.newBlockingStub(channel)
            .withDeadlineAfter(10, TimeUnit.SECONDS)
            .join(JoinRequest.newBuilder().setNode(node).setBootId("boot-" + node).build())
            .getIncarnation();
    owner = Owner.newBuilder().setNode(node).setIncarnation(incarnation).build();
    // Two threads: one probe may hang on a frozen server for its whole deadline.
    timer =
        Executors.newScheduledThreadPool(
            2,
            r -> {
              Thread t = new Thread(r, "prober-" + node);
              t.setDaemon(true);
              return t;
            });
    timer.scheduleWithFixedDelay(
        () -> seen.add(probe("p" + n.incrementAndGet())), 0, 10, TimeUnit.MILLISECONDS);
  }

  List<Probe> probes() {
    return new ArrayList<>(seen);
  }

  List<Probe> granted() {
    return seen.stream().filter(Probe::granted).toList();
  }

  /** How many probes were sent after {@code t} (System.nanoTime) and have been answered. */
  long answeredSince(long t) {
    return seen.stream().filter(p -> p.sent() > t).count();
  }

  /**
   * No lost grant: every grant this prober got is in the current leader's table (asked through
   * {@code targets}), token and all.
   */
  void assertHeld(String targets) {
    try (DlmClient client = DlmClient.connect(targets)) {
      Map<Long, Long> held = new HashMap<>();
      for (ResourceInfo r : client.locks("probe")) {
        for (LockInfo l : r.getGrantedList()) {
          held.put(l.getLockId(), l.getFencingToken());
        }
      }
      for (Probe p : granted()) {
        assertThat(Optional.ofNullable(held.get(p.lockId())))
            .as("lock %d granted to the prober", p.lockId())
            .contains(p.token());
      }
    }
  }

  /** One acquire of {@code resource}, now, on this thread. */
  Probe probe(String resource) {
    long sent = System.nanoTime();
    try {
      LockReply r =
          DlmGrpc.newBlockingStub(channel)
              .withDeadlineAfter(Duration.ofSeconds(2).toMillis(), TimeUnit.MILLISECONDS)
              .acquire(
                  AcquireRequest.newBuilder()
                      .setRequestId(UUID.randomUUID().toString())
                      .setOwner(owner)
                      .setLockspace("probe")
                      .setResource(resource)
                      .setMode(Mode.EX)
                      .setNoqueue(true)
                      .build());
      return new Probe(
          sent, System.nanoTime(), Status.Code.OK, "", r.getLockId(), r.getFencingToken());
    } catch (RuntimeException e) {
      Status s = Status.fromThrowable(e);
      return new Probe(
          sent,
          System.nanoTime(),
          s.getCode(),
          Optional.ofNullable(s.getDescription()).orElse(""),
          0,
          0);
    }
  }

  /** Stops probing (a probe under way finishes first). */
  void stop() throws InterruptedException {
    timer.shutdown();
    timer.awaitTermination(10, TimeUnit.SECONDS);
  }

  @Override
  public void close() {
    timer.shutdownNow();
    channel.shutdownNow();
  }
}
