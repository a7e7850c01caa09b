package io.clusterlvm.dlm.client;

import io.grpc.ChannelCredentials;
import io.grpc.InsecureChannelCredentials;
import io.grpc.TlsChannelCredentials;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;

/**
 * TLS for the connections to the lock service, from PEM files: the certificate authority that
 * signed the servers' certificates, and this client's own certificate and key, which a server that
 * requires client certificates checks (mutual TLS). The server's certificate must name the host the
 * client connects to (a DNS or IP subject alternative name), as given in its server list or as a
 * follower names the leader (its advertised address).
 *
 * @param trustedCa the CA certificate(s) to trust; null for the JDK's default trust store
 * @param certChain this client's certificate (chain); null to present none
 * @param privateKey the key of {@code certChain}, PKCS#8 PEM ("BEGIN PRIVATE KEY"); null with it
 */
public record TlsFiles(Path trustedCa, Path certChain, Path privateKey) {

  public TlsFiles {
    if ((certChain == null) != (privateKey == null)) {
      throw new IllegalArgumentException(
          "a TLS certificate needs its key, and a key its certificate: give both or neither");
    }
    requireReadable(trustedCa, "TLS CA certificate");
    requireReadable(certChain, "TLS certificate");
    requireReadable(privateKey, "TLS private key");
  }

  /**
   * The files given on a command line: null (plain text) when none is, else checked as the
   * constructor checks them.
   */
  public static TlsFiles given(Path trustedCa, Path certChain, Path privateKey) {
    if (trustedCa == null && certChain == null && privateKey == null) {
      return null;
    }
    return new TlsFiles(trustedCa, certChain, privateKey);
  }

  /** Credentials for a client channel: TLS with {@code tls}, or plain text if it is null. */
  public static ChannelCredentials channelCredentials(TlsFiles tls) {
    return tls == null ? InsecureChannelCredentials.create() : tls.clientCredentials();
  }

  private ChannelCredentials clientCredentials() {
    TlsChannelCredentials.Builder b = TlsChannelCredentials.newBuilder();
    try {
      if (trustedCa != null) {
        b.trustManager(trustedCa.toFile());
      }
      if (certChain != null) {
        b.keyManager(certChain.toFile(), privateKey.toFile());
      }
    } catch (IOException | RuntimeException e) {
      throw new IllegalArgumentException(
          "cannot load TLS files " + this + ": " + e.getMessage(), e);
    }
    return b.build();
  }

  /** Checks that {@code file}, if given, is a readable file; says which one it is if not. */
  private static void requireReadable(Path file, String what) {
    if (file != null && !(Files.isRegularFile(file) && Files.isReadable(file))) {
      throw new IllegalArgumentException(what + " " + file + " is not a readable file");
    }
  }

  @Override
  public String toString() {
    return "(ca " + trustedCa + ", certificate " + certChain + ", key " + privateKey + ")";
  }
}
