package io.clusterlvm.dlm.server;

import io.clusterlvm.dlm.client.Durations;
import io.clusterlvm.dlm.client.TlsFiles;
import io.clusterlvm.fence.domain.ZooKeeperTlsOptions;
import java.net.InetSocketAddress;
import java.nio.file.Path;
import java.time.Duration;
import java.util.concurrent.Callable;
import java.util.concurrent.CountDownLatch;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;
import picocli.CommandLine;
import picocli.CommandLine.Command;
import picocli.CommandLine.Mixin;
import picocli.CommandLine.Option;
import picocli.CommandLine.Spec;

/** {@code dlm-server}: the lock server daemon. */
@Command(
    name = "dlm-server",
    mixinStandardHelpOptions = true,
    version = "dlm-server 0.1.0",
    description = {
      "Distributed lock manager backed by ZooKeeper.",
      "With no --zookeeper, starts an embedded single-node ZooKeeper in --data-dir (a trial on"
          + " one machine). Stops cleanly on SIGTERM."
    })
public final class DlmServerMain implements Callable<Integer> {
  private static final Logger LOG = LoggerFactory.getLogger(DlmServerMain.class);

  @Option(
      names = "--zookeeper",
      paramLabel = "HOST:PORT[,HOST:PORT...]",
      description = "ZooKeeper ensemble to use; omit to run an embedded single-node ZooKeeper.")
  String zookeeper;

  @Option(
      names = "--data-dir",
      defaultValue = "/var/lib/clusterlvm/dlm-server",
      description =
          "Where the embedded ZooKeeper keeps its data, and ZooKeeper's TLS key store with"
              + " --zk-tls-cert (default: ${DEFAULT-VALUE}).")
  Path dataDir;

  @Option(
      names = "--listen",
      defaultValue = "0.0.0.0:7950",
      paramLabel = "HOST:PORT",
      description = "gRPC address to listen on (default: ${DEFAULT-VALUE}).")
  String listen;

  @Option(
      names = "--advertise",
      paramLabel = "HOST:PORT",
      description = "Address clients use to reach this server (default: hostname and port).")
  String advertise;

  @Option(
      names = "--zk-root",
      defaultValue = "/clusterlvm",
      description =
          "ZooKeeper path under which this cluster's records live (default: ${DEFAULT-VALUE}).")
  String zkRoot;

  @Option(
      names = "--embedded-zk-port",
      defaultValue = "2181",
      description = "Port of the embedded ZooKeeper on 127.0.0.1 (default: ${DEFAULT-VALUE}).")
  int embeddedZkPort;

  @Option(
      names = "--session-grace",
      defaultValue = "15s",
      converter = Durations.class,
      description =
          "After a restart or fail-over, how long a client session may take to come back before"
              + " its non-persistent locks are released (default: ${DEFAULT-VALUE}).")
  Duration sessionGrace;

  @Option(
      names = "--zk-session-timeout",
      defaultValue = "10s",
      converter = Durations.class,
      description = "ZooKeeper session timeout of this server (default: ${DEFAULT-VALUE}).")
  Duration zkSessionTimeout;

  @Option(
      names = "--session-end-grace",
      defaultValue = "15s",
      converter = Durations.class,
      description =
          "When a client session of a node with a membership lease breaks off, how long its locks"
              + " wait before the server checks that the node is still alive; keep it above the"
              + " agents' ZooKeeper session timeout (default: ${DEFAULT-VALUE}).")
  Duration sessionEndGrace;

  @Option(
      names = "--tls-cert",
      paramLabel = "FILE",
      description =
          "Serve over TLS with this certificate (PEM; its subject alternative names must name"
              + " the host clients connect to, and the --advertise host).")
  Path tlsCert;

  @Option(
      names = "--tls-key",
      paramLabel = "FILE",
      description = "The private key of --tls-cert (PKCS#8 PEM, 'BEGIN PRIVATE KEY').")
  Path tlsKey;

  @Option(
      names = "--tls-ca",
      paramLabel = "FILE",
      description =
          "Require clients to present a certificate signed by this CA (mutual TLS); with TLS"
              + " only. Without it any client that trusts this server's certificate may connect.")
  Path tlsCa;

  @Mixin ZooKeeperTlsOptions zkTlsOptions;

  @Spec CommandLine.Model.CommandSpec spec;

  /** The TLS files given, null for plain text; a usage error if they do not go together. */
  private TlsFiles tls() {
    TlsFiles tls;
    try {
      tls = TlsFiles.given(tlsCa, tlsCert, tlsKey);
    } catch (IllegalArgumentException e) {
      throw new CommandLine.ParameterException(spec.commandLine(), e.getMessage());
    }
    if (tls != null && tls.certChain() == null) {
      throw new CommandLine.ParameterException(
          spec.commandLine(), "TLS needs both --tls-cert and --tls-key");
    }
    return tls;
  }

  /**
   * The ZooKeeper TLS files given, null for plain text; a usage error if they do not go together.
   */
  private TlsFiles zkTls() {
    TlsFiles zkTls = zkTlsOptions.files();
    if (zkTls != null && (zookeeper == null || zookeeper.isBlank())) {
      throw new CommandLine.ParameterException(
          spec.commandLine(),
          "--zk-tls-* are for an ensemble given with --zookeeper; the embedded ZooKeeper listens"
              + " on 127.0.0.1 only, in plain text");
    }
    return zkTls;
  }

  @Override
  public Integer call() throws Exception {
    TlsFiles tls = tls();
    TlsFiles zkTls = zkTls();
    if (tls == null) {
      LOG.warn(
          "serving in plain text: any host that reaches {} can take, release and purge locks;"
              + " see --tls-cert and --tls-ca",
          listen);
    } else if (tls.trustedCa() == null) {
      LOG.warn(
          "serving TLS without --tls-ca: clients are not asked for a certificate, so any host"
              + " that reaches {} can take, release and purge locks",
          listen);
    }
    DlmServerConfig config =
        new DlmServerConfig(
            zookeeper,
            dataDir,
            parseAddress(listen),
            advertise,
            zkRoot,
            sessionGrace,
            zkSessionTimeout,
            sessionEndGrace,
            embeddedZkPort,
            tls,
            zkTls);
    DlmServer server = DlmServer.start(config);
    CountDownLatch stopped = new CountDownLatch(1);
    Runtime.getRuntime()
        .addShutdownHook(
            new Thread(
                () -> {
                  LOG.info("received a stop signal; shutting down");
                  server.close();
                  stopped.countDown();
                },
                "dlm-shutdown"));
    server.awaitTermination();
    stopped.await();
    return 0;
  }

  static InetSocketAddress parseAddress(String hostPort) {
    int colon = hostPort.lastIndexOf(':');
    if (colon < 0) {
      throw new CommandLine.TypeConversionException(
          "'" + hostPort + "' is not HOST:PORT (e.g. 0.0.0.0:7950)");
    }
    try {
      return new InetSocketAddress(
          hostPort.substring(0, colon), Integer.parseInt(hostPort.substring(colon + 1)));
    } catch (NumberFormatException e) {
      throw new CommandLine.TypeConversionException("bad port in '" + hostPort + "'");
    }
  }

  public static void main(String[] args) {
    System.exit(new CommandLine(new DlmServerMain()).execute(args));
  }
}
