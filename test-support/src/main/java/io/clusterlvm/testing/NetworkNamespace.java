package io.clusterlvm.testing;

import java.io.IOException;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.AtomicReference;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * A simulated host's network: a network namespace joined to this one by point-to-point veth links,
 * so that a test can cut the host off from some peers (and not others) the way a failed switch port
 * or cable would: packets vanish, no connection is reset, and each side finds out only by its own
 * timeouts.
 *
 * <p>Every link is its own /30 from 10.213.0.0/16, with this side's end at {@link Link#hostAddress}
 * and the namespace's end at {@link Link#namespaceAddress}. A process started with {@link
 * #execPrefix} runs inside the namespace: it reaches this side's processes at a link's host
 * address, and they reach it at the namespace address.
 *
 * <p>Names carry this JVM's pid and a counter; {@link #close} deletes exactly the namespace and
 * links this object made (deleting a namespace deletes its veth ends, and with them their peers). A
 * JVM shutdown hook closes a namespace a test forgot to close.
 */
public final class NetworkNamespace implements AutoCloseable {
  private static final Logger LOG = LoggerFactory.getLogger(NetworkNamespace.class);
  private static final Duration IP_TIMEOUT = Duration.ofSeconds(30);
  private static final AtomicInteger NAMESPACES = new AtomicInteger();
  private static final AtomicInteger LINKS = new AtomicInteger();
  private static final long PID = ProcessHandle.current().pid();

  /**
   * One veth pair: {@code hostInterface} on this side, {@code namespaceInterface} in the namespace,
   * each end with its address.
   */
  public record Link(
      String hostInterface,
      String namespaceInterface,
      String hostAddress,
      String namespaceAddress) {}

  private final String name;
  private final String ip;
  private final String tc;
  private final List<Link> links = new ArrayList<>();
  private final AtomicReference<Thread> shutdownHook = new AtomicReference<>();

  private NetworkNamespace(String name, String ip, String tc) {
    this.name = name;
    this.ip = ip;
    this.tc = tc;
  }

  /**
   * Skips the calling test unless this machine can make network namespaces (root, iproute2). As
   * root (CI, and ./test, which installs iproute2) a missing piece fails the test instead.
   */
  public static void assumeAvailable() {
    LoopVolumeGroup.requireOrSkip(
        "root".equals(System.getProperty("user.name")), "needs root to make network namespaces");
    LoopVolumeGroup.requireOrSkip(
        LoopVolumeGroup.findBinary("ip") != null && LoopVolumeGroup.findBinary("tc") != null,
        "needs ip and tc (apt-get install iproute2)");
  }

  /** A new namespace with its loopback up and no links yet. */
  public static NetworkNamespace create() throws IOException, InterruptedException {
    String name = "clvmt-" + PID + "-" + NAMESPACES.incrementAndGet();
    NetworkNamespace ns =
        new NetworkNamespace(
            name, LoopVolumeGroup.requireBinary("ip"), LoopVolumeGroup.requireBinary("tc"));
    ns.ip("netns", "add", name);
    Thread hook = new Thread(ns::closeQuietly, "netns-cleanup-" + name);
    ns.shutdownHook.set(hook);
    Runtime.getRuntime().addShutdownHook(hook);
    try {
      ns.ip("-n", name, "link", "set", "lo", "up");
    } catch (IOException | RuntimeException e) {
      ns.closeQuietly();
      throw e;
    }
    LOG.info("[netns {}] created", name);
    return ns;
  }

  public String name() {
    return name;
  }

  /** A new link between this side and the namespace, both ends up and addressed. */
  public synchronized Link link() throws IOException, InterruptedException {
    int n = LINKS.incrementAndGet();
    // Interface names are at most 15 characters and unique on this side: pid and counter.
    String base = "v" + (PID % 1_000_000) + "x" + n;
    String hostIf = base + "h";
    String nsIf = base + "n";
    // A /30 per link: 16,384 of them in 10.213.0.0/16, chosen by pid and counter so that two
    // test JVMs on one machine are unlikely to pick the same one; a pick that is in use is
    // refused below rather than shared.
    int block = (int) ((PID * 64 + n) % 16_384);
    String prefix = "10.213." + (block / 64) + ".";
    String hostAddress = prefix + ((block % 64) * 4 + 1);
    String nsAddress = prefix + ((block % 64) * 4 + 2);
    String inUse = ip("-4", "-o", "addr", "show", "to", prefix + ((block % 64) * 4) + "/30");
    if (!inUse.isBlank()) {
      throw new IOException("address block of " + hostAddress + "/30 is in use: " + inUse);
    }
    ip("link", "add", hostIf, "type", "veth", "peer", "name", nsIf, "netns", name);
    Link link = new Link(hostIf, nsIf, hostAddress, nsAddress);
    links.add(link);
    ip("addr", "add", hostAddress + "/30", "dev", hostIf);
    ip("link", "set", hostIf, "up");
    ip("-n", name, "addr", "add", nsAddress + "/30", "dev", nsIf);
    ip("-n", name, "link", "set", nsIf, "up");
    LOG.info("[netns {}] link {} {} <-> {} {}", name, hostIf, hostAddress, nsIf, nsAddress);
    return link;
  }

  /**
   * Cuts {@code link}: both ends drop every packet they would send (a {@code blackhole} queueing
   * discipline), silently. The interfaces stay up and keep their routes: taking an end down would
   * remove its route, and this side would then send the namespace's packets to its default gateway
   * instead of dropping them. Undone by {@link #heal}.
   */
  public void cut(Link link) throws IOException, InterruptedException {
    tc("qdisc", "replace", "dev", link.hostInterface(), "root", "blackhole");
    tc("-n", name, "qdisc", "replace", "dev", link.namespaceInterface(), "root", "blackhole");
    LOG.info("[netns {}] cut {}", name, link.hostInterface());
  }

  /** Lets {@code link} carry packets again after {@link #cut}. */
  public void heal(Link link) throws IOException, InterruptedException {
    tc("qdisc", "del", "dev", link.hostInterface(), "root");
    tc("-n", name, "qdisc", "del", "dev", link.namespaceInterface(), "root");
    LOG.info("[netns {}] healed {}", name, link.hostInterface());
  }

  /**
   * What runs a command inside this namespace when put before it: {@code ip netns exec NAME}, which
   * execs the command (the process started is the command itself).
   */
  public List<String> execPrefix() {
    return List.of(ip, "netns", "exec", name);
  }

  /**
   * Deletes the namespace (and with it every link: a veth pair goes when either end goes), then any
   * link end left on this side. Processes still running in the namespace lose their network; the
   * caller stops them first.
   */
  @Override
  public void close() throws IOException, InterruptedException {
    Thread hook = shutdownHook.getAndSet(null);
    if (hook == null) {
      return; // closed already
    }
    try {
      Runtime.getRuntime().removeShutdownHook(hook);
    } catch (IllegalStateException shuttingDown) {
      // this is the hook running
    }
    IOException failed = null;
    try {
      ip("netns", "delete", name);
    } catch (IOException e) {
      failed = e;
    }
    for (Link l : links) {
      // The kernel deletes a namespace's devices (and their veth peers) in the background: an end
      // may go while it is deleted here, which is fine; one that stays is a failure.
      SimulatedLvmHost.Result r = run(ip, "link", "delete", l.hostInterface());
      if (!r.succeeded() && run(ip, "link", "show", l.hostInterface()).succeeded()) {
        IOException e = new IOException(r.toString());
        if (failed == null) {
          failed = e;
        } else {
          failed.addSuppressed(e);
        }
      }
    }
    if (failed != null) {
      throw failed;
    }
    LOG.info("[netns {}] deleted", name);
  }

  private void closeQuietly() {
    try {
      close();
    } catch (Exception e) {
      LOG.warn("[netns {}] cleanup failed", name, e);
    }
  }

  /** Runs {@code ip ARGS}; returns its output, or throws with it if ip fails. */
  private String ip(String... args) throws IOException, InterruptedException {
    return checked(ip, args);
  }

  /** Runs {@code tc ARGS}, or throws with its output. */
  private void tc(String... args) throws IOException, InterruptedException {
    checked(tc, args);
  }

  private static String checked(String binary, String... args)
      throws IOException, InterruptedException {
    SimulatedLvmHost.Result r = run(binary, args);
    if (!r.succeeded()) {
      throw new IOException(r.toString());
    }
    return r.stdout();
  }

  private static SimulatedLvmHost.Result run(String binary, String... args)
      throws IOException, InterruptedException {
    List<String> cmd = new ArrayList<>(List.of(binary));
    cmd.addAll(List.of(args));
    return LoopVolumeGroup.exec(cmd, Map.of(), IP_TIMEOUT);
  }

  @Override
  public String toString() {
    return "netns " + name;
  }
}
