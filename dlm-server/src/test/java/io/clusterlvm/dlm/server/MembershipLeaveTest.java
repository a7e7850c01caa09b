package io.clusterlvm.dlm.server;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;
import static org.awaitility.Awaitility.await;

import io.clusterlvm.dlm.cli.Dlmctl;
import io.clusterlvm.dlm.client.DlmClient;
import io.clusterlvm.dlm.client.DlmSession;
import io.clusterlvm.dlm.client.LockMode;
import io.clusterlvm.dlm.client.LockOptions;
import io.clusterlvm.fence.agent.Backoff;
import io.clusterlvm.fence.agent.FenceAgentRunner;
import io.clusterlvm.fence.config.ClusterConfig;
import io.clusterlvm.fence.config.ClusterConfigException;
import io.clusterlvm.fence.domain.FenceBridge;
import io.clusterlvm.fence.domain.FenceStore;
import io.clusterlvm.fence.domain.MembershipListener;
import io.clusterlvm.fence.domain.NodeMembership;
import io.clusterlvm.fence.domain.Versioned;
import io.clusterlvm.fence.proto.FenceEvent;
import io.clusterlvm.fence.proto.FenceNodeRecord;
import io.clusterlvm.fence.proto.FenceState;
import io.clusterlvm.testing.Async;
import io.clusterlvm.testing.ZooKeeperSessions;
import io.grpc.CallOptions;
import io.grpc.Channel;
import io.grpc.ClientCall;
import io.grpc.ClientInterceptor;
import io.grpc.ClientInterceptors;
import io.grpc.ForwardingClientCall;
import io.grpc.ForwardingClientCallListener;
import io.grpc.ManagedChannel;
import io.grpc.ManagedChannelBuilder;
import io.grpc.Metadata;
import io.grpc.MethodDescriptor;
import io.grpc.Status;
import java.io.PrintWriter;
import java.io.StringWriter;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.attribute.PosixFilePermissions;
import java.time.Duration;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CopyOnWriteArrayList;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicBoolean;
import org.apache.curator.framework.CuratorFramework;
import org.apache.curator.framework.listen.ListenerManager;
import org.apache.curator.framework.state.ConnectionState;
import org.apache.curator.framework.state.ConnectionStateListener;
import org.apache.curator.test.TestingServer;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.EnumSource;

/**
 * A leave an operator requests (dlmctl leave) that the host's storage work refuses: the host stays
 * a member that may use storage, the refusal is in its fence history, and the next request is acted
 * on.
 */
@Timeout(value = 60, unit = TimeUnit.SECONDS)
class MembershipLeaveTest {
  private TestingServer zk;
  private DlmServer server;
  private CuratorFramework agentSession;
  private NodeMembership membership;
  private DlmClient dlm;
  private FenceStore store;
  private CuratorFramework fencerSide;

  @BeforeEach
  void start() throws Exception {
    zk = new TestingServer();
    server = ServerTestSupport.leading(DlmServerConfig.forTest(zk.getConnectString()));
    dlm = DlmClient.connect("127.0.0.1:" + server.port()).withRetryWindow(Duration.ofSeconds(1));
    agentSession = ServerTestSupport.agentSession(zk);
    store = new FenceStore(agentSession, "/clusterlvm");
    membership = new NodeMembership(store, dlm, "n1", "boot-1", "");
  }

  @AfterEach
  void stop() throws Exception {
    membership.close();
    if (fencerSide != null) {
      fencerSide.close();
    }
    agentSession.close();
    dlm.close();
    server.close();
    zk.close();
  }

  /**
   * Curator tells its listeners of a LOST after the fact. When an agent resumes a handed-over
   * session that expired first, Curator starts a new session, in which the agent joins; the LOST of
   * the old session may reach the membership after that. It must not cost the new lease its
   * storage, its lock session or a second join.
   */
  @Test
  void aLostOfAnEarlierSessionLeavesTheLeaseOfThisOne() throws Exception {
    List<Long> lost = new CopyOnWriteArrayList<>();
    List<String> lostOn = new CopyOnWriteArrayList<>();
    membership.addListener(
        new MembershipListener() {
          @Override
          public void leaseLost(long incarnation) {
            lost.add(incarnation);
            lostOn.add(Thread.currentThread().getName());
          }
        });
    membership.start();
    long incarnation = membership.incarnation();

    // Handled on this thread: the membership added its listener without an executor.
    lostReported(agentSession);
    assertThat(lost).isEmpty();
    assertThat(membership.mayUseStorage()).isTrue();
    assertThat(membership.incarnation()).isEqualTo(incarnation);
    assertThat(store.history("n1", 100)).extracting(FenceEvent::getEvent).containsExactly("joined");

    // A LOST of the session that holds the lease is one: the membership rejoins. Heard as the
    // LOST itself, not later as a reconnect that finds the lease gone (which would also rejoin).
    ZooKeeperSessions.expire(
        agentSession.getZookeeperClient().getZooKeeper(), zk.getConnectString());
    await("rejoined")
        .atMost(Duration.ofSeconds(40))
        .until(() -> membership.incarnation() > incarnation && membership.mayUseStorage());
    assertThat(lost).containsExactly(incarnation);
    assertThat(lostOn).noneMatch("membership-rejoin"::equals);
  }

  /**
   * The news of an earlier session's LOST may also come while start() is still joining in this one,
   * before the lease is written. The rejoin it starts waits for that join, then finds the new
   * incarnation's lease standing in this session: storage resumes without a second join.
   */
  @Test
  void aLostHeardWhileJoiningResumesStorageWithoutASecondJoin() throws Exception {
    AtomicBoolean reported = new AtomicBoolean();
    ClientInterceptor lostOnJoin =
        new ClientInterceptor() {
          @Override
          public <Q, A> ClientCall<Q, A> interceptCall(
              MethodDescriptor<Q, A> m, CallOptions options, Channel next) {
            if (m.getBareMethodName().equals("Join") && reported.compareAndSet(false, true)) {
              lostReported(agentSession);
            }
            return next.newCall(m, options);
          }
        };
    ManagedChannel ch =
        ManagedChannelBuilder.forAddress("127.0.0.1", server.port()).usePlaintext().build();
    try (DlmClient c =
        DlmClient.forChannel(ClientInterceptors.intercept(ch, lostOnJoin))
            .withRetryWindow(Duration.ofSeconds(1))) {
      membership.close();
      membership = new NodeMembership(store, c, "n1", "boot-1", "");
      List<Long> lost = new CopyOnWriteArrayList<>();
      membership.addListener(
          new MembershipListener() {
            @Override
            public void leaseLost(long incarnation) {
              lost.add(incarnation);
            }
          });
      membership.start();
      assertThat(reported).isTrue();
      assertThat(lost).containsExactly(0L); // heard before any incarnation of this process
      long incarnation = membership.incarnation();

      await("storage resumes").atMost(Duration.ofSeconds(20)).until(membership::mayUseStorage);
      await("the rejoin went its way")
          .during(Duration.ofSeconds(2))
          .atMost(Duration.ofSeconds(10))
          .until(() -> membership.mayUseStorage() && membership.incarnation() == incarnation);
      assertThat(store.history("n1", 100))
          .extracting(FenceEvent::getEvent)
          .containsExactly("joined");
      assertThat(store.memberRecord("n1").orElseThrow().getIncarnation()).isEqualTo(incarnation);
    } finally {
      ch.shutdownNow();
    }
  }

  /** What Curator's connection state manager does for a LOST: tell every listener. */
  private static void lostReported(CuratorFramework c) {
    reported(c, ConnectionState.LOST);
  }

  @SuppressWarnings("unchecked")
  private static void reported(CuratorFramework c, ConnectionState s) {
    ((ListenerManager<ConnectionStateListener, ConnectionStateListener>)
            c.getConnectionStateListenable())
        .forEach(l -> l.stateChanged(c, s));
  }

  /**
   * The ZooKeeper connection drops while an operator's leave drains the host's commands, and is
   * back before the leave ends. Joined again later, the host is a member that heartbeats and may
   * use storage. Before, the drop's "not connected" outlived the leave (connection news is not
   * followed while out of the domain), and the member never heartbeated and refused all work.
   */
  @Test
  void aConnectionDropDuringALeaveDoesNotCrippleTheNextJoin() throws Exception {
    CountDownLatch draining = new CountDownLatch(1);
    CountDownLatch resume = new CountDownLatch(1);
    membership.addListener(
        new MembershipListener() {
          @Override
          public void leaving() throws Exception {
            draining.countDown();
            resume.await(30, TimeUnit.SECONDS);
          }
        });
    membership.start();
    store.requestMembership("n1", true, "operator");
    assertThat(draining.await(20, TimeUnit.SECONDS)).isTrue();
    reported(agentSession, ConnectionState.SUSPENDED);
    reported(agentSession, ConnectionState.RECONNECTED); // re-validated after the leave
    resume.countDown();
    await("left")
        .atMost(Duration.ofSeconds(20))
        .until(() -> record().getState() == FenceState.LEFT);

    store.requestMembership("n1", false, "operator");
    await("a member again, allowed to use storage")
        .atMost(Duration.ofSeconds(20))
        .until(membership::mayUseStorage);
    assertThat(record().getState()).isEqualTo(FenceState.MEMBER);
  }

  @Test
  void aRefusedLeaveKeepsTheHostAMemberAndTheNextRequestIsHeard() throws Exception {
    AtomicBoolean refuse = new AtomicBoolean(true);
    membership.addListener(
        new MembershipListener() {
          @Override
          public void leaving() {
            if (refuse.get()) {
              throw new IllegalStateException("lvm still runs (test)");
            }
          }
        });
    membership.start();

    store.requestMembership("n1", true, "operator");
    await("refused")
        .atMost(Duration.ofSeconds(20))
        .until(
            () ->
                store.history("n1", 100).stream()
                    .map(FenceEvent::getEvent)
                    .anyMatch("leave-refused"::equals));
    await("the request is cleared")
        .atMost(Duration.ofSeconds(10))
        .until(() -> !record().getLeaveRequested());
    assertThat(record().getState()).isEqualTo(FenceState.MEMBER);
    assertThat(membership.mayUseStorage()).isTrue();
    assertThat(store.history("n1", 100))
        .filteredOn(e -> e.getEvent().equals("leave-refused"))
        .singleElement()
        .satisfies(e -> assertThat(e.getMessage()).contains("lvm still runs"));

    refuse.set(false);
    store.requestMembership("n1", true, "operator");
    await("left")
        .atMost(Duration.ofSeconds(20))
        .until(() -> record().getState() == FenceState.LEFT);
    assertThat(membership.mayUseStorage()).isFalse();
  }

  /**
   * The lock service does not answer the leave: whether it was applied is unknown, so the host does
   * not go back to using storage as a member (its locks may be gone); it asks again until a server
   * answers, then leaves.
   */
  @Test
  void aLeaveTheLockServiceDoesNotAnswerIsAskedAgainUntilItIs() throws Exception {
    membership.start();
    int port = server.port();
    server.close();
    store.requestMembership("n1", true, "operator");
    await("leaving")
        .during(Duration.ofSeconds(3))
        .atMost(Duration.ofSeconds(10))
        .until(
            () ->
                !membership.mayUseStorage()
                    && record().getState() == FenceState.MEMBER
                    && store.history("n1", 100).stream()
                        .noneMatch(e -> e.getEvent().equals("leave-refused")));
    server = ServerTestSupport.startOn(port, zk);
    await("left")
        .atMost(Duration.ofSeconds(30))
        .until(() -> record().getState() == FenceState.LEFT);
    // The history's event is appended just after the record changes: wait for it too.
    await("the history says so")
        .atMost(Duration.ofSeconds(10))
        .untilAsserted(
            () ->
                assertThat(store.history("n1", 100))
                    .extracting(FenceEvent::getEvent)
                    .contains("left"));
  }

  /**
   * The lock service applies the leave but its answer is lost. The host asks again, and the server
   * says that incarnation has already left: the leave is done, not refused.
   */
  @Test
  void aLeaveWhoseAnswerWasLostIsDoneWhenAskedAgain() throws Exception {
    ManagedChannel ch =
        ManagedChannelBuilder.forAddress("127.0.0.1", server.port()).usePlaintext().build();
    LoseFirstAnswerOf lossy = new LoseFirstAnswerOf("Leave");
    try (DlmClient c =
        DlmClient.forChannel(ClientInterceptors.intercept(ch, lossy))
            .withRetryWindow(Duration.ofSeconds(1))) {
      membership.close();
      membership = new NodeMembership(store, c, "n1", "boot-1", "");
      membership.start();
      store.requestMembership("n1", true, "operator");
      await("left")
          .atMost(Duration.ofSeconds(30))
          .until(() -> record().getState() == FenceState.LEFT);
      assertThat(lossy.lost).isTrue();
      awaitLeftEvent("an earlier attempt whose answer was lost");
      assertThat(store.history("n1", 100))
          .extracting(FenceEvent::getEvent)
          .doesNotContain("leave-refused");
    } finally {
      ch.shutdownNow();
    }
  }

  /**
   * An operator asks for a fence while the node is leaving. The leave still releases the node's
   * locks, but it does not undo the fence: the record goes to FENCING, not LEFT, and the fencer,
   * started only afterwards, goes on with it (here: waits for the ack, as no fence method is
   * configured) instead of taking the lease the node no longer holds for a failure.
   */
  @Test
  void aFenceRequestedDuringALeaveIsNotUndoneByIt() throws Exception {
    CountDownLatch inLeave = new CountDownLatch(1);
    CountDownLatch goOn = new CountDownLatch(1);
    membership.addListener(
        new MembershipListener() {
          @Override
          public void leaving() {
            inLeave.countDown();
            try {
              goOn.await(20, TimeUnit.SECONDS);
            } catch (InterruptedException e) {
              Thread.currentThread().interrupt();
            }
          }
        });
    membership.start();
    holdALock(membership.incarnation());

    store.requestMembership("n1", true, "operator");
    assertThat(inLeave.await(20, TimeUnit.SECONDS)).isTrue();
    store.requestFence("n1", "fencing-operator");
    assertThatThrownBy(() -> store.requestMembership("n1", true, "operator"))
        .hasMessageContaining("a fence of node n1 was requested by fencing-operator");
    goOn.countDown();

    awaitLeftEvent("1 locks released", "the fence requested by fencing-operator goes on");
    assertThat(record().getState()).isEqualTo(FenceState.FENCING);
    assertThat(store.memberRecord("n1")).isEmpty();

    try (FenceBridge bridge = startFencer()) {
      await("the fencer waits for the ack")
          .atMost(Duration.ofSeconds(20))
          .until(() -> record().getLastResult().startsWith("no fence method configured"));
      store.acknowledge("n1", 0, "fencing-operator");
      await("fenced and purged")
          .atMost(Duration.ofSeconds(20))
          .until(() -> record().getLocksPurged());
    }
    // The leave released the lock; the purge after the ack found the incarnation gone.
    assertThat(store.history("n1", 100))
        .extracting(FenceEvent::getEvent)
        .doesNotContain("failed")
        .containsSubsequence("fence-requested", "left", "ack", "purged");
    assertThat(store.history("n1", 100))
        .filteredOn(e -> e.getEvent().equals("purged"))
        .singleElement()
        .satisfies(e -> assertThat(e.getMessage()).startsWith("1 locks").contains("already"));
  }

  /**
   * An operator's leave that comes while a stopping agent decides whether it may leave waits for
   * that decision. Here the stop may not (LVs in use) and hands the lease over; the operator's
   * leave then finds the membership closed and must not release the locks of the incarnation the
   * next agent process goes on with.
   */
  @Test
  void anOperatorsLeaveDuringAStopsDecisionWaitsAndThenLeavesTheHandedOverLeaseAlone()
      throws Exception {
    membership.start();
    long inc = membership.incarnation();
    holdALock(inc);
    CountDownLatch deciding = new CountDownLatch(1);
    CountDownLatch decide = new CountDownLatch(1);
    CompletableFuture<Void> stop =
        Async.run(
            () ->
                membership.leaveAndClose(
                    () -> {
                      deciding.countDown();
                      try {
                        decide.await(20, TimeUnit.SECONDS);
                      } catch (InterruptedException e) {
                        Thread.currentThread().interrupt();
                      }
                      return false; // LVs in use: hand the lease over
                    }));
    assertThat(deciding.await(20, TimeUnit.SECONDS)).isTrue();
    store.requestMembership("n1", true, "operator");
    await("the operator's leave waits for the stop's decision")
        .atMost(Duration.ofSeconds(20))
        .until(() -> rejoinThreadBlocked(true));
    decide.countDown();
    stop.get(20, TimeUnit.SECONDS);
    await("the operator's leave went its way")
        .atMost(Duration.ofSeconds(20))
        .until(() -> rejoinThreadBlocked(false));

    assertThat(record().getState()).isEqualTo(FenceState.MEMBER);
    assertThat(store.memberRecord("n1")).isPresent(); // the session, and with it the lease, lives
    assertThat(dlm.locks("ls", "n1", inc)).hasSize(1);
    assertThat(store.history("n1", 100))
        .extracting(FenceEvent::getEvent)
        .doesNotContain("left", "leave-refused");
  }

  private static boolean rejoinThreadBlocked(boolean blocked) {
    return blocked
        == Thread.getAllStackTraces().keySet().stream()
            .anyMatch(
                t ->
                    t.getName().equals("membership-rejoin")
                        && t.getState() == Thread.State.BLOCKED);
  }

  /**
   * A node leaves while the fencer is fencing it. The leave does not write the record (a write
   * would fail the fencer's next compare-and-set), and once the fence is done and purged, the
   * agent, which still runs, can be asked to join again.
   */
  @Test
  void aLeaveDuringAFenceLeavesTheRecordToTheFencer() throws Exception {
    membership.start();
    long first = membership.incarnation();
    holdALock(first);
    try (FenceBridge bridge = startFencer()) {
      store.requestFence("n1", "fencing-operator");
      awaitFencingThatWaitsForAnAck();
      int version = store.nodeRecord("n1").orElseThrow().version();

      membership.leave();
      awaitLeftEvent("1 locks released", "the fence requested by fencing-operator goes on");
      assertThat(store.nodeRecord("n1").orElseThrow().version()).isEqualTo(version);
      assertThat(store.memberRecord("n1")).isEmpty();

      store.acknowledge("n1", 0, "fencing-operator");
      await("fenced and purged")
          .atMost(Duration.ofSeconds(20))
          .until(() -> record().getLocksPurged());
      store.requestMembership("n1", false, "operator");
      await("joined again")
          .atMost(Duration.ofSeconds(20))
          .until(() -> record().getState() == FenceState.MEMBER);
      assertThat(membership.incarnation()).isGreaterThan(first);
      assertThat(membership.mayUseStorage()).isTrue();
    }
  }

  /**
   * dlmctl fence powers a host off: without --yes it only says whom, and in what state, and asks
   * for the confirmation, as ack and purge do (found in review: a typo fenced the wrong host).
   */
  @Test
  void dlmctlFenceWithoutYesOnlyShowsWhomItWouldFence() throws Exception {
    membership.start();
    String servers = "127.0.0.1:" + server.port();
    StringWriter err = new StringWriter();
    int exit =
        Dlmctl.commandLine().setErr(new PrintWriter(err)).execute("fence", "n1", "-s", servers);
    assertThat(exit).as(err.toString()).isEqualTo(2);
    assertThat(err.toString())
        .contains("n1 is member in incarnation " + membership.incarnation())
        .contains("its agent heartbeating")
        .contains("dlmctl fence n1 --yes");
    assertThat(record().getFenceRequested()).as("nothing requested").isFalse();

    // Nor does an ack's or a purge's dry run suggest what would only be refused (found in the
    // same review): n1 is a member, and incarnation 0 is none.
    assertThat(dlmctl("ack", "n1", "-s", servers))
        .contains("n1 is member")
        .contains("only a FAILED or FENCING node can be acknowledged");
    assertThat(dlmctl("purge", "n1", "0", "--reason", "t", "-s", servers))
        .contains("INCARNATION must be 1 or more");

    exit = Dlmctl.commandLine().execute("fence", "n1", "--yes", "-s", servers);
    assertThat(exit).isZero();
    assertThat(record().getFenceRequested()).isTrue();
    assertThat(dlmctl("fence", "nobody", "-s", servers)).contains("no node named nobody");

    // A history cut at --limit says so.
    StringWriter historyErr = new StringWriter();
    exit =
        Dlmctl.commandLine()
            .setErr(new PrintWriter(historyErr))
            .execute("fence-history", "--limit", "1", "-s", servers);
    assertThat(exit).isZero();
    assertThat(historyErr.toString()).contains("the newest 1 events; --limit N shows more");
    assertThat(dlmctl("fence-history", "--limit", "0", "-s", servers))
        .contains("--limit must be 1 or more");
  }

  /**
   * An operator fences a running member (dlmctl fence) whose fence agent then fails: an ack of it
   * would hand the locks of a running host to others. It is refused while the node holds its lease
   * (its agent heartbeats), unless forced (found in review).
   */
  @Test
  void anAckOfANodeThatStillHoldsItsLeaseIsRefusedUnlessForced() throws Exception {
    membership.start();
    long incarnation = membership.incarnation();
    holdALock(incarnation);
    try (FenceBridge bridge = startFencer()) {
      store.requestFence("n1", "fencing-operator");
      awaitFencingThatWaitsForAnAck();
      assertThat(store.memberRecord("n1")).isPresent();

      assertThatThrownBy(() -> store.acknowledge("n1", incarnation, "fencing-operator"))
          .hasMessageContaining("still holds its membership lease of incarnation " + incarnation)
          .hasMessageContaining("--force");
      // The same from dlmctl, and for a purge, which goes to the lock service directly.
      String servers = "127.0.0.1:" + server.port();
      String inc = Long.toString(incarnation);
      assertThat(dlmctl("ack", "n1", "--incarnation", inc, "--yes", "-s", servers))
          .contains("still holds its membership lease");
      assertThat(dlmctl("purge", "n1", inc, "--reason", "t", "--yes", "-s", servers))
          .contains("still holds its membership lease of incarnation " + incarnation);
      assertThat(record().getState()).isEqualTo(FenceState.FENCING);
      assertThat(dlm.locks(null, "n1", incarnation)).isNotEmpty();

      store.acknowledge("n1", incarnation, "fencing-operator", true);
      await("fenced and purged")
          .atMost(Duration.ofSeconds(20))
          .until(() -> record().getLocksPurged());
      assertThat(dlm.locks(null, "n1", incarnation)).isEmpty();
    }
  }

  /**
   * A node record nobody can read (written by hand, or by a newer version) does not keep the fencer
   * from the other nodes: before, it failed every pass before the nodes after it were looked at.
   */
  @Test
  void aNodeRecordThatDoesNotParseDoesNotStopTheFencer() throws Exception {
    membership.start();
    agentSession
        .create()
        .forPath("/clusterlvm/fence/nodes/a-broken-record", new byte[] {(byte) 0xff, 1});
    try (FenceBridge bridge = startFencer()) {
      store.requestFence("n1", "fencing-operator");
      await("n1 is fenced as requested")
          .atMost(Duration.ofSeconds(20))
          .until(() -> record().getState() == FenceState.FENCING);
    }
  }

  /**
   * A write to the record while the agents run (here a second operator's dlmctl fence) must not
   * drop their result: a single compare-and-set against the version the run claimed failed, and the
   * agents ran again (found in review).
   */
  @Test
  void aFenceResultIsKeptWhenTheRecordWasWrittenWhileTheAgentsRan(@TempDir Path dir)
      throws Exception {
    writeAgent(dir, "fence_gated", "while [ ! -e 'DIR/go' ]; do sleep 0.05; done");
    ClusterConfig gated = fencedBy("fence_gated", "", "n1");
    membership.start();
    holdALock(membership.incarnation());
    Path runs = dir.resolve("runs");
    try (FenceBridge bridge =
        startFencer(gated, new FenceAgentRunner(Duration.ofSeconds(30), List.of(dir)))) {
      store.requestFence("n1", "fencing-operator");
      await("the agent runs off")
          .atMost(Duration.ofSeconds(20))
          .until(() -> Files.exists(runs) && Files.readAllLines(runs).contains("off"));
      store.requestFence("n1", "another-operator");
      Files.createFile(dir.resolve("go"));
      await("fenced and purged")
          .atMost(Duration.ofSeconds(20))
          .until(() -> record().getState() == FenceState.FENCED && record().getLocksPurged());
    }
    assertThat(Files.readAllLines(runs)).as("the agents ran once").containsOnlyOnce("off");
  }

  /**
   * With action="reboot", a fenced host is powered on again, but only after it was seen off and its
   * record says FENCED: what fenced's default action did, without trusting a reboot's success.
   * After a whole-cluster power loss, a host fenced for joining late comes back by itself.
   */
  @Test
  void aDeviceWithActionRebootPowersTheHostOnOnceItIsFenced(@TempDir Path dir) throws Exception {
    writeAgent(dir, "fence_power", ":");
    ClusterConfig rebooting = fencedBy("fence_power", "action=\"reboot\"", "n1");
    membership.start();
    holdALock(membership.incarnation());
    Path runs = dir.resolve("runs");
    try (FenceBridge bridge =
        startFencer(rebooting, new FenceAgentRunner(Duration.ofSeconds(30), List.of(dir)))) {
      store.requestFence("n1", "fencing-operator");
      // The "agent on" event is written once the agent has exited, so wait for it, not for the
      // agent's start, before the bridge closes (which would interrupt it).
      await("fenced, purged and powered on again")
          .atMost(Duration.ofSeconds(20))
          .until(
              () ->
                  record().getState() == FenceState.FENCED
                      && record().getLocksPurged()
                      && events().contains("agent on"));
    }
    assertThat(Files.readAllLines(runs)).containsExactly("off", "status", "on");
    assertThat(events()).containsSubsequence("fenced ", "agent on");
  }

  /**
   * A fencer that stops while it powers a fenced host on again (its process restarted, or it lost
   * the fencer's role) leaves the power-on on record, and the next fencer runs it. Before, the host
   * stayed off until an operator noticed. The first fencer's "on" hangs until it is killed by the
   * fencer's close.
   */
  @Test
  void aPowerOnThatAFencerLeftUndoneIsRunByTheNext(@TempDir Path dir) throws Exception {
    writeAgent(
        dir,
        "fence_power",
        ":",
        "[ -e 'DIR/on-hangs' ] && sleep 60".replace("DIR", dir.toString()));
    Files.createFile(dir.resolve("on-hangs"));
    ClusterConfig rebooting = fencedBy("fence_power", "action=\"reboot\"", "n1");
    membership.start();
    holdALock(membership.incarnation());
    Path runs = dir.resolve("runs");
    FenceAgentRunner runner = new FenceAgentRunner(Duration.ofSeconds(120), List.of(dir));
    try (FenceBridge first = startFencer(rebooting, runner)) {
      store.requestFence("n1", "fencing-operator");
      await("fenced, and powering on")
          .atMost(Duration.ofSeconds(20))
          .until(() -> Files.exists(runs) && Files.readAllLines(runs).contains("on"));
      assertThat(record().getState()).isEqualTo(FenceState.FENCED);
      assertThat(record().getPowerOnPending()).isTrue();
    }
    fencerSide.close();
    assertThat(record().getPowerOnPending()).as("left for the next fencer").isTrue();
    assertThat(events()).doesNotContain("agent on");

    Files.delete(dir.resolve("on-hangs"));
    try (FenceBridge next = startFencer(rebooting, runner)) {
      await("powered on by the next fencer")
          .atMost(Duration.ofSeconds(20))
          .until(() -> !record().getPowerOnPending() && events().contains("agent on"));
    }
    assertThat(Files.readAllLines(runs)).containsExactly("off", "status", "on", "on");
    assertThat(record().getState()).isEqualTo(FenceState.FENCED);
  }

  /**
   * An operator's dlmctl fence of a FAILED node goes at once, as it does for a MEMBER: it waited
   * out post_fail_delay before (found in review).
   */
  @Test
  void aFenceRequestedForAFailedNodeDoesNotWaitForPostFailDelay(@TempDir Path dir)
      throws Exception {
    writeAgent(dir, "fence_power", ":");
    ClusterConfig anHourDelay = fencedAfter(3600, "fence_power", "", "n1");
    assertThat(anHourDelay.fenceDaemon().postFailDelay()).isEqualTo(Duration.ofHours(1));
    membership.start();
    holdALock(membership.incarnation());
    Versioned<FenceNodeRecord> v = store.nodeRecord("n1").orElseThrow();
    FenceNodeRecord failed =
        v.value().toBuilder()
            .setState(FenceState.FAILED)
            .setSinceEpochMillis(System.currentTimeMillis())
            .build();
    assertThat(store.compareAndSet("n1", v.version(), failed)).isTrue();
    try (FenceBridge bridge =
        startFencer(anHourDelay, new FenceAgentRunner(Duration.ofSeconds(30), List.of(dir)))) {
      store.requestFence("n1", "fencing-operator");
      await("fenced and purged")
          .atMost(Duration.ofSeconds(20))
          .until(() -> record().getState() == FenceState.FENCED && record().getLocksPurged());
    }
  }

  /**
   * The times in a node's record are the wall clock of the fencer that wrote them. One whose clock
   * ran an hour ahead left a node FAILED "since" an hour from now, or FENCING with its next attempt
   * due then; the next fencer waits the delay or back-off on its own clock, not an hour (found in
   * review: a node's locks stayed frozen for as long as the clocks disagreed).
   */
  @ParameterizedTest(name = "left {0}")
  @EnumSource(
      value = FenceState.class,
      names = {"FAILED", "FENCING"})
  void timesAFencerWithAClockAheadWroteDoNotHoldUpTheNext(FenceState left, @TempDir Path dir)
      throws Exception {
    writeAgent(dir, "fence_power", ":");
    ClusterConfig config = fencedBy("fence_power", "", "n1");
    membership.start();
    holdALock(membership.incarnation());
    long anHourAhead = System.currentTimeMillis() + TimeUnit.HOURS.toMillis(1);
    Versioned<FenceNodeRecord> v = store.nodeRecord("n1").orElseThrow();
    FenceNodeRecord.Builder b =
        v.value().toBuilder().setState(left).setSinceEpochMillis(anHourAhead);
    if (left == FenceState.FENCING) {
      b.setAttempts(1)
          .setNextAttemptEpochMillis(anHourAhead + 1_000)
          .setLastResult("attempt 1 failed: timed out");
    }
    assertThat(store.compareAndSet("n1", v.version(), b.build())).isTrue();

    Backoff aSecond = new Backoff(Duration.ofSeconds(1), Duration.ofSeconds(1), 2);
    try (FenceBridge bridge =
        startFencer(config, new FenceAgentRunner(Duration.ofSeconds(30), List.of(dir)), aSecond)) {
      await("fenced and purged")
          .atMost(Duration.ofSeconds(20))
          .until(() -> record().getState() == FenceState.FENCED && record().getLocksPurged());
    }
  }

  /**
   * A purge that hangs (the lock service is down or cut off: the client retries for its whole
   * window) does not hold up the fence of another failed host. Before, the fencer loop ran the
   * purge itself, and fenced nobody else until it returned.
   */
  @Test
  void aPurgeThatHangsDoesNotHoldUpTheFenceOfAnotherHost(@TempDir Path dir) throws Exception {
    writeAgent(dir, "fence_off", ":");
    ClusterConfig config = fencedBy("fence_off", "", "n1", "n3");
    CountDownLatch purgesGo = new CountDownLatch(1);
    ClientInterceptor holdPurges =
        new ClientInterceptor() {
          @Override
          public <Q, A> ClientCall<Q, A> interceptCall(
              MethodDescriptor<Q, A> method, CallOptions options, Channel next) {
            if (method.getBareMethodName().equals("Purge")) {
              try {
                purgesGo.await(50, TimeUnit.SECONDS);
              } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
              }
            }
            return next.newCall(method, options);
          }
        };
    ManagedChannel ch =
        ManagedChannelBuilder.forAddress("127.0.0.1", server.port()).usePlaintext().build();
    DlmClient fencerClient = DlmClient.forChannel(ClientInterceptors.intercept(ch, holdPurges));
    membership.start();
    CuratorFramework n3Session = ServerTestSupport.agentSession(zk);
    NodeMembership n3 =
        new NodeMembership(new FenceStore(n3Session, "/clusterlvm"), dlm, "n3", "boot-3", "");
    fencerSide = ServerTestSupport.connected(zk);
    try {
      n3.start();
      try (FenceBridge bridge =
          new FenceBridge(
              new FenceStore(fencerSide, "/clusterlvm"),
              fencerClient,
              "n2",
              () -> config,
              new FenceAgentRunner(Duration.ofSeconds(30), List.of(dir)),
              Backoff.DEFAULT)) {
        bridge.start();
        store.requestFence("n1", "fencing-operator");
        await("n1 fenced")
            .atMost(Duration.ofSeconds(20))
            .until(() -> record().getState() == FenceState.FENCED);
        store.requestFence("n3", "fencing-operator");
        await("n3 fenced while the purge of n1 hangs")
            .atMost(Duration.ofSeconds(15))
            .until(
                () -> store.nodeRecord("n3").orElseThrow().value().getState() == FenceState.FENCED);
        assertThat(record().getLocksPurged()).isFalse();

        purgesGo.countDown();
        await("both purged")
            .atMost(Duration.ofSeconds(20))
            .until(
                () ->
                    record().getLocksPurged()
                        && store.nodeRecord("n3").orElseThrow().value().getLocksPurged());
      }
    } finally {
      purgesGo.countDown();
      n3.close();
      n3Session.close();
      fencerClient.close();
      ch.shutdownNow();
    }
  }

  /** Nor does a lease nobody can read: before, every pass failed on it (found in review). */
  @Test
  void aLeaseThatDoesNotParseDoesNotStopTheFencer() throws Exception {
    membership.start();
    agentSession
        .create()
        .forPath("/clusterlvm/fence/members/a-broken-lease", new byte[] {(byte) 0xff, 1});
    try (FenceBridge bridge = startFencer()) {
      store.requestFence("n1", "fencing-operator");
      await("n1 is fenced as requested")
          .atMost(Duration.ofSeconds(20))
          .until(() -> record().getState() == FenceState.FENCING);
    }
  }

  /**
   * The agent dies while a fence an operator asked for is pending, and comes back on the same boot.
   * It does not settle its old incarnation by attesting its own stop, which would drop the fence:
   * it rejoins once the fence is done (here: acknowledged).
   */
  @Test
  void anAgentRestartWaitsForARequestedFence() throws Exception {
    membership.start();
    long first = membership.incarnation();
    store.requestFence("n1", "fencing-operator");
    membership.close();
    agentSession.close(); // the lease goes with the session

    CuratorFramework restartedSession = ServerTestSupport.agentSession(zk);
    store = new FenceStore(restartedSession, "/clusterlvm");
    try (NodeMembership restarted = new NodeMembership(store, dlm, "n1", "boot-1", "")) {
      CompletableFuture<Void> rejoin = Async.run(restarted::start);
      await("the restart waits for the fence")
          .during(Duration.ofSeconds(3))
          .atMost(Duration.ofSeconds(5))
          .until(() -> !rejoin.isDone() && record().getFenceRequested());
      try (FenceBridge bridge = startFencer()) {
        await("fencing as requested")
            .atMost(Duration.ofSeconds(20))
            .until(() -> record().getState() == FenceState.FENCING);
        store.acknowledge("n1", 0, "fencing-operator");
        rejoin.get(30, TimeUnit.SECONDS);
      }
      assertThat(restarted.incarnation()).isGreaterThan(first);
      assertThat(store.history("n1", 100))
          .extracting(FenceEvent::getEvent)
          .doesNotContain("failed")
          .containsSubsequence("fence-requested", "fencing", "ack", "joined");
    } finally {
      restartedSession.close();
    }
  }

  private void holdALock(long incarnation) throws Exception {
    DlmSession held = dlm.openSession("n1", incarnation, "workload");
    held.lock("ls", "lv-1", LockMode.EX, LockOptions.DEFAULT.withPersistent());
    held.drop();
  }

  /** Waits for the one "left" event of n1 in the history, saying all of {@code saying}. */
  private void awaitLeftEvent(String... saying) {
    await("left the lock service")
        .atMost(Duration.ofSeconds(20))
        .untilAsserted(
            () ->
                assertThat(store.history("n1", 100))
                    .filteredOn(e -> e.getEvent().equals("left"))
                    .singleElement()
                    .satisfies(e -> assertThat(e.getMessage()).contains(saying)));
  }

  /** A fencer on another host, n2, whose cluster.conf gives no node a fence method. */
  /** n1 is FENCING, and with no fence method the fencer waits for an operator's ack. */
  private void awaitFencingThatWaitsForAnAck() {
    await("the fencer waits for the ack")
        .atMost(Duration.ofSeconds(20))
        .until(
            () ->
                record().getState() == FenceState.FENCING
                    && record().getLastResult().startsWith("no fence method configured"));
  }

  /** Runs dlmctl in this JVM; returns what it printed to stderr, which must have failed it. */
  private static String dlmctl(String... args) {
    StringWriter err = new StringWriter();
    int exit = Dlmctl.commandLine().setErr(new PrintWriter(err)).execute(args);
    assertThat(exit).as(String.join(" ", args) + ": " + err).isNotZero();
    return err.toString();
  }

  /**
   * Writes a fence agent {@code name} into {@code dir}: it appends each action it is asked for to
   * DIR/runs, runs {@code onOff} (DIR is {@code dir}) before it succeeds at off, and says OFF (exit
   * 2) to status.
   */
  private static void writeAgent(Path dir, String name, String onOff) throws Exception {
    writeAgent(dir, name, onOff, ":");
  }

  /** Also runs {@code onOn} (bash) for action=on. */
  private static void writeAgent(Path dir, String name, String onOff, String onOn)
      throws Exception {
    Path agent = dir.resolve(name);
    Files.writeString(
        agent,
        """
        #!/bin/bash
        action=
        while IFS= read -r line; do case "$line" in action=*) action="${line#action=}";; esac; done
        echo "$action" >> 'DIR/runs'
        if [ "$action" = off ]; then
          ON_OFF
        fi
        if [ "$action" = on ]; then
          ON_ON
        fi
        [ "$action" = status ] && exit 2
        exit 0
        """
            .replace("ON_OFF", onOff)
            .replace("ON_ON", onOn)
            .replace("DIR", dir.toString()));
    Files.setPosixFilePermissions(agent, PosixFilePermissions.fromString("rwxr-xr-x"));
  }

  /**
   * A config in which {@code fenced} nodes are fenced by {@code agent}, with {@code
   * deviceAttributes} on their device, and n2 (the fencer) has no method; no delays.
   */
  private static ClusterConfig fencedBy(String agent, String deviceAttributes, String... fenced)
      throws ClusterConfigException {
    return fencedAfter(0, agent, deviceAttributes, fenced);
  }

  /** The same with a post_fail_delay of {@code postFailDelaySeconds}. */
  private static ClusterConfig fencedAfter(
      int postFailDelaySeconds, String agent, String deviceAttributes, String... fenced)
      throws ClusterConfigException {
    StringBuilder nodes = new StringBuilder("<clusternode name=\"n2\" nodeid=\"2\"/>");
    for (String n : fenced) {
      nodes.append(
          """
          <clusternode name="%s" nodeid="%s">
            <fence><method name="power"><device name="p" plug="%s" %s/></method></fence>
          </clusternode>
          """
              .formatted(n, n.substring(1), n, deviceAttributes));
    }
    return ClusterConfig.parse(
        """
        <cluster name="test" config_version="1">
          <fence_daemon post_fail_delay="%d" post_join_delay="0"/>
          <fencedevices><fencedevice name="p" agent="%s"/></fencedevices>
          <clusternodes>%s</clusternodes>
        </cluster>
        """
            .formatted(postFailDelaySeconds, agent, nodes));
  }

  /** n1's history, each event as "what action". */
  private List<String> events() throws Exception {
    return store.history("n1", 100).stream().map(e -> e.getEvent() + " " + e.getAction()).toList();
  }

  private FenceBridge startFencer() throws Exception {
    return startFencer(
        NO_FENCE_METHOD, FenceAgentRunner.withDefaultSearchPath(Duration.ofSeconds(5)));
  }

  private FenceBridge startFencer(ClusterConfig config, FenceAgentRunner runner) throws Exception {
    return startFencer(config, runner, Backoff.DEFAULT);
  }

  private FenceBridge startFencer(ClusterConfig config, FenceAgentRunner runner, Backoff backoff)
      throws Exception {
    fencerSide = ServerTestSupport.connected(zk);
    FenceBridge bridge =
        new FenceBridge(
            new FenceStore(fencerSide, "/clusterlvm"), dlm, "n2", () -> config, runner, backoff);
    bridge.start();
    return bridge;
  }

  private static final ClusterConfig NO_FENCE_METHOD = noFenceMethod();

  private static ClusterConfig noFenceMethod() {
    try {
      return ClusterConfig.parse(
          """
          <cluster name="test" config_version="1">
            <fence_daemon post_fail_delay="0" post_join_delay="0"/>
            <clusternodes>
              <clusternode name="n1" nodeid="1"/>
              <clusternode name="n2" nodeid="2"/>
            </clusternodes>
          </cluster>
          """);
    } catch (ClusterConfigException e) {
      throw new IllegalStateException(e);
    }
  }

  /** The first call of one method reaches the server, but its answer is replaced by UNAVAILABLE. */
  private static final class LoseFirstAnswerOf implements ClientInterceptor {
    final String method;
    final AtomicBoolean lost = new AtomicBoolean();

    LoseFirstAnswerOf(String method) {
      this.method = method;
    }

    @Override
    public <Q, A> ClientCall<Q, A> interceptCall(
        MethodDescriptor<Q, A> m, CallOptions options, Channel next) {
      if (!method.equals(m.getBareMethodName()) || !lost.compareAndSet(false, true)) {
        return next.newCall(m, options);
      }
      return new ForwardingClientCall.SimpleForwardingClientCall<>(next.newCall(m, options)) {
        @Override
        public void start(Listener<A> caller, Metadata headers) {
          super.start(
              new ForwardingClientCallListener.SimpleForwardingClientCallListener<>(caller) {
                @Override
                public void onMessage(A answer) {}

                @Override
                public void onClose(Status status, Metadata trailers) {
                  super.onClose(
                      Status.UNAVAILABLE.withDescription("answer lost (test)"), new Metadata());
                }
              },
              headers);
        }
      };
    }
  }

  private FenceNodeRecord record() throws Exception {
    return store.nodeRecord("n1").orElseThrow().value();
  }
}
