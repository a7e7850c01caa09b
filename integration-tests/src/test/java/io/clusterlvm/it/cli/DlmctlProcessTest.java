package io.clusterlvm.it.cli;

import static org.assertj.core.api.Assertions.assertThat;

import com.google.protobuf.util.JsonFormat;
import io.clusterlvm.dlm.client.DlmClient;
import io.clusterlvm.dlm.client.DlmSession;
import io.clusterlvm.dlm.client.LockMode;
import io.clusterlvm.dlm.client.LockOptions;
import io.clusterlvm.dlm.proto.ServerReport;
import io.clusterlvm.dlm.proto.ServerReports;
import io.clusterlvm.dlm.proto.ServerStatusResponse;
import io.clusterlvm.dlm.server.DlmServer;
import io.clusterlvm.dlm.server.DlmServerConfig;
import io.clusterlvm.it.cli.CommandRun.Result;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.List;
import java.util.Map;
import java.util.concurrent.TimeUnit;
import org.apache.curator.framework.CuratorFramework;
import org.apache.curator.framework.CuratorFrameworkFactory;
import org.apache.curator.framework.recipes.leader.LeaderLatch;
import org.apache.curator.retry.RetryOneTime;
import org.apache.curator.test.TestingServer;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;

/** Drives bin/dlmctl as an operator would: a separate process against a running dlm-server. */
@Timeout(value = 120, unit = TimeUnit.SECONDS)
class DlmctlProcessTest {
  private static final Path DLMCTL = CommandRun.BIN.resolve("dlmctl");

  private static TestingServer zk;
  private static DlmServer server;
  private static String servers;

  @TempDir static Path tmp;

  @BeforeAll
  static void start() throws Exception {
    zk = new TestingServer();
    server = DlmServer.start(DlmServerConfig.forTest(zk.getConnectString()));
    org.awaitility.Awaitility.await().atMost(Duration.ofSeconds(20)).until(server::isLeader);
    servers = "127.0.0.1:" + server.port();
  }

  @AfterAll
  static void stop() throws Exception {
    server.close();
    zk.close();
  }

  private static Result dlmctl(String... args) throws IOException, InterruptedException {
    return dlmctlAt(servers, args);
  }

  private static Result dlmctlAt(String servers, String... args)
      throws IOException, InterruptedException {
    return CommandRun.run(tmp, DLMCTL, Map.of("DLM_SERVERS", servers), args);
  }

  /**
   * With no lock-service leader answering (an election, a leader cut off), {@code nodes} still
   * shows the fence states, which come from ZooKeeper through any server, says that the lock counts
   * are unknown, and exits 3. Before, it showed nothing: just when an operator needs to see which
   * host is being fenced. Here a latch that no server holds has the leadership.
   */
  @Test
  void nodesShowsTheFenceStatesWhenNoLeaderAnswers() throws Exception {
    String root = "/no-leader";
    try (CuratorFramework c =
        CuratorFrameworkFactory.newClient(zk.getConnectString(), new RetryOneTime(100))) {
      c.start();
      try (LeaderLatch elsewhere = new LeaderLatch(c, root + "/dlm/leader", "127.0.0.1:1")) {
        elsewhere.start();
        assertThat(elsewhere.await(20, TimeUnit.SECONDS)).isTrue();
        try (DlmServer follower =
            DlmServer.start(DlmServerConfig.forTest(zk.getConnectString()).withRoot(root))) {
          String at = "127.0.0.1:" + follower.port();
          Path conf = tmp.resolve("no-leader.conf");
          Files.writeString(
              conf,
              """
              <cluster name="nl" config_version="3">
                <clusternodes><clusternode name="nl01" nodeid="1"/></clusternodes>
              </cluster>
              """);
          Result activated = dlmctlAt(at, "config", "activate", conf.toString());
          assertThat(activated.exit()).as(activated.err()).isZero();

          Result table = dlmctlAt(at, "nodes", "--call-timeout", "2s");
          assertThat(table.exit()).as(table.err()).isEqualTo(3);
          assertThat(table.out()).containsPattern("nl01 +never joined +- +- +\\? ");
          assertThat(table.out()).contains("config_version 3");
          assertThat(table.err()).contains("the lock service did not answer");

          Result json = dlmctlAt(at, "nodes", "-o", "json", "--call-timeout", "2s");
          assertThat(json.exit()).as(json.err()).isEqualTo(3);
          com.google.gson.JsonObject o =
              com.google.gson.JsonParser.parseString(json.out()).getAsJsonObject();
          assertThat(o.get("dlm").isJsonNull()).isTrue();
          assertThat(o.get("dlmError").getAsString()).isNotEmpty();
          assertThat(o.getAsJsonObject("fence").getAsJsonArray("nodes").toString())
              .contains("nl01");

          // A fence record nobody can parse (written by hand) is shown as such, beside the
          // others. It used to fail the whole listing as "ZooKeeper is not reachable", which sent
          // the operator the wrong way.
          c.create().creatingParentsIfNeeded().forPath(root + "/fence/nodes/nl02", new byte[] {-1});
          Result broken = dlmctlAt(at, "nodes", "--call-timeout", "2s");
          assertThat(broken.err()).doesNotContain("not reachable");
          assertThat(broken.out())
              .containsPattern("nl01 +never joined")
              .containsPattern("nl02 +record unreadable .*its fence record does not parse");
          // Whether an agent runs nl02 is unknown: a leave must not go straight to the lock
          // service, which would release a running agent's locks.
          Result leave = dlmctlAt(at, "leave", "nl02", "--call-timeout", "2s");
          assertThat(leave.exit()).isEqualTo(3);
          assertThat(leave.err()).contains("cannot tell whether an agent runs nl02");
        }
      }
    }
  }

  /**
   * A server that accepts the connection and never answers (as one cut off from ZooKeeper may) does
   * not end a fence-domain read: dlmctl asks the next server given. Before, the first
   * DEADLINE_EXCEEDED was the answer.
   */
  @Test
  void fenceReadsMoveOnFromAServerThatDoesNotAnswer() throws Exception {
    try (java.net.ServerSocket silent =
        new java.net.ServerSocket(0, 50, java.net.InetAddress.getLoopbackAddress())) {
      String list = "127.0.0.1:" + silent.getLocalPort() + "," + servers;
      Result history = dlmctlAt(list, "fence-history", "--call-timeout", "1s");
      assertThat(history.exit()).as(history.err()).isZero();
      Result show = dlmctlAt(list, "config", "show", "--call-timeout", "1s");
      assertThat(show.err()).contains("no cluster.conf has been activated yet"); // the server's

      // A change sent and not answered may still happen: dlmctl says so, rather than "cannot
      // reach a dlm-server", which would have the operator run it again (found in review).
      Result ack =
          dlmctlAt(
              "127.0.0.1:" + silent.getLocalPort(),
              "ack",
              "nobody",
              "--incarnation",
              "1",
              "--yes",
              "--call-timeout",
              "1s");
      assertThat(ack.exit()).isEqualTo(3);
      assertThat(ack.err())
          .contains("may have been applied all the same")
          .doesNotContain("cannot reach");
    }
  }

  @Test
  void lockRunsTheCommandUnderTheLockAndPassesItsExitStatus() throws Exception {
    assertThat(dlmctl("join", "cli1").exit()).isZero();
    Path seen = tmp.resolve("seen.txt");
    Result r =
        dlmctl(
            "lock",
            "--node",
            "cli1",
            "-m",
            "EX",
            "cli-a",
            "r1",
            "--",
            "sh",
            "-c",
            "echo $DLM_FENCING_TOKEN > "
                + seen
                + "; "
                + DLMCTL
                + " locks cli-a -o json >> "
                + seen
                + "; exit 7");
    assertThat(r.exit()).as(r.err()).isEqualTo(7);
    String inside = Files.readString(seen);
    assertThat(inside)
        .contains("\"resource\": \"r1\"")
        .contains("\"node\": \"cli1\"")
        .contains("\"grantedMode\": \"EX\"");
    // released when the command exited
    Result after = dlmctl("locks", "cli-a");
    assertThat(after.exit()).isEqualTo(3); // the lockspace is gone with its last lock
    assertThat(after.err()).contains("no lockspace named cli-a");
  }

  /**
   * SIGTERM to dlmctl stops the command and what it started, and the lock is held until they have
   * all ended: here the command's shell dies at once, and a process it started in the background,
   * which takes its time, lists the locks and still finds its own. Before, dlmctl released the lock
   * as soon as it had signalled them, and then as soon as the shell had died.
   */
  @Test
  void aTerminatedLockKeepsTheLockUntilTheCommandHasEnded() throws Exception {
    assertThat(dlmctl("join", "cli3").exit()).isZero();
    Path started = tmp.resolve("term-started");
    Path seen = tmp.resolve("term-seen.txt");
    ProcessBuilder pb =
        new ProcessBuilder(
            DLMCTL.toString(),
            "lock",
            "--node",
            "cli3",
            "cli-t",
            "r",
            "--",
            "sh",
            "-c",
            "( trap '' TERM; touch "
                + started
                + "; sleep 2; "
                + DLMCTL
                + " locks cli-t -o json > "
                + seen
                + " ) & wait");
    pb.environment().put("DLM_SERVERS", servers);
    pb.redirectOutput(ProcessBuilder.Redirect.DISCARD)
        .redirectError(tmp.resolve("term-err.txt").toFile());
    Process lock = pb.start();
    try {
      org.awaitility.Awaitility.await("the command runs")
          .atMost(Duration.ofSeconds(30))
          .until(() -> Files.exists(started));
      lock.destroy(); // SIGTERM to dlmctl's JVM (bin/dlmctl execs java)
      assertThat(lock.waitFor(30, TimeUnit.SECONDS)).isTrue();
    } finally {
      lock.destroyForcibly();
    }

    assertThat(Files.readString(seen))
        .as("the listing of what the command started, made after dlmctl got SIGTERM")
        .contains("\"resource\": \"r\"")
        .contains("\"node\": \"cli3\"");
    org.awaitility.Awaitility.await("released once the command ended")
        .atMost(Duration.ofSeconds(20))
        .until(() -> !dlmctl("locks", "cli-t", "-o", "json").out().contains("cli3"));
  }

  /**
   * A lock whose session is lost (here its node's locks are purged, as after a fence) stops the
   * command it runs and what that started: a child left running would go on without the lock.
   * Before, only the command was signalled, and a child it had started ran on (found in review).
   */
  @Test
  void aLockWhoseSessionIsLostStopsTheCommandAndWhatItStarted() throws Exception {
    assertThat(dlmctl("join", "cli9").exit()).isZero();
    Path childPid = tmp.resolve("lost-child.pid");
    ProcessBuilder pb =
        new ProcessBuilder(
            DLMCTL.toString(),
            "lock",
            "--node",
            "cli9",
            "cli-lost",
            "r",
            "--",
            "bash",
            "-c",
            "sleep 300 & echo $! > " + childPid + "; wait");
    pb.environment().put("DLM_SERVERS", servers);
    pb.redirectOutput(ProcessBuilder.Redirect.DISCARD)
        .redirectError(tmp.resolve("lost-err.txt").toFile());
    Process lock = io.clusterlvm.testing.ChildProcesses.killOnExit(pb.start());
    long child = -1;
    try (DlmClient c = DlmClient.connect(servers)) {
      org.awaitility.Awaitility.await("the command runs")
          .atMost(Duration.ofSeconds(30))
          .until(() -> Files.exists(childPid) && Files.size(childPid) > 0);
      child = Long.parseLong(Files.readString(childPid).trim());
      long incarnation =
          c.nodes().stream()
              .filter(n -> n.getNode().equals("cli9"))
              .findFirst()
              .orElseThrow()
              .getIncarnation();
      c.purge("cli9", incarnation, "test: the node was fenced");

      assertThat(lock.waitFor(30, TimeUnit.SECONDS)).as("dlmctl ended").isTrue();
      assertThat(lock.exitValue()).isEqualTo(3);
      assertThat(Files.readString(tmp.resolve("lost-err.txt"))).contains("lost the cluster lock");
      long pid = child;
      org.awaitility.Awaitility.await("the command's child stopped too")
          .atMost(Duration.ofSeconds(20))
          .until(() -> ProcessHandle.of(pid).map(h -> !h.isAlive()).orElse(true));
    } finally {
      lock.destroyForcibly();
      if (child > 0) {
        ProcessHandle.of(child).ifPresent(ProcessHandle::destroyForcibly);
      }
    }
  }

  @Test
  void tryFailsWithConflictStatusWhileAnotherNodeHoldsIt() throws Exception {
    try (DlmClient c = DlmClient.connect(servers)) {
      long inc = c.join("holder", "b");
      try (DlmSession s = c.openSession("holder", inc, "test")) {
        s.lock("cli", "busy", LockMode.EX);
        assertThat(dlmctl("join", "cli2").exit()).isZero();
        Result r = dlmctl("lock", "--node", "cli2", "--try", "cli", "busy", "--", "true");
        assertThat(r.exit()).isEqualTo(1);
        assertThat(r.err()).contains("would block").contains("holder");

        Result t =
            dlmctl("lock", "--node", "cli2", "--timeout", "500ms", "cli", "busy", "--", "true");
        assertThat(t.exit()).isEqualTo(1);
        assertThat(t.err()).contains("timed out");

        Result table = dlmctl("locks");
        assertThat(table.out())
            .contains("LOCKSPACE")
            .contains("busy")
            .contains("holder")
            .contains("granted")
            .contains("EX");
        // One node's locks: the holder's, not a bystander's, nor cli2's (it waits for nothing now).
        try (DlmSession by = c.openSession("bystander", c.join("bystander", "b2"), "test")) {
          by.lock("cli", "busy", LockMode.NL);
          by.lock("cli", "other", LockMode.EX);
          assertThat(dlmctl("locks", "cli").out()).contains("bystander").contains("other");
          assertThat(dlmctl("locks", "--node", "holder", "-o", "json").out())
              .contains("\"node\": \"holder\"")
              .contains("\"resource\": \"busy\"")
              .doesNotContain("bystander")
              .doesNotContain("other");
        }
        Result none = dlmctl("locks", "--node", "cli2", "cli");
        assertThat(none.exit()).isZero();
        assertThat(none.out()).contains("no locks of cli2 in cli");
      }
    }
  }

  @Test
  void statusShowsEveryServerGivenAndWhichOneLeads() throws Exception {
    try (DlmServer follower = DlmServer.start(DlmServerConfig.forTest(zk.getConnectString()))) {
      String followerAt = "127.0.0.1:" + follower.port();
      String nobody = "127.0.0.1:1";
      String all = servers + "," + followerAt + "," + nobody;

      Result json = dlmctl("status", "-s", all, "-o", "json", "--call-timeout", "5s");
      assertThat(json.exit()).as(json.err()).isZero();
      ServerReports.Builder reports = ServerReports.newBuilder();
      JsonFormat.parser().merge(json.out(), reports);
      assertThat(reports.getServersList())
          .extracting(ServerReport::getAddress)
          .containsExactly(servers, followerAt, nobody);
      ServerStatusResponse leader = reports.getServers(0).getStatus();
      ServerStatusResponse other = reports.getServers(1).getStatus();
      assertThat(leader.getLeader()).isTrue();
      assertThat(other.getLeader()).isFalse();
      // Looked up for this request: the follower has answered no request before this one.
      assertThat(other.getLeaderId()).isEqualTo(leader.getServerId());
      assertThat(reports.getServers(2).hasStatus()).isFalse();
      assertThat(reports.getServers(2).getError()).isNotBlank();

      Result table = dlmctl("status", "-s", all, "--call-timeout", "5s");
      assertThat(table.exit()).as(table.err()).isZero();
      assertThat(table.out())
          .contains("leader")
          .contains("follower")
          .contains("unreachable")
          .contains(nobody + " did not answer: ");

      Result noLeader = dlmctl("status", "-s", followerAt + "," + nobody, "--call-timeout", "5s");
      assertThat(noLeader.exit()).isEqualTo(3);
      assertThat(noLeader.err())
          .contains("none of the servers given is the leader; they name " + leader.getServerId());

      Result none = dlmctl("status", "-s", nobody, "--call-timeout", "2s");
      assertThat(none.exit()).isEqualTo(3);
      assertThat(none.err()).contains("no dlm-server at " + nobody + " answered");
    }
  }

  /**
   * A purge drops a node's locks only when the operator confirms it, after seeing what it drops.
   */
  @Test
  void purgeShowsWhatItDropsAndNeedsConfirmation() throws Exception {
    try (DlmClient c = DlmClient.connect(servers)) {
      long inc = c.join("cli5", "boot-cli5");
      try (DlmSession s = c.openSession("cli5", inc, "test")) {
        s.lock("cli-p", "r", LockMode.EX, LockOptions.DEFAULT.withPersistent());
      }
      purgeShowsAndNeedsConfirmation(inc);
    }
  }

  private static void purgeShowsAndNeedsConfirmation(long inc) throws Exception {
    Result unconfirmed = dlmctl("purge", "cli5", Long.toString(inc), "--reason", "test");
    assertThat(unconfirmed.exit()).as(unconfirmed.err()).isEqualTo(2);
    assertThat(unconfirmed.err())
        .contains("cli5 is MEMBER in incarnation " + inc)
        .contains("has 1 locks")
        .contains("--yes");
    assertThat(dlmctl("locks", "cli-p").out()).contains("cli5");

    Result purged = dlmctl("purge", "cli5", Long.toString(inc), "--reason", "test", "--yes");
    assertThat(purged.exit()).as(purged.err()).isZero();
    assertThat(purged.out()).contains("purged 1 locks of cli5 incarnation " + inc);
  }

  @Test
  void errorsAreClearAndHelpIsEverywhere() throws Exception {
    Result notMember = dlmctl("lock", "--node", "stranger", "cli", "r", "--", "true");
    assertThat(notMember.exit()).isEqualTo(3);
    assertThat(notMember.err()).contains("stranger is not a member").contains("dlmctl join");

    // A node nobody knows is a typo, not a node without locks or fence events.
    Result unknownNode = dlmctl("locks", "--node", "no-such-node");
    assertThat(unknownNode.exit()).isEqualTo(3);
    assertThat(unknownNode.err())
        .contains("no node named no-such-node in the lock service or the fence domain");
    assertThat(dlmctl("join", "idle-node").exit()).isZero();
    Result idle = dlmctl("locks", "--node", "idle-node");
    assertThat(idle.exit()).as(idle.err()).isZero();
    assertThat(idle.out()).contains("no locks of idle-node");
    Result unknownHistory = dlmctl("fence-history", "no-such-node");
    assertThat(unknownHistory.exit()).isEqualTo(3);
    assertThat(unknownHistory.err()).contains("the fence domain knows no node named no-such-node");

    Result badMode = dlmctl("lock", "--node", "cli1", "-m", "XX", "cli", "r", "--", "true");
    assertThat(badMode.exit()).isEqualTo(2);
    assertThat(badMode.err()).contains("unknown lock mode");

    Result missing = dlmctl("config", "validate", tmp.resolve("no-such.conf").toString());
    assertThat(missing.exit()).isEqualTo(3);
    assertThat(missing.err()).contains("no-such.conf: no such file").doesNotContain("\tat ");
    Result directory = dlmctl("config", "validate", tmp.toString());
    assertThat(directory.exit()).isEqualTo(3);
    assertThat(directory.err()).contains("is a directory").doesNotContain("\tat ");
    Path latin1 = tmp.resolve("latin1.conf");
    Files.write(
        latin1,
        "<cluster name=\"caf\u00e9\" config_version=\"1\"/>"
            .getBytes(java.nio.charset.StandardCharsets.ISO_8859_1));
    Result notUtf8 = dlmctl("config", "validate", latin1.toString());
    assertThat(notUtf8.exit()).isEqualTo(3);
    assertThat(notUtf8.err()).contains("latin1.conf: not UTF-8 text").contains("iconv");
    Result noServer = dlmctl("locks", "-s", ",");
    assertThat(noServer.exit()).isEqualTo(2);
    assertThat(noServer.err()).contains("no dlm-server address").doesNotContain("\tat ");

    Result down = dlmctl("locks", "-s", "127.0.0.1:1", "--call-timeout", "1s");
    assertThat(down.exit()).isEqualTo(3);
    assertThat(down.err()).contains("cannot reach a dlm-server");

    for (String sub :
        List.of(
            "locks",
            "lockspaces",
            "nodes",
            "lock",
            "status",
            "fence",
            "ack",
            "fence-history",
            "config")) {
      Result h = dlmctl(sub, "--help");
      assertThat(h.exit()).as(sub).isZero();
      assertThat(h.out()).as(sub).contains("Usage: dlmctl " + sub);
    }
    Result json = dlmctl("lockspaces", "-o", "json");
    assertThat(json.exit()).isZero();
    assertThat(json.out().trim()).startsWith("{");
  }
}
