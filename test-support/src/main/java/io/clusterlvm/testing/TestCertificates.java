package io.clusterlvm.testing;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;

/**
 * A certificate authority made for a test with the real {@code openssl}, and certificates it signs:
 * PEM files in a directory the test owns, EC P-256 keys in PKCS#8, valid for two days.
 */
public final class TestCertificates {
  /** A certificate and its private key. */
  public record Issued(Path cert, Path key) {}

  private final Path dir;
  private final Path caCert;
  private final Path caKey;

  private TestCertificates(Path dir) {
    this.dir = dir;
    this.caCert = dir.resolve("ca.crt");
    this.caKey = dir.resolve("ca.key");
  }

  /** A new CA named {@code name}, its files in {@code dir}. */
  public static TestCertificates authority(Path dir, String name)
      throws IOException, InterruptedException {
    TestCertificates ca = new TestCertificates(dir);
    newKey(
        dir,
        ca.caKey,
        ca.caCert,
        name,
        "-x509",
        "-days",
        "2",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign");
    return ca;
  }

  public Path caCert() {
    return caCert;
  }

  /**
   * A certificate for {@code name}, for servers and clients alike, naming {@code altNames} (e.g.
   * "IP:127.0.0.1,DNS:localhost").
   */
  public Issued issue(String name, String altNames) throws IOException, InterruptedException {
    Path key = dir.resolve(name + ".key");
    Path csr = dir.resolve(name + ".csr");
    Path cert = dir.resolve(name + ".crt");
    Path ext = dir.resolve(name + ".ext");
    Files.writeString(
        ext,
        "subjectAltName=" + altNames + "\nextendedKeyUsage=serverAuth,clientAuth\n",
        StandardCharsets.UTF_8);
    newKey(dir, key, csr, name);
    openssl(
        dir,
        "x509",
        "-req",
        "-in",
        csr.toString(),
        "-CA",
        caCert.toString(),
        "-CAkey",
        caKey.toString(),
        "-CAcreateserial",
        "-out",
        cert.toString(),
        "-days",
        "2",
        "-extfile",
        ext.toString());
    return new Issued(cert, key);
  }

  /**
   * A new EC P-256 key in {@code key} (PKCS#8), and in {@code out} a request for {@code /CN=name},
   * or with "-x509" in {@code extra} a certificate it signs itself.
   */
  private static void newKey(Path dir, Path key, Path out, String name, String... extra)
      throws IOException, InterruptedException {
    List<String> args =
        new ArrayList<>(
            List.of(
                "req",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-keyout",
                key.toString(),
                "-out",
                out.toString(),
                "-subj",
                "/CN=" + name));
    args.addAll(List.of(extra));
    openssl(dir, args.toArray(String[]::new));
  }

  private static void openssl(Path dir, String... args) throws IOException, InterruptedException {
    List<String> cmd = new ArrayList<>();
    cmd.add("openssl");
    cmd.addAll(List.of(args));
    Process p = new ProcessBuilder(cmd).directory(dir.toFile()).redirectErrorStream(true).start();
    String out = new String(p.getInputStream().readAllBytes(), StandardCharsets.UTF_8);
    if (!p.waitFor(30, TimeUnit.SECONDS)) {
      p.destroyForcibly();
      throw new IOException("openssl " + args[0] + " did not finish");
    }
    if (p.exitValue() != 0) {
      throw new IOException("openssl " + String.join(" ", args) + " failed: " + out);
    }
  }
}
