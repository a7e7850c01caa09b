package io.clusterlvm.fence.domain;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import io.clusterlvm.dlm.client.TlsFiles;
import io.clusterlvm.testing.TestCertificates;
import io.clusterlvm.testing.ZooKeeperProcess;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.attribute.PosixFilePermissions;
import java.util.concurrent.TimeUnit;
import org.apache.curator.framework.CuratorFramework;
import org.apache.curator.framework.CuratorFrameworkFactory;
import org.apache.curator.retry.RetryOneTime;
import org.apache.zookeeper.client.ZKClientConfig;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;

/**
 * A real ZooKeeper that serves TLS only and requires client certificates of the cluster's CA
 * (certificates made by the real openssl; the server's names only its IP address): a client
 * configured by {@link ZooKeeperTls} with a certificate of that CA reads and writes, and goes on
 * after ZooKeeper restarts; one in plain text, one without a certificate, one with a certificate of
 * another CA, one that does not trust the ensemble's CA, and one that reaches the server by a name
 * its certificate does not give do not get in. Files that do not go together are refused before any
 * connection.
 */
@Timeout(value = 120, unit = TimeUnit.SECONDS)
class ZooKeeperTlsTest {
  @TempDir static Path tmp;

  private static ZooKeeperProcess zk;
  private static TestCertificates ca;
  private static TestCertificates.Issued host;
  private static TestCertificates rogueCa;
  private static TestCertificates.Issued rogue;

  @BeforeAll
  static void start() throws Exception {
    ca = TestCertificates.authority(Files.createDirectory(tmp.resolve("ca")), "cluster-ca");
    TestCertificates.Issued server = ca.issue("zookeeper", "IP:127.0.0.1");
    host = ca.issue("host1", "DNS:host1");
    rogueCa = TestCertificates.authority(Files.createDirectory(tmp.resolve("rogue")), "rogue-ca");
    rogue = rogueCa.issue("intruder", "DNS:intruder");
    zk = ZooKeeperProcess.startTls(Files.createDirectory(tmp.resolve("zk")), ca, server);
  }

  @AfterAll
  static void stop() {
    if (zk != null) {
      zk.close();
    }
  }

  @Test
  void aClientWithACertificateOfTheClustersCaReadsAndWritesAcrossARestart() throws Exception {
    Path stateDir = tmp.resolve("host1-state");
    TlsFiles tls = new TlsFiles(ca.caCert(), host.cert(), host.key());
    try (CuratorFramework c =
        client(zk.connectString(), ZooKeeperTls.configure(new ZKClientConfig(), tls, stateDir))) {
      assertThat(c.blockUntilConnected(30, TimeUnit.SECONDS)).isTrue();
      c.create().forPath("/written-over-tls", "x".getBytes(StandardCharsets.UTF_8));
      long session = c.getZookeeperClient().getZooKeeper().getSessionId();

      // A reconnect reads the key store again: it must still be there, whole.
      zk.restart();
      c.setData().forPath("/written-over-tls", "y".getBytes(StandardCharsets.UTF_8));
      assertThat(c.getData().forPath("/written-over-tls")).asString().isEqualTo("y");
      assertThat(c.getZookeeperClient().getZooKeeper().getSessionId()).isEqualTo(session);
    }
    // The key store holds the key: only its owner may read it.
    Path keyStore = stateDir.resolve(ZooKeeperTls.KEY_STORE);
    assertThat(PosixFilePermissions.toString(Files.getPosixFilePermissions(keyStore)))
        .isEqualTo("rw-------");
    // Started again without TLS, the daemon leaves no copy of the key behind, not even one that a
    // start which died half-way through writing it left.
    Path halfWritten = stateDir.resolve(ZooKeeperTls.KEY_STORE + "12345.new");
    Files.writeString(halfWritten, "-----BEGIN PRIVATE KEY-----");
    ZooKeeperTls.configure(new ZKClientConfig(), null, stateDir);
    assertThat(keyStore).doesNotExist();
    assertThat(halfWritten).doesNotExist();
  }

  @Test
  void filesThatDoNotGoTogetherOrAnOpenDirectoryAreRefusedBeforeAnyConnection() throws Exception {
    Path dir = Files.createTempDirectory(tmp, "bad");
    assertThatThrownBy(
            () ->
                ZooKeeperTls.configure(
                    new ZKClientConfig(), new TlsFiles(ca.caCert(), host.cert(), rogue.key()), dir))
        .isInstanceOf(IllegalArgumentException.class)
        .hasMessageContaining("is not the key of certificate");
    assertThatThrownBy(
            () ->
                ZooKeeperTls.configure(
                    new ZKClientConfig(), new TlsFiles(host.key(), host.cert(), host.key()), dir))
        .isInstanceOf(IllegalArgumentException.class)
        .hasMessageContaining("is not a CA");
    Files.setPosixFilePermissions(dir, PosixFilePermissions.fromString("rwxrwxrwx"));
    assertThatThrownBy(
            () ->
                ZooKeeperTls.configure(
                    new ZKClientConfig(), new TlsFiles(ca.caCert(), host.cert(), host.key()), dir))
        .isInstanceOf(IllegalArgumentException.class)
        .hasMessageContaining("writable by its owner only");
    assertThat(dir.resolve(ZooKeeperTls.KEY_STORE)).doesNotExist();
    assertThatThrownBy(
            () ->
                ZooKeeperTls.configure(
                    new ZKClientConfig(), new TlsFiles(ca.caCert(), host.cert(), host.key()), null))
        .isInstanceOf(IllegalArgumentException.class)
        .hasMessageContaining("needs a private directory");
  }

  @Test
  void clientsWithoutACertificateOfTheClustersCaOrTrustInItAreRefused() throws Exception {
    refused("plain text", new ZKClientConfig());
    refused("no certificate", configured(new TlsFiles(ca.caCert(), null, null)));
    refused(
        "another CA's certificate",
        configured(new TlsFiles(ca.caCert(), rogue.cert(), rogue.key())));
    refused(
        "trusting another CA for the server",
        configured(new TlsFiles(rogueCa.caCert(), host.cert(), host.key())));
    // The server's certificate names 127.0.0.1 only: reached as localhost, it is not trusted.
    TlsFiles good = new TlsFiles(ca.caCert(), host.cert(), host.key());
    try (CuratorFramework c =
        client(zk.connectString().replace("127.0.0.1", "localhost"), configured(good))) {
      assertThat(c.blockUntilConnected(5, TimeUnit.SECONDS)).as("by another name").isFalse();
    }
  }

  private static ZKClientConfig configured(TlsFiles tls) throws Exception {
    return ZooKeeperTls.configure(
        new ZKClientConfig(), tls, Files.createTempDirectory(tmp, "refused"));
  }

  private static void refused(String what, ZKClientConfig config) throws Exception {
    try (CuratorFramework c = client(zk.connectString(), config)) {
      assertThat(c.blockUntilConnected(5, TimeUnit.SECONDS)).as(what).isFalse();
    }
  }

  private static CuratorFramework client(String connectString, ZKClientConfig config) {
    CuratorFramework c =
        CuratorFrameworkFactory.builder()
            .connectString(connectString)
            .sessionTimeoutMs(30_000)
            .connectionTimeoutMs(5_000)
            .retryPolicy(new RetryOneTime(100))
            .zkClientConfig(config)
            .build();
    c.start();
    return c;
  }
}
