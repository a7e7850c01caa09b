package io.clusterlvm.it.cli;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;
import static org.awaitility.Awaitility.await;

import io.clusterlvm.dlm.client.DlmClient;
import io.clusterlvm.dlm.client.DlmClientException;
import io.clusterlvm.dlm.client.DlmSession;
import io.clusterlvm.dlm.client.Lock;
import io.clusterlvm.dlm.client.LockMode;
import io.clusterlvm.dlm.client.TlsFiles;
import io.clusterlvm.it.cli.CommandRun.Result;
import io.clusterlvm.testing.ChildProcesses;
import io.clusterlvm.testing.TestCertificates;
import io.clusterlvm.testing.ZooKeeperProcess;
import io.grpc.Status;
import java.io.IOException;
import java.net.InetAddress;
import java.net.ServerSocket;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.attribute.PosixFilePermissions;
import java.time.Duration;
import java.util.List;
import java.util.Map;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;

/**
 * A dlm-server process that serves over TLS and requires client certificates of the cluster's CA
 * (mutual TLS), with certificates made by the real openssl: the Java client and bin/dlmctl with
 * such a certificate take locks and read the fence domain; without one, or with one of another CA,
 * or trusting another CA, they are refused. ZooKeeper (a real one, in a process of its own) serves
 * TLS only and requires certificates of the same CA, so the dlm-server and a clvm-agent process
 * reach it only through their --zk-tls options.
 */
@Timeout(value = 180, unit = TimeUnit.SECONDS)
class TlsProcessTest {
  private static final Path BIN = CommandRun.BIN;

  @TempDir static Path tmp;

  private static ZooKeeperProcess zk;
  private static Process server;
  private static Path serverLog;
  private static String address;
  private static TestCertificates ca;
  private static TestCertificates.Issued client;
  private static TestCertificates rogueCa;
  private static TestCertificates.Issued rogue;

  @BeforeAll
  static void start() throws Exception {
    ca = TestCertificates.authority(Files.createDirectory(tmp.resolve("ca")), "cluster-ca");
    // The server is named localhost only: a client that reaches it as 127.0.0.1 finds its name
    // not in the certificate (the client checks it), whatever localhost resolves to here.
    TestCertificates.Issued serverCert = ca.issue("dlm-server", "DNS:localhost");
    client = ca.issue("host1", "DNS:host1");
    rogueCa = TestCertificates.authority(Files.createDirectory(tmp.resolve("rogue")), "rogue-ca");
    rogue = rogueCa.issue("intruder", "DNS:intruder");

    zk =
        ZooKeeperProcess.startTls(
            Files.createDirectory(tmp.resolve("zk")), ca, ca.issue("zookeeper", "IP:127.0.0.1"));
    int port;
    try (ServerSocket s = new ServerSocket(0, 1, InetAddress.getLoopbackAddress())) {
      port = s.getLocalPort();
    }
    address = "localhost:" + port;
    serverLog = tmp.resolve("dlm-server.log");
    server =
        ChildProcesses.killOnExit(
            new ProcessBuilder(
                    BIN.resolve("dlm-server").toString(),
                    "--zookeeper",
                    zk.connectString(),
                    "--data-dir",
                    tmp.resolve("dlm-server-data").toString(),
                    "--zk-tls-ca",
                    ca.caCert().toString(),
                    "--zk-tls-cert",
                    serverCert.cert().toString(),
                    "--zk-tls-key",
                    serverCert.key().toString(),
                    "--listen",
                    "127.0.0.1:" + port,
                    "--advertise",
                    address,
                    "--zk-root",
                    "/tls",
                    "--tls-cert",
                    serverCert.cert().toString(),
                    "--tls-key",
                    serverCert.key().toString(),
                    "--tls-ca",
                    ca.caCert().toString())
                .redirectErrorStream(true)
                .redirectOutput(serverLog.toFile())
                .start());
    try (DlmClient c = DlmClient.connect(address, clientTls())) {
      DlmClient quick = c.withRetryWindow(Duration.ofSeconds(1));
      await()
          .atMost(Duration.ofSeconds(90))
          .ignoreExceptions()
          .until(() -> quick.status().getLeader());
    }
  }

  @AfterAll
  static void stop() throws Exception {
    if (server != null) {
      server.destroy();
      if (!server.waitFor(20, TimeUnit.SECONDS)) {
        server.destroyForcibly();
      }
    }
    if (zk != null) {
      zk.close();
    }
  }

  /** dlmctl's environment for TLS: trusting {@code trusted}, presenting {@code cert}. */
  private static Map<String, String> tlsEnv(
      TestCertificates trusted, TestCertificates.Issued cert) {
    return Map.of(
        "DLM_TLS_CA", trusted.caCert().toString(),
        "DLM_TLS_CERT", cert.cert().toString(),
        "DLM_TLS_KEY", cert.key().toString());
  }

  private static TlsFiles clientTls() {
    return new TlsFiles(ca.caCert(), client.cert(), client.key());
  }

  @Test
  void aClientWithACertificateOfTheClustersCaTakesLocks() throws Exception {
    try (DlmClient c = DlmClient.connect(address, clientTls())) {
      DlmSession s = c.openSession("host1", c.join("host1", "boot-1"), "tls-test");
      Lock l = s.lock("ls", "vg1", LockMode.EX);
      assertThat(l.fencingToken()).isPositive();
      s.unlock(l);
    }

    Result locked =
        dlmctl(tlsEnv(ca, client), "lock", "--node", "host1", "ls", "vg2", "--", "true");
    assertThat(locked.exit()).as(locked.err()).isZero();
    // Through both services: the lock service's node list and the fence domain's records.
    Result nodes = dlmctl(tlsEnv(ca, client), "nodes", "-o", "json");
    assertThat(nodes.exit()).as(nodes.err()).isZero();
    assertThat(nodes.out()).contains("\"host1\"");
    Result viaFlags =
        dlmctl(
            Map.of(),
            "status",
            "--tls-ca",
            ca.caCert().toString(),
            "--tls-cert",
            client.cert().toString(),
            "--tls-key",
            client.key().toString());
    assertThat(viaFlags.exit()).as(viaFlags.err()).isZero();
  }

  @Test
  void anAgentHoldsItsLeaseThroughZooKeeperOverTlsAndLeavesCleanly() throws Exception {
    Path bootId = tmp.resolve("host2-boot_id");
    Files.writeString(bootId, "boot-host2\n");
    Path stateDir = tmp.resolve("host2-state");
    Path agentLog = tmp.resolve("host2-agent.log");
    Process agent =
        ChildProcesses.killOnExit(
            new ProcessBuilder(
                    BIN.resolve("clvm-agent").toString(),
                    "--node=host2",
                    "--zookeeper=" + zk.connectString(),
                    "--zk-root=/tls",
                    "--zk-tls-ca=" + ca.caCert(),
                    "--zk-tls-cert=" + client.cert(),
                    "--zk-tls-key=" + client.key(),
                    "--dlm-servers=" + address,
                    "--dlm-tls-ca=" + ca.caCert(),
                    "--dlm-tls-cert=" + client.cert(),
                    "--dlm-tls-key=" + client.key(),
                    "--socket=" + tmp.resolve("host2.sock"),
                    "--boot-id-file=" + bootId,
                    "--state-dir=" + stateDir)
                .redirectErrorStream(true)
                .redirectOutput(agentLog.toFile())
                .start());
    try {
      // The lease is the agent's ephemeral node in ZooKeeper, the record its write there: both
      // reach ZooKeeper only over TLS.
      await("host2 a member with a lease")
          .atMost(Duration.ofSeconds(60))
          .failFast("clvm-agent exited; see " + agentLog, () -> !agent.isAlive())
          .until(() -> nodeLine("host2"), l -> l.contains("member") && l.contains("held"));
      assertThat(
              PosixFilePermissions.toString(
                  Files.getPosixFilePermissions(stateDir.resolve("zookeeper-client.pem"))))
          .isEqualTo("rw-------");

      agent.destroy(); // SIGTERM: a clean leave, written to ZooKeeper
      assertThat(agent.waitFor(60, TimeUnit.SECONDS)).as("agent stopped").isTrue();
      assertThat(nodeLine("host2")).as("see " + agentLog).contains("left").contains("none");
    } finally {
      agent.destroyForcibly();
    }
  }

  /** dlmctl nodes' line of {@code node}, empty if it has none. */
  private static String nodeLine(String node) throws Exception {
    Result nodes = dlmctl(tlsEnv(ca, client), "nodes");
    assertThat(nodes.exit()).as(nodes.err()).isZero();
    return nodes.out().lines().filter(l -> l.startsWith(node + " ")).findFirst().orElse("");
  }

  @Test
  void clientsWithoutACertificateOfTheClustersCaAreRefused() throws Exception {
    for (TlsFiles tls :
        List.of(
            new TlsFiles(ca.caCert(), null, null), // no client certificate
            new TlsFiles(ca.caCert(), rogue.cert(), rogue.key()), // of another CA
            new TlsFiles(rogueCa.caCert(), client.cert(), client.key()))) { // server not trusted
      refused(DlmClient.connect(address, tls), tls.toString());
    }
    refused(DlmClient.connect(address), "plain text");
    // The server's certificate names localhost, not 127.0.0.1: the client checks the name.
    refused(DlmClient.connect(address.replace("localhost", "127.0.0.1"), clientTls()), "by IP");
    Result plainCtl = dlmctl(Map.of(), "nodes", "--call-timeout", "2s");
    assertThat(plainCtl.exit()).isEqualTo(3);
    assertThat(plainCtl.err()).contains("if the servers use TLS, give --tls-ca");
    Result rogueCtl = dlmctl(tlsEnv(ca, rogue), "nodes", "--call-timeout", "2s");
    assertThat(rogueCtl.exit()).isEqualTo(3);
    // A server this client does not trust fails the handshake on the client's side, which says
    // so (a refused client certificate may only show as a closed connection, under TLS 1.3).
    Result untrusting = dlmctl(tlsEnv(rogueCa, client), "nodes", "--call-timeout", "2s");
    assertThat(untrusting.exit()).isEqualTo(3);
    assertThat(untrusting.err()).contains("the TLS handshake failed");
    Result wrongName =
        dlmctlAt(
            address.replace("localhost", "127.0.0.1"),
            tlsEnv(ca, client),
            "nodes",
            "--call-timeout",
            "2s");
    assertThat(wrongName.exit()).isEqualTo(3);
    assertThat(wrongName.err()).contains("the TLS handshake failed");
    // Nobody got in: the only nodes are those the first test joined.
    try (DlmClient c = DlmClient.connect(address, clientTls())) {
      assertThat(c.nodes()).noneMatch(n -> n.getNode().equals("intruder"));
    }
  }

  @Test
  void tlsOptionsThatDoNotGoTogetherAreUsageErrors() throws Exception {
    Result noCert = run(BIN.resolve("dlm-server"), Map.of(), "--tls-ca", ca.caCert().toString());
    assertThat(noCert.exit()).isEqualTo(2);
    assertThat(noCert.err()).contains("--tls-cert");
    Result missing =
        run(
            BIN.resolve("dlm-server"),
            Map.of(),
            "--tls-cert",
            tmp.resolve("nope.crt").toString(),
            "--tls-key",
            client.key().toString());
    assertThat(missing.exit()).isEqualTo(2);
    assertThat(missing.err()).contains("nope.crt is not a readable file");
    Result ctlKeyOnly =
        dlmctl(Map.of("DLM_TLS_KEY", client.key().toString()), "nodes", "--call-timeout", "2s");
    assertThat(ctlKeyOnly.exit()).isNotZero();
    assertThat(ctlKeyOnly.err()).contains("give both or neither");
    Result agentKeyOnly =
        run(
            BIN.resolve("clvm-agent"),
            Map.of(),
            "--zookeeper",
            zk.connectString(),
            "--dlm-tls-key",
            client.key().toString());
    assertThat(agentKeyOnly.exit()).isEqualTo(2);
    assertThat(agentKeyOnly.err()).contains("give both or neither");
    Result agentZkKeyOnly =
        run(
            BIN.resolve("clvm-agent"),
            Map.of(),
            "--zookeeper",
            zk.connectString(),
            "--zk-tls-key",
            client.key().toString());
    assertThat(agentZkKeyOnly.exit()).isEqualTo(2);
    assertThat(agentZkKeyOnly.err()).contains("give both or neither");
    Result agentOpenTcp =
        run(
            BIN.resolve("clvm-agent"),
            Map.of(),
            "--zookeeper",
            zk.connectString(),
            "--tcp-listen",
            "0.0.0.0:7960");
    assertThat(agentOpenTcp.exit()).isEqualTo(2);
    assertThat(agentOpenTcp.err()).contains("only a loopback address");
    Result embeddedZkTls =
        run(BIN.resolve("dlm-server"), Map.of(), "--zk-tls-ca", ca.caCert().toString());
    assertThat(embeddedZkTls.exit()).isEqualTo(2);
    assertThat(embeddedZkTls.err()).contains("the embedded ZooKeeper listens on 127.0.0.1 only");
  }

  /** A call through {@code client} fails as an unreachable server's does; closes it. */
  private static void refused(DlmClient client, String what) {
    try (client) {
      DlmClient quick =
          client.withRetryWindow(Duration.ofSeconds(1)).withCallDeadline(Duration.ofSeconds(5));
      assertThatThrownBy(() -> quick.join("intruder", "boot-x"))
          .as(what)
          .isInstanceOfSatisfying(
              DlmClientException.class,
              // UNKNOWN when a refused client certificate shows only as a closed channel (TLS 1.3)
              e -> assertThat(e.code()).isIn(Status.Code.UNAVAILABLE, Status.Code.UNKNOWN));
    }
  }

  private static Result dlmctl(Map<String, String> env, String... args)
      throws IOException, InterruptedException {
    return dlmctlAt(address, env, args);
  }

  private static Result dlmctlAt(String servers, Map<String, String> env, String... args)
      throws IOException, InterruptedException {
    Map<String, String> e = new java.util.HashMap<>(env);
    e.put("DLM_SERVERS", servers);
    return run(BIN.resolve("dlmctl"), e, args);
  }

  private static Result run(Path program, Map<String, String> env, String... args)
      throws IOException, InterruptedException {
    return CommandRun.run(tmp, program, env, args);
  }
}
