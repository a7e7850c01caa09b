package io.clusterlvm.it.fence;

import static org.assertj.core.api.Assertions.assertThat;
import static org.awaitility.Awaitility.await;

import com.google.gson.JsonElement;
import com.google.gson.JsonObject;
import com.google.gson.JsonParser;
import io.clusterlvm.dlm.client.DlmClientException;
import io.clusterlvm.dlm.client.DlmSession;
import io.clusterlvm.dlm.client.Lock;
import io.clusterlvm.dlm.client.LockMode;
import io.clusterlvm.dlm.client.LockOptions;
import io.clusterlvm.fence.proto.FenceEvent;
import io.clusterlvm.fence.proto.FenceState;
import java.nio.file.Path;
import java.time.Duration;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;
import org.assertj.core.api.ThrowableAssert;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.TestInfo;

/** What every fence scenario shares: a fresh {@link FenceCluster} per test, and helpers. */
abstract class FenceScenario {
  static final String LS = "vg_shared";
  static final String VGLK = "VGLK";

  FenceCluster cluster;

  @BeforeEach
  void startCluster(TestInfo info) throws Exception {
    cluster =
        newCluster(
            Path.of(
                "target",
                "fence-it",
                info.getTestClass().map(Class::getSimpleName).orElse("unknown"),
                info.getTestMethod().map(m -> m.getName()).orElse("unknown")));
  }

  /** The cluster a test runs on: by default every part on this machine's loopback. */
  FenceCluster newCluster(Path dir) throws Exception {
    return FenceCluster.start(dir);
  }

  @AfterEach
  void stopCluster() throws Exception {
    if (cluster != null) {
      cluster.close();
    }
  }

  /**
   * Starts {@code first}'s agent and waits until it is the fencer, then starts the others: the
   * fencer is then a host the scenario chose (a survivor), not whichever JVM came up first.
   */
  void startHosts(Path conf, SimulatedHost first, SimulatedHost... others) throws Exception {
    first.startAgent("boot-" + first.name() + "-1", conf);
    first.awaitMember(0);
    awaitFencer(first.name());
    for (SimulatedHost h : others) {
      h.startAgent("boot-" + h.name() + "-1", conf);
    }
    for (SimulatedHost h : others) {
      h.awaitMember(0);
    }
  }

  /**
   * The seed cluster.conf of issue 4 (tpve01..03; tpve03 without a fence device) with fence_ilo
   * swapped for fence_ipmilan against the simulated BMCs of tpve01 and tpve02, and post_join_delay
   * 0 so scenarios need not wait 6 s after the agents start.
   */
  ClusterConfXml seedConf(long version, HostBmc tpve01, HostBmc tpve02) throws Exception {
    return new ClusterConfXml("tpve", version)
        .fenceDaemon(0, 0)
        .ipmiDevice("tpve01", tpve01, tpve01.writePasswordScript(cluster.dir().resolve("pw01")))
        .ipmiDevice("tpve02", tpve02, tpve02.writePasswordScript(cluster.dir().resolve("pw02")))
        .node("tpve01", 1, ClusterConfXml.method("power", "tpve01"))
        .node("tpve02", 2, ClusterConfXml.method("power", "tpve02"))
        .node("tpve03", 3);
  }

  void awaitFencer(String host) {
    await(host + " is the fencer")
        .atMost(Duration.ofSeconds(30))
        .pollInterval(Duration.ofMillis(100))
        .until(() -> cluster.fencer().orElse(""), host::equals);
  }

  void awaitState(String node, FenceState state, Duration max) {
    await(node + " reaches " + state)
        .atMost(max)
        .pollInterval(Duration.ofMillis(50))
        .until(() -> cluster.state(node), s -> s == state);
  }

  /** A lock session of {@code host} in this JVM (the survivor's lock user). */
  DlmSession session(SimulatedHost host, String client) throws Exception {
    return cluster.client().openSession(host.name(), host.incarnation(), client);
  }

  /** A waiting request, with the wall-clock time of its grant. */
  record Waiting(CompletableFuture<Lock> lock, CompletableFuture<Long> grantedAtMillis) {
    static Waiting request(DlmSession s, String ls, String res, LockMode mode) {
      CompletableFuture<Lock> f = s.lockAsync(ls, res, mode, LockOptions.DEFAULT);
      // Wall clock: it is compared with the BMC's power log, written by another process.
      return new Waiting(f, f.thenApply(l -> System.currentTimeMillis()));
    }

    Lock get() throws Exception {
      return lock.get(60, TimeUnit.SECONDS);
    }
  }

  /** A NOQUEUE request for {@code res} fails at once: the lock is frozen (held elsewhere). */
  static void assertWouldBlock(DlmSession s, String ls, String res) {
    ThrowableAssert.ThrowingCallable call =
        () -> s.lock(ls, res, LockMode.EX, LockOptions.DEFAULT.withNoqueue());
    assertThat(org.assertj.core.api.Assertions.catchThrowable(call))
        .isInstanceOfSatisfying(
            DlmClientException.class, e -> assertThat(e.wouldBlock()).as(e.getMessage()).isTrue());
  }

  /**
   * Waits until {@code node} is FENCED with its locks purged (and the purge in its history),
   * checking all along that the waiting request was not granted before the node was FENCED.
   */
  void awaitFencedNeverGrantingEarly(String node, Waiting w, Duration max) {
    await(node + " fenced and purged")
        .atMost(max)
        .pollInterval(Duration.ofMillis(20))
        .until(
            () -> {
              // Grant first, record second: a grant seen here happened before this read, so the
              // record must already say FENCED (the purge, which frees the lock, comes after it).
              boolean granted = w.lock().isDone();
              var r = cluster.record(node);
              if (granted) {
                assertThat(r.getState())
                    .as("the lock was granted while %s is %s", node, r.getState())
                    .isEqualTo(FenceState.FENCED);
              }
              // The fencer marks the record purged, then appends the "purged" event: wait for
              // both, so that callers can check the history.
              return r.getState() == FenceState.FENCED
                  && r.getLocksPurged()
                  && events(node, "purged").stream()
                      .anyMatch(e -> e.getIncarnation() == r.getIncarnation());
            });
  }

  /** {@code dlmctl nodes -o json}: the fence record of {@code node} as the operator sees it. */
  JsonObject nodeAsOperatorSeesIt(String node) throws Exception {
    FenceCluster.CliResult r = cluster.dlmctl("nodes", "-o", "json");
    assertThat(r.exit()).as(r.toString()).isZero();
    JsonObject all = JsonParser.parseString(r.out()).getAsJsonObject();
    for (JsonElement n : all.getAsJsonObject("fence").getAsJsonArray("nodes")) {
      JsonObject record = n.getAsJsonObject().getAsJsonObject("record");
      if (record.get("node").getAsString().equals(node)) {
        return record;
      }
    }
    throw new AssertionError("dlmctl nodes does not list " + node + ":\n" + r.out());
  }

  /**
   * Waits until {@code node}'s record is in {@code state} with a last_result containing {@code
   * lastResultContains} (read from ZooKeeper: a dlmctl run per poll would take seconds), then
   * checks that {@code dlmctl nodes -o json} shows the operator the same.
   */
  JsonObject awaitOperatorSees(String node, String state, String lastResultContains)
      throws Exception {
    await(node + " is " + state + " with '" + lastResultContains + "'")
        .atMost(Duration.ofSeconds(40))
        .pollInterval(Duration.ofMillis(100))
        .until(
            () -> cluster.record(node),
            r ->
                r != null
                    && r.getState().name().equals(state)
                    && r.getLastResult().contains(lastResultContains));
    JsonObject shown = nodeAsOperatorSeesIt(node);
    assertThat(shown.get("state").getAsString()).isEqualTo(state);
    assertThat(shown.get("lastResult").getAsString()).contains(lastResultContains);
    return shown;
  }

  /**
   * Checks for {@code d} that the lock stays frozen: the request is not granted and {@code node}
   * stays in {@code state}. Longer than the lock service's grace for broken sessions, so this also
   * proves the service did not release the dead host's lock on its own.
   */
  void assertStaysFrozen(Waiting w, String node, FenceState state, Duration d) {
    await(node + " stays " + state + " and the lock frozen for " + d)
        .during(d)
        .atMost(d.plusSeconds(10))
        .pollInterval(Duration.ofMillis(200))
        .until(() -> !w.lock().isDone() && cluster.state(node) == state);
  }

  List<FenceEvent> events(String node, String event) throws Exception {
    return cluster.history(node).stream().filter(e -> e.getEvent().equals(event)).toList();
  }
}
