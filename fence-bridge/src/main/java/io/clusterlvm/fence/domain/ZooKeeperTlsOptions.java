package io.clusterlvm.fence.domain;

import io.clusterlvm.dlm.client.TlsFiles;
import java.nio.file.Path;
import picocli.CommandLine;
import picocli.CommandLine.Option;
import picocli.CommandLine.Spec;

/**
 * The {@code --zk-tls-*} options of the daemons that reach ZooKeeper (dlm-server, clvm-agent), as a
 * picocli mixin: see {@link ZooKeeperTls}.
 */
public final class ZooKeeperTlsOptions {
  @Spec(Spec.Target.MIXEE)
  CommandLine.Model.CommandSpec spec;

  @Option(
      names = "--zk-tls-ca",
      paramLabel = "FILE",
      description =
          "Reach ZooKeeper over TLS, trusting this CA for the ensemble's certificates (PEM; they"
              + " must name the hosts of --zookeeper). Needs the ensemble's secureClientPort."
              + " Without it, the JDK's default CAs are trusted.")
  Path ca;

  @Option(
      names = "--zk-tls-cert",
      paramLabel = "FILE",
      description =
          "This daemon's certificate for ZooKeeper (PEM), for an ensemble with"
              + " ssl.clientAuth=need.")
  Path cert;

  @Option(
      names = "--zk-tls-key",
      paramLabel = "FILE",
      description =
          "The private key of --zk-tls-cert (PKCS#8 PEM); ZooKeeper's client reads it from a copy"
              + " beside the certificate in the daemon's data or state directory, readable by"
              + " its user only.")
  Path key;

  /** The files given, null for plain text; a usage error if they do not go together. */
  public TlsFiles files() {
    try {
      return TlsFiles.given(ca, cert, key);
    } catch (IllegalArgumentException e) {
      throw new CommandLine.ParameterException(spec.commandLine(), e.getMessage());
    }
  }
}
