package io.clusterlvm.it.ha;

import java.io.IOException;
import java.net.InetAddress;
import java.net.ServerSocket;
import java.util.ArrayList;
import java.util.HashSet;
import java.util.List;
import java.util.Set;
import java.util.concurrent.ThreadLocalRandom;
import org.apache.curator.test.InstanceSpec;
import org.apache.curator.test.TestingCluster;
import org.apache.zookeeper.util.ServiceUtils;

/** ZooKeeper ensembles for the tests that stop and restart ZooKeeper servers. */
final class Ensembles {
  private Ensembles() {}

  // Below the kernel's ephemeral range (32768-60999 by default), where outgoing connections get
  // their local ports.
  private static final int LOWEST = 20_000;
  private static final int BELOW = 32_000;

  /**
   * Three servers whose ports lie below the ephemeral range. A restarted server binds its ports
   * again; one from the ephemeral range (as curator-test picks them) may meanwhile be the local
   * port of some outgoing connection. ZooKeeper then gives up its election listener and exits the
   * JVM (exit code 14), which took down every test after it in the same fork. Such an exit is
   * logged instead from now on, and the test at hand fails on its own.
   */
  static TestingCluster three() throws IOException {
    ServiceUtils.setSystemExitProcedure(ServiceUtils.LOG_ONLY);
    Set<Integer> taken = new HashSet<>();
    List<InstanceSpec> specs = new ArrayList<>();
    for (int id = 1; id <= 3; id++) {
      specs.add(new InstanceSpec(null, port(taken), port(taken), port(taken), true, id));
    }
    return new TestingCluster(specs);
  }

  private static int port(Set<Integer> taken) throws IOException {
    InetAddress loopback = InetAddress.getLoopbackAddress();
    for (int attempt = 0; attempt < 1000; attempt++) {
      int p = ThreadLocalRandom.current().nextInt(LOWEST, BELOW);
      if (!taken.add(p)) {
        continue;
      }
      try (ServerSocket probe = new ServerSocket(p, 1, loopback)) {
        return p;
      } catch (IOException inUse) {
        // try another
      }
    }
    throw new IOException("no free port in " + LOWEST + ".." + BELOW);
  }
}
