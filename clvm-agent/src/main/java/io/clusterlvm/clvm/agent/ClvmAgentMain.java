package io.clusterlvm.clvm.agent;

import io.clusterlvm.clvm.rpc.ClvmServer;
import io.clusterlvm.dlm.client.Durations;
import io.clusterlvm.dlm.client.TlsFiles;
import io.clusterlvm.fence.domain.ZooKeeperTlsOptions;
import java.io.IOException;
import java.net.InetAddress;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.Callable;
import java.util.concurrent.CountDownLatch;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;
import picocli.CommandLine;
import picocli.CommandLine.Command;
import picocli.CommandLine.Mixin;
import picocli.CommandLine.Option;
import picocli.CommandLine.Spec;

/** {@code clvm-agent}: the per-host daemon. */
@Command(
    name = "clvm-agent",
    mixinStandardHelpOptions = true,
    version = "clvm-agent 0.1.0",
    description = {
      "Per-host agent: holds this host's membership in the fence domain (its own ZooKeeper"
          + " session), runs the fence bridge, and runs LVM commands under cluster locks for the"
          + " clvm wrapper.",
      "SIGTERM deactivates the LVs this host holds activation locks on and leaves the fence"
          + " domain cleanly (locks released, not fenced). If an LV stays in use (a running VM),"
          + " it keeps its lease and every lock instead and hands them to the next clvm-agent on"
          + " this boot, which must start within --zk-session-timeout, or the host is fenced."
          + " A fence already requested or under way goes on after a leave."
    })
public final class ClvmAgentMain implements Callable<Integer> {
  private static final Logger LOG = LoggerFactory.getLogger(ClvmAgentMain.class);

  @Option(
      names = "--node",
      description = "This host's node name in cluster.conf (default: hostname).")
  String node;

  @Option(
      names = "--cluster-conf",
      paramLabel = "FILE",
      description = "cluster.conf to publish if its config_version is newer than the active one.")
  Path clusterConf;

  @Option(
      names = "--zookeeper",
      required = true,
      paramLabel = "HOST:PORT[,...]",
      description = "ZooKeeper ensemble (the same as the dlm-servers use).")
  String zookeeper;

  @Option(
      names = "--dlm-servers",
      defaultValue = "127.0.0.1:7950",
      paramLabel = "HOST:PORT[,...]",
      description = "dlm-servers (default: ${DEFAULT-VALUE}).")
  String dlmServers;

  @Option(
      names = "--dlm-tls-ca",
      paramLabel = "FILE",
      description = "Talk TLS to the dlm-servers, trusting certificates this CA signed (PEM).")
  Path dlmTlsCa;

  @Option(
      names = "--dlm-tls-cert",
      paramLabel = "FILE",
      description =
          "This host's client certificate for the dlm-servers (PEM), for servers that require"
              + " one (dlm-server --tls-ca).")
  Path dlmTlsCert;

  @Option(
      names = "--dlm-tls-key",
      paramLabel = "FILE",
      description = "The private key of --dlm-tls-cert (PKCS#8 PEM).")
  Path dlmTlsKey;

  @Mixin ZooKeeperTlsOptions zkTlsOptions;

  @Option(
      names = "--zk-root",
      defaultValue = "/clusterlvm",
      description = "ZooKeeper root of this cluster (default: ${DEFAULT-VALUE}).")
  String zkRoot;

  @Option(
      names = "--socket",
      defaultValue = "/run/clvm-agent/clvm.sock",
      description = "Unix socket for the clvm wrapper (default: ${DEFAULT-VALUE}).")
  Path socket;

  @Option(
      names = "--tcp-listen",
      paramLabel = "HOST:PORT",
      description =
          "Also serve the clvm API over TCP here, on a loopback address only (e.g."
              + " 127.0.0.1:7960): it has no authentication.")
  String tcpListen;

  @Option(
      names = "--lvm",
      defaultValue = "/sbin/lvm",
      description = "The lvm binary (default: ${DEFAULT-VALUE}).")
  Path lvm;

  @Option(names = "--lvm-system-dir", description = "LVM_SYSTEM_DIR for lvm runs.")
  Path lvmSystemDir;

  @Option(
      names = "--lvm-arg",
      description =
          "Extra argument for every lvm run (repeatable),"
              + " e.g. --lvm-arg=--driverloaded --lvm-arg=n where device-mapper is absent.")
  List<String> lvmArgs = new ArrayList<>();

  @Option(
      names = "--zk-session-timeout",
      defaultValue = "10s",
      converter = Durations.class,
      description = "Membership lease: the ZooKeeper session timeout (default: ${DEFAULT-VALUE}).")
  Duration zkSessionTimeout;

  @Option(
      names = "--fence-agent-timeout",
      defaultValue = "60s",
      converter = Durations.class,
      description = "Time limit of each fence agent run (default: ${DEFAULT-VALUE}).")
  Duration fenceAgentTimeout;

  @Option(
      names = "--lock-timeout",
      defaultValue = "60s",
      converter = Durations.class,
      description =
          "How long an LVM command waits for its cluster locks (default: ${DEFAULT-VALUE}).")
  Duration lockTimeout;

  @Option(
      names = "--lvm-timeout",
      defaultValue = "2m",
      converter = Durations.class,
      description = {
        "How long one lvm run may take before the agent kills it (default: ${DEFAULT-VALUE}).",
        "A killed lvm's outcome is unknown: the VG's seqno is marked unknown, and the activation"
            + " locks of LVs that exist afterwards are kept."
      })
  Duration lvmTimeout;

  @Option(
      names = "--dlm-retry-window",
      defaultValue = "30s",
      converter = Durations.class,
      description = {
        "How long the agent's calls to the lock service keep retrying while no dlm-server leader",
        "answers, e.g. during a fail-over (default: ${DEFAULT-VALUE}). A lock session bound to",
        "this host's lease outlives it: its locks stay while the lease lives."
      })
  Duration dlmRetryWindow;

  @Option(
      names = "--leave-drain",
      defaultValue = "30s",
      converter = Durations.class,
      description = {
        "How long a leave (dlmctl leave) or a stop (SIGTERM) waits for the commands in flight",
        "before it stops their lvm (default: ${DEFAULT-VALUE}). A stopped lvm's outcome is",
        "unknown: the VG's seqno is marked unknown."
      })
  Duration leaveDrain;

  @Option(
      names = "--state-dir",
      defaultValue = "/var/lib/clvm-agent",
      description =
          "Where the agent keeps its log of metadata changes (default: ${DEFAULT-VALUE}).")
  Path stateDir;

  @Option(
      names = "--boot-id-file",
      defaultValue = "/proc/sys/kernel/random/boot_id",
      description = "Where this boot's id is read from (default: ${DEFAULT-VALUE}).")
  Path bootIdFile;

  @Spec CommandLine.Model.CommandSpec spec;

  /** The TLS files given, null for plain text; a usage error if they do not go together. */
  private TlsFiles tls(Path ca, Path cert, Path key) {
    try {
      return TlsFiles.given(ca, cert, key);
    } catch (IllegalArgumentException e) {
      throw new CommandLine.ParameterException(spec.commandLine(), e.getMessage());
    }
  }

  @Override
  public Integer call() throws Exception {
    if (tcpListen != null) {
      try {
        ClvmServer.tcpAddress(tcpListen);
      } catch (IllegalArgumentException e) {
        throw new CommandLine.ParameterException(spec.commandLine(), e.getMessage());
      }
    }
    String n = node != null ? node : InetAddress.getLocalHost().getHostName();
    String bootId = read(bootIdFile);
    ClvmAgent agent =
        new ClvmAgent(
            new AgentConfig(
                n,
                clusterConf,
                zookeeper,
                dlmServers,
                zkRoot,
                socket,
                tcpListen,
                lvm,
                lvmSystemDir,
                List.copyOf(lvmArgs),
                zkSessionTimeout,
                fenceAgentTimeout,
                lockTimeout,
                lvmTimeout,
                bootId,
                stateDir,
                dlmRetryWindow,
                leaveDrain,
                tls(dlmTlsCa, dlmTlsCert, dlmTlsKey),
                zkTlsOptions.files()));
    agent.start();
    CountDownLatch stopped = new CountDownLatch(1);
    Runtime.getRuntime()
        .addShutdownHook(
            new Thread(
                () -> {
                  LOG.info(
                      "[node={}] stop signal: deactivating this host's LVs, then leaving cleanly",
                      n);
                  agent.close();
                  stopped.countDown();
                },
                "clvm-agent-shutdown"));
    stopped.await();
    return 0;
  }

  private static String read(Path file) throws IOException {
    return Files.readString(file, StandardCharsets.US_ASCII).trim();
  }

  public static void main(String[] args) {
    System.exit(new CommandLine(new ClvmAgentMain()).execute(args));
  }
}
