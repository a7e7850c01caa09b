package io.clusterlvm.dlm.server;

import io.clusterlvm.dlm.client.TlsFiles;
import java.net.InetSocketAddress;
import java.nio.file.Path;
import java.time.Duration;

/**
 * How a dlm-server runs.
 *
 * @param zookeeper connect string of the ensemble; null to start an embedded single-node one
 * @param dataDir where the embedded ZooKeeper keeps its data
 * @param listen the gRPC address to bind
 * @param advertise the address clients reach this server at, as followers name the leader
 * @param zkRoot the znode under which everything of this cluster lives
 * @param sessionGrace how long a client session orphaned by a restart or fail-over may take to
 *     resume before its non-persistent locks are released
 * @param zkSessionTimeout the ZooKeeper session timeout of the server itself
 * @param abruptEndGrace how long locks of a session that broke off (no clean close) wait before the
 *     server checks whether the node still holds its membership lease; longer than the agents'
 *     lease timeout, so that a dead host's locks are never released by mistake
 * @param embeddedZkPort the port of the embedded ZooKeeper; 0 for a free one
 * @param tls null to serve in plain text; else this server's certificate and key, and, if a CA is
 *     given, the CA whose certificates clients must present (mutual TLS)
 * @param zkTls null to reach ZooKeeper in plain text; else the CA of the ensemble's certificates
 *     and this server's client certificate and key ({@code
 *     io.clusterlvm.fence.domain.ZooKeeperTls})
 */
public record DlmServerConfig(
    String zookeeper,
    Path dataDir,
    InetSocketAddress listen,
    String advertise,
    String zkRoot,
    Duration sessionGrace,
    Duration zkSessionTimeout,
    Duration abruptEndGrace,
    int embeddedZkPort,
    TlsFiles tls,
    TlsFiles zkTls) {

  public DlmServerConfig {
    if (tls != null && tls.certChain() == null) {
      throw new IllegalArgumentException(
          "a dlm-server with TLS needs its certificate and key (--tls-cert, --tls-key)");
    }
  }

  public static DlmServerConfig forTest(String zookeeper) {
    return new DlmServerConfig(
        zookeeper,
        null,
        new InetSocketAddress("127.0.0.1", 0),
        null,
        "/clusterlvm",
        Duration.ofSeconds(5),
        Duration.ofSeconds(10),
        Duration.ofSeconds(6),
        0,
        null,
        null);
  }

  public DlmServerConfig withRoot(String root) {
    return new DlmServerConfig(
        zookeeper,
        dataDir,
        listen,
        advertise,
        root,
        sessionGrace,
        zkSessionTimeout,
        abruptEndGrace,
        embeddedZkPort,
        tls,
        zkTls);
  }

  public DlmServerConfig withSessionGrace(Duration grace) {
    return new DlmServerConfig(
        zookeeper,
        dataDir,
        listen,
        advertise,
        zkRoot,
        grace,
        zkSessionTimeout,
        abruptEndGrace,
        embeddedZkPort,
        tls,
        zkTls);
  }

  public DlmServerConfig withAbruptEndGrace(Duration grace) {
    return new DlmServerConfig(
        zookeeper,
        dataDir,
        listen,
        advertise,
        zkRoot,
        sessionGrace,
        zkSessionTimeout,
        grace,
        embeddedZkPort,
        tls,
        zkTls);
  }

  public DlmServerConfig withListen(InetSocketAddress address) {
    return new DlmServerConfig(
        zookeeper,
        dataDir,
        address,
        advertise,
        zkRoot,
        sessionGrace,
        zkSessionTimeout,
        abruptEndGrace,
        embeddedZkPort,
        tls,
        zkTls);
  }

  public DlmServerConfig withTls(TlsFiles files) {
    return new DlmServerConfig(
        zookeeper,
        dataDir,
        listen,
        advertise,
        zkRoot,
        sessionGrace,
        zkSessionTimeout,
        abruptEndGrace,
        embeddedZkPort,
        files,
        zkTls);
  }
}
